"""Real handwriting for tests: scikit-learn's 1,797 8x8 digits, upscaled to 28x28.

Written in the Kaggle CSV layout (train.csv with labels, test.csv without,
sample_submission.csv) or as a Keras-style mnist.npz stand-in. ``write_run`` makes
a small published run folder, for the tests that only read one.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import zoom
from sklearn.datasets import load_digits

from src.util import partial_path

TEST_SIZE = 300


def disk_full(*args, **kwargs):
    """Stand in for any write on a full disk: raise ENOSPC, as the OS does."""
    raise OSError(errno.ENOSPC, "No space left on device")


def handwritten_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 28, 28), labels) laid out like MNIST: a 20x20 digit in a 28x28 box."""
    digits = load_digits()
    small = digits.images.astype(np.float64) / 16.0
    big = np.stack([zoom(image, 2.5, order=1) for image in small])  # 8x8 -> 20x20
    big = np.pad(big, ((0, 0), (4, 4), (4, 4)))
    images = np.clip(np.rint(big * 255), 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def write_kaggle_csvs(folder: Path) -> Path:
    """Write train.csv, test.csv and sample_submission.csv into folder; return it."""
    images, labels = handwritten_digits()
    flat = images.reshape(len(images), -1)
    pixel_columns = [f"pixel{i}" for i in range(flat.shape[1])]
    train, test = flat[:-TEST_SIZE], flat[-TEST_SIZE:]
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(train, columns=pixel_columns)
    frame.insert(0, "label", labels[:-TEST_SIZE])
    frame.to_csv(folder / "train.csv", index=False)
    pd.DataFrame(test, columns=pixel_columns).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"ImageId": np.arange(1, TEST_SIZE + 1), "Label": 0}).to_csv(
        folder / "sample_submission.csv", index=False)
    return folder


def keep_only(folder: Path, digit: int, count: int) -> None:
    """Drop all but the first count images of digit from folder/train.csv."""
    header, *rows = (folder / "train.csv").read_text().splitlines()
    of_digit = [row for row in rows if row.startswith(f"{digit},")]
    kept = [row for row in rows if not row.startswith(f"{digit},")] + of_digit[:count]
    (folder / "train.csv").write_text("\n".join([header, *kept]) + "\n")


def write_mnist_npz(path: Path) -> Path:
    """A stand-in for Keras' mnist.npz: the same keys, dtypes and shapes, fewer images."""
    images, labels = handwritten_digits()
    np.savez_compressed(path, x_train=images[:-TEST_SIZE],
                        y_train=labels[:-TEST_SIZE].astype(np.uint8),
                        x_test=images[-TEST_SIZE:], y_test=labels[-TEST_SIZE:].astype(np.uint8))
    return path


def write_run(submissions_dir: Path, run_id: str, correct: int, total: int = 42_000,
              profile: str = "quick", members=("default",), minutes: float = 17.0,
              folds: int = 3) -> Path:
    """A published run folder as python -m src.submit leaves it, small: metrics.json with the
    fields the ledger and the Kaggle loop read, a short report.md/report.html and a valid
    submission.csv for the TEST_SIZE fixture test set."""
    from src import document, metrics

    low, high = metrics.accuracy_interval(correct, total)
    score = {"accuracy": correct / total, "ci95_low": low, "ci95_high": high,
             "errors": total - correct, "total": total}
    metrics = {"num_images": total, "models": {name: dict(score) for name in members},
               "ensemble": score, "ensemble_weights": {name: 1 / len(members) for name in members},
               "holdout": None, "timings": {"total": minutes * 60},
               "run_info": {"command": "python -m src.submit", "profile": profile,
                            "folds": folds, "source": "kaggle"}}
    run_dir = submissions_dir / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    blocks = [document.Heading(1, "Digit Recognizer: evaluation report"),
              document.Paragraph(f"Ensemble out-of-fold accuracy: {correct / total:.2%}",
                               strong=True),
              document.Heading(2, "Models")]
    (run_dir / "report.md").write_text(document.render_markdown(blocks))
    (run_dir / "report.html").write_text(document.render_html(blocks, "report"))
    pd.DataFrame({"ImageId": np.arange(1, TEST_SIZE + 1), "Label": 0}).to_csv(
        run_dir / "submission.csv", index=False)
    return run_dir


def ended_pid() -> int:
    """The pid of a process that has ended (and been waited for)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def sleeping_stage(pid_file: Path) -> str:
    """Python code for a stand-in stage: through run_cli, as every stage's entry point, it
    writes its pid to pid_file and sleeps two minutes."""
    return ("import os, time; from src.config import run_cli; "
            f"run_cli(lambda argv: open({str(pid_file)!r}, 'w').write(str(os.getpid())) "
            "and time.sleep(120))")


def stage_outlives_its_parent(parent_code: str, pid_file: Path, cwd: Path) -> bool:
    """Run parent_code, which starts sleeping_stage(pid_file); SIGKILL it once the stage
    has started; whether the stage is still running 15 s later (it is then killed)."""
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=cwd)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    stage_pid = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 15  # it polls its parent once a second
    while not _has_ended(stage_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _has_ended(stage_pid):
        return False
    os.kill(stage_pid, 9)
    return True


def _has_ended(pid: int) -> bool:
    """Whether pid has exited: gone, or a zombie no one has reaped yet (reads /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@dataclass
class StandInFoldJob:
    """What the worker pool needs of an ensemble.FoldJob: its file, fold and names."""

    path: Path
    fold: int

    @property
    def number(self) -> int:
        return self.fold + 1

    def label(self) -> str:
        return f"fold {self.number}"

    def status(self, what: str) -> str:
        return f"{self.label()}: {what}"


def pool_workers(parent: int) -> list[int]:
    """The pids of the worker processes parent's pool spawned (Linux: read from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
        if ppid == parent and b"spawn_main" in command:
            pids.append(int(stat.parent.name))
    return pids


def idle_worker_killed_fold(job, x, y, split, config, verbose, callbacks) -> float:
    """A train_fold for two folds in two workers: fold 1 ends at once; fold 2 waits until
    fold 1's worker waits for its next job, SIGKILLs it (as the OOM killer would), and
    ends."""
    if job.fold == 1:
        while not job.path.with_name("fold-0.keras").is_file():
            time.sleep(0.05)
        time.sleep(1.0)  # the other worker now waits for a job, holding the queue's lock
        for pid in pool_workers(os.getppid()):
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
    job.path.write_text("model")
    return 1.0


def ctrl_c_reporting_fold(job, x, y, split, config, verbose, callbacks) -> float:
    """A train_fold that saves, as its model, whether its worker holds Ctrl-C blocked."""
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    job.path.write_text("blocked" if blocked else "delivered")
    return 0.0


def killed_fold(job, x, y, split, config, verbose, callbacks) -> float:
    """A train_fold whose worker process is SIGKILLed (as by the OOM killer) in fold 2, after
    it began to save; the other folds train in a moment."""
    if job.fold == 1:
        partial_path(job.path).write_text("half")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    job.path.write_text("model")
    return 0.5
