"""python -m src.submit: the k-fold ensemble end to end, the writer, the validator, resume."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import filelock
import keras
import numpy as np
import pandas as pd
import pytest

from src import (
    calibrate,
    curve,
    ensemble,
    predict,
    processes,
    run_folders,
    run_outputs,
    search_results,
    submit,
    util,
    workers,
)
from src.config import Config, run_cli
from src.data import data_fingerprint, fold_splits, load_digits, run_data_fingerprints
from src.errors import DataError
from src.members import Member, check_pseudo_threshold, load_members, most_sure
from src.metrics import plain_mean
from src.model import DEFAULT_HPARAMS
from src.pseudo_labels import select_pseudo_labels
from tests.conftest import REPO_ROOT
from tests.fixtures import (
    StandInFoldJob,
    ctrl_c_reporting_fold,
    ended_pid,
    idle_worker_killed_fold,
    keep_only,
    killed_fold,
    pool_workers,
)


def _args(data_dir, tmp_path, *extra):
    return ["--data-dir", str(data_dir), "--profile", "smoke", "--artifacts-dir",
            str(tmp_path / "artifacts"), "--submissions-dir", str(tmp_path / "submissions"),
            *extra]


def _run_dirs(tmp_path):
    return sorted(p for p in (tmp_path / "submissions").iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


@pytest.mark.slow
def test_smoke_run_writes_a_valid_submission_and_report(kaggle_dir_readonly, tmp_path, capsys,
                                                        kaggle):
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "ensemble OOF accuracy" in out and "fold 2 of 2" in out
    [run_dir] = _run_dirs(tmp_path)
    frame = pd.read_csv(run_dir / "submission.csv")
    assert list(frame.columns) == ["ImageId", "Label"] and len(frame) == 300
    assert frame["ImageId"].tolist() == list(range(1, 301))
    assert frame["Label"].between(0, 9).all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["ensemble"]["accuracy"] <= 1.0
    timings = metrics["timings"]  # each step of the run, the networks' choice included
    assert list(timings) == ["load", "prepare", "train", "predict", "total"]
    assert 0 < sum(timings.values()) - timings["total"] <= timings["total"]
    # what blend and compare check runs against
    assert metrics["run_info"]["data"] == run_data_fingerprints(
        load_digits(Config(data_dir=str(kaggle_dir_readonly))))
    assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()
    assert "| pseudo_epochs | — |" in (run_dir / "report.md").read_text()  # not "None"
    assert (tmp_path / "submissions" / "latest").resolve() == run_dir.resolve()
    # A second run reuses every fold model, writes a new folder beside the first and
    # uploads it (to a stand-in Kaggle), recording the public score in its metrics.
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--upload")) == 0
    out = capsys.readouterr().out
    assert "trained 0, reused 2" in out and "Kaggle public score: 0.99567" in out
    first, second = _run_dirs(tmp_path)
    record = json.loads((second / "metrics.json").read_text())["kaggle"]
    oof = metrics["ensemble"]["accuracy"]
    assert record["message"] == f"smoke: 1 config x 2 folds, OOF {oof:.3%}, run {second.name}"
    assert record["public_score"] == 0.99567
    assert "kaggle" not in json.loads((first / "metrics.json").read_text())
    assert first == run_dir and (tmp_path / "submissions" / "latest").resolve() == second
    pd.testing.assert_frame_equal(pd.read_csv(second / "submission.csv"), frame)


def test_upload_without_credentials_stops_before_anything_trains(kaggle_dir_readonly, tmp_path,
                                                                 capsys, kaggle_home):
    """The upload signed in only after the whole run had trained: a missing token cost the
    run's minutes before its one line."""
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--upload")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: kaggle upload: expected ") and "found none" in err
    assert "nothing was trained" in err and err.count("\n") == 1
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "submissions").exists()


@pytest.mark.slow
def test_parallel_workers_train_every_fold_and_a_serial_rerun_reuses_them(
        kaggle_dir_readonly, tmp_path, capfd):
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--jobs", "2")) == 0
    out = capfd.readouterr().out
    assert "2 at a time in worker processes" in out
    for fold in (1, 2):  # each worker labels its lines; the parent reports each end
        assert f"[default] fold {fold} of 2 epoch 2/2: accuracy" in out
        assert f"[default] fold {fold} of 2 trained in" in out
    assert "trained 2, reused 0" in out
    [run_dir] = _run_dirs(tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["run_info"]["jobs"] == 2
    # How many trained at once does not change the models: one at a time reuses them.
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--jobs", "1")) == 0
    assert "trained 0, reused 2" in capfd.readouterr().out
    # A fold model's history damaged (a copied folder, say): one line naming it, no run.
    [history] = (tmp_path / "artifacts" / "models").glob("*/fold-1.history.json")
    history.write_text('{"accuracy": [0.9')
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--jobs", "1")) == 2
    error = capfd.readouterr().err.splitlines()[-1]
    assert error.startswith(f"error: {history}: expected the training history ")
    assert "JSONDecodeError" in error and "fold-1.keras, or rerun with --fresh" in error
    assert len(_run_dirs(tmp_path)) == 2


def test_auto_jobs_is_two_on_a_cpu_with_two_cores_and_one_on_a_single_core(monkeypatch):
    assert calibrate.resolve_jobs(3) == 3
    monkeypatch.setattr(calibrate, "available_cores", lambda: 2)
    assert calibrate.resolve_jobs(0) == 2  # the test machine has no GPU
    monkeypatch.setattr(calibrate, "available_cores", lambda: 1)
    assert calibrate.resolve_jobs(0) == 1


def test_a_worker_whose_parent_died_exits(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    parents = iter([41, 41, 1])  # its parent, then init: re-parented, an orphan
    monkeypatch.setattr(os, "getppid", lambda: next(parents))
    processes.exit_when_orphaned(41, poll_seconds=0)
    assert exits == [1] and next(parents, None) is None


def test_a_worker_killed_mid_fold_is_one_line_exit_1_and_leaves_no_partial(tmp_path, capsys):
    # The OOM killer's SIGKILL broke the pool: a BrokenProcessPool traceback.
    from src.config import Config

    jobs = [StandInFoldJob(tmp_path / "models" / f"fold-{fold}.keras", fold)
            for fold in range(3)]
    splits = [(np.arange(4), np.arange(4))] * 3

    def train_with(config):
        return lambda argv: workers.train_fold_models(
            jobs, np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int64), splits, config,
            killed_fold)

    for config, advice in (
            (Config(jobs=2), ", with --jobs 1 to train one at a time"),
            # a budget's plan is keyed on --jobs: another plans afresh
            (Config(jobs=2, minutes=30), " (--jobs 1 trains one at a time, in less memory, "
                                         "but plans afresh, which may train the saved fold "
                                         "models again)")):
        assert run_cli(train_with(config), []) == 1
        err = capsys.readouterr().err
        # The broken pool fails every job running beside it too (fold 1, or fold 3 after it).
        training = re.fullmatch(r"error: a worker process was killed \(out of memory\?\) "
                                r"while (.*) trained; the fold models saved stay: run the same "
                                rf"command again to resume{re.escape(advice)}\n", err)
        assert training and "fold 2" in training.group(1).split(" and "), err
        assert not list((tmp_path / "models").glob(".partial-*"))  # what it was saving, gone


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
@pytest.mark.timeout(120)
def test_a_worker_killed_while_idle_does_not_hang_the_run(tmp_path, capsys, monkeypatch):
    """It can die holding the lock of the pool's job queue: the other worker then takes
    nothing, not even the pool's word to stop, and a shutdown that waits for the workers
    (the pool's, unless it heard of the death first) waited for ever, without a word."""
    from concurrent.futures import ProcessPoolExecutor

    from src.config import Config

    waited = []

    class NeverWaitingPool(ProcessPoolExecutor):
        def shutdown(self, wait=True, *, cancel_futures=False):
            waited.append(wait)  # whether it would have waited for the workers
            super().shutdown(wait=False, cancel_futures=True)

    monkeypatch.setattr(workers, "ProcessPoolExecutor", NeverWaitingPool)
    jobs = [StandInFoldJob(tmp_path / "models" / f"fold-{fold}.keras", fold)
            for fold in range(2)]
    splits = [(np.arange(4), np.arange(4))] * 2

    def main(argv):
        workers.train_fold_models(jobs, np.zeros((4, 28, 28, 1), np.uint8),
                                  np.zeros(4, np.int64), splits, Config(jobs=2),
                                  idle_worker_killed_fold)

    try:
        code = run_cli(main, [])
    finally:
        left = pool_workers(os.getpid())
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    err = capsys.readouterr().err
    # Where the pool hears of the death first, it fails the fold still training.
    assert code == 0 or (code == 1 and err.startswith("error: a worker process was killed")), err
    assert True not in waited and left == []


def test_a_worker_started_after_its_parent_died_exits_at_once(monkeypatch):
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(os, "getppid", lambda: 1)  # adopted while it imported TensorFlow
    workers._start_worker(np.zeros((1, 28, 28, 1), np.uint8), np.zeros(1, np.int64), 41)
    for _ in range(200):  # its watcher thread sees at once that 41 is not its parent
        if exits:
            break
        time.sleep(0.01)
    assert exits == [1]


def test_an_orphan_whose_output_pipe_is_closed_still_exits(monkeypatch):
    # Its "stopped" line raised BrokenPipeError, which ended the watcher thread before its
    # os._exit: a worker went on training for good beside the rerun.
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(sys, "stderr", ClosedPipe())
    with pytest.raises(BrokenPipeError):  # in the thread, where nothing sees it
        processes.exit_when_orphaned(os.getppid() + 1, poll_seconds=0)
    assert exits == [1]


def test_stale_partial_files_go_and_live_ones_stay(tmp_path):
    dead_pid, host = ended_pid(), socket.gethostname()
    stale = [tmp_path / f".partial-{dead_pid}@{host}@fold-1.keras",
             tmp_path / f".partial-{dead_pid}@{host}@20261124-101500-quick-kaggle",
             # no process has these pids: os.kill raised OverflowError on the first, and
             # signalled this process group for 0
             tmp_path / f".partial-{10**20}@{host}@fold-5.keras",
             tmp_path / f".partial-0@{host}@fold-6.keras"]
    kept = [tmp_path / f".partial-{os.getpid()}@{host}@fold-2.keras",  # a live process's
            tmp_path / f".partial-{dead_pid}@another-machine@fold-3.keras",
            tmp_path / f".partial-{dead_pid}@{host}-2@fold-4.keras",  # a host named longer
            tmp_path / "fold-0.keras"]
    for path in stale + kept:
        path.write_text("x")
    stale[1].unlink()
    stale[1].mkdir()
    (stale[1] / "report.md").write_text("half")
    util.remove_stale_partials(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


@pytest.mark.slow
def test_keras_source_scores_the_labelled_holdout(mnist_npz, tmp_path, capsys):
    argv = ["--source", "keras", "--keras-npz", str(mnist_npz), "--profile", "smoke",
            "--artifacts-dir", str(tmp_path / "a"), "--submissions-dir", str(tmp_path / "s")]
    assert run_cli(submit.main, argv) == 0
    assert "holdout (MNIST test) accuracy" in capsys.readouterr().out
    [run_dir] = [p for p in (tmp_path / "s").iterdir() if p.is_dir() and not p.is_symlink()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["holdout"] is not None and not (run_dir / "submission.csv").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_run_resumes_with_its_finished_folds(kaggle_dir_readonly, tmp_path):
    command = [sys.executable, "-m", "src.submit",
               *_args(kaggle_dir_readonly, tmp_path, "--epochs", "3")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        models = tmp_path / "artifacts" / "models"
        deadline = time.monotonic() + 240
        while not list(models.glob("*/fold-0.keras")) and time.monotonic() < deadline:
            assert process.poll() is None, "submit ended before its first fold was saved"
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert list(models.glob("*/fold-0.keras")), "no fold model was saved before the kill"
    assert not (tmp_path / "submissions").exists() or not _run_dirs(tmp_path)
    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "trained 1, reused 1" in rerun.stdout
    assert len(_run_dirs(tmp_path)) == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_as_workers_start_is_one_line(kaggle_dir_readonly, tmp_path):
    """Ctrl-C at a terminal reaches every process of its group: workers still importing
    TensorFlow printed their own tracebacks (about 45 lines) before the parent's line."""
    command = [sys.executable, "-m", "src.submit",
               *_args(kaggle_dir_readonly, tmp_path, "--jobs", "2")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in process.stdout:  # the workers are starting
            if "at a time in worker processes" in line:
                time.sleep(1.5)  # into their imports
                os.killpg(process.pid, signal.SIGINT)
                break
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1] == ("interrupted: run the same command again to "
                                             "resume")


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_workers_never_get_ctrl_c_and_leave_it_to_their_parent(tmp_path):
    from src.config import Config

    jobs = [StandInFoldJob(tmp_path / "models" / f"fold-{fold}.keras", fold)
            for fold in range(2)]
    before = signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])
    workers.train_fold_models(jobs, np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int64),
                              [(np.arange(4), np.arange(4))] * 2, Config(jobs=2),
                              ctrl_c_reporting_fold)
    assert [job.path.read_text() for job in jobs] == ["blocked", "blocked"]
    # the parent's own handler and mask, as they were
    assert (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])) == before


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be read


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_killed_parallel_run_leaves_no_worker_and_resumes(kaggle_dir_readonly, tmp_path):
    command = [sys.executable, "-m", "src.submit", *_args(
        kaggle_dir_readonly, tmp_path, "--folds", "3", "--epochs", "1", "--train-samples", "300")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    models = tmp_path / "artifacts" / "models"
    process = subprocess.Popen([*command, "--jobs", "2"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(models.glob("*/fold-*.keras")) and time.monotonic() < deadline:
            assert process.poll() is None, "submit ended before a fold model was saved"
            time.sleep(0.1)
        children = _children(process.pid)  # two workers (and multiprocessing's tracker)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert len(children) >= 2
    deadline = time.monotonic() + 30  # each worker looks for its parent once a second
    while any(map(_running, children)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if _running(pid)], "a worker outlived the killed run"
    finished = list(models.glob("*/fold-*.keras"))
    assert 1 <= len(finished) < 3
    # A kill rarely lands inside a save, so plant what it leaves then, beside a live run's file.
    folder, host = finished[0].parent, socket.gethostname()
    stale = folder / f".partial-{ended_pid()}@{host}@fold-2.keras"
    live = folder / f".partial-{os.getpid()}@{host}@fold-9.keras"
    for path in (stale, live):
        path.write_bytes(b"half a model")
    rerun = subprocess.run([*command, "--jobs", "1"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"trained {3 - len(finished)}, reused {len(finished)}" in rerun.stdout
    assert not stale.exists() and live.exists()
    [run_dir] = _run_dirs(tmp_path)
    # A --train-samples run's OOF rows name each image's row in train.csv.
    oof = pd.read_csv(run_dir / "oof.csv.gz")
    labels = pd.read_csv(kaggle_dir_readonly / "train.csv", usecols=["label"])["label"]
    assert len(oof) == 300 and oof["row"].nunique() == 300
    assert (labels.to_numpy()[oof["row"]] == oof["label"].to_numpy()).all()
    assert oof["row"].tolist() != list(range(300))


@pytest.mark.slow
def test_a_fold_model_deleted_under_a_running_submit_is_named_as_gone_not_damaged(tmp_path):
    # Another run's --fresh deletes the fold models of its key at its start: this run,
    # which found or trained them, meets their absence only as it predicts.
    gone = tmp_path / "models" / "rank1-0123456789" / "fold-0.keras"
    with pytest.raises(DataError) as caught:
        ensemble._load_fold_model(gone)
    assert str(caught.value) == (
        f"{gone}: expected the fold model this run trained or found, found none (another run "
        "sharing --artifacts-dir deleted it, one with --fresh say: run the command again to "
        "train it)")


def test_corrupt_fold_model_is_one_line_error_naming_the_file(kaggle_dir_readonly, tmp_path,
                                                              capsys, monkeypatch):
    config = submit._parse_args(_args(kaggle_dir_readonly, tmp_path))[1]
    digits = submit.load_fold_digits(config)
    with pytest.warns(UserWarning):
        [member] = load_members(config)
    key = ensemble.member_key(member, config,
                              data_fingerprint(digits.x_train, digits.y_train))
    broken = tmp_path / "artifacts" / "models" / key / "fold-0.keras"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a keras file")
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 2
    *warnings, error = capsys.readouterr().err.splitlines()
    assert all(line.startswith("warning: ") for line in warnings)
    assert error.startswith(f"error: {broken}: expected a Keras model saved by ")
    assert "--fresh" in error and not (tmp_path / "submissions").exists()
    # As the error says: --fresh retrains every fold model, the broken one replaced.
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--fresh")) == 0
    assert "trained 2, reused 0" in capsys.readouterr().out
    assert broken.read_bytes()[:2] == b"PK" and len(_run_dirs(tmp_path)) == 1
    # A diverged fold model predicts NaN, which argmax would read as the digit 0.
    diverged = broken.with_name("fold-1.keras")
    model = keras.models.load_model(diverged)
    output = model.get_layer("digit")
    output.set_weights([np.full_like(weight, np.nan) for weight in output.get_weights()])
    model.save(diverged)
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(f"error: {diverged}: expected finite class probabilities from a "
                            "fold model, found NaN or infinite ones for ")
    assert "--fresh" in error and len(_run_dirs(tmp_path)) == 1
    # --fresh, as the error says, interrupted before it trains: the old models are gone, so
    # the rerun without --fresh that Ctrl-C asks for reuses none of them.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # an earlier budgeted run's fold model cut to 5 epochs, which a resume finds should
    # this run's round be cut to 5 too; fold 10's is another fold's
    shortened, other_fold = (broken.with_name(name) for name in (
        "fold-1-5-epochs.keras", "fold-10-5-epochs.keras"))
    for path in (shortened, shortened.with_suffix(".history.json"), other_fold):
        path.write_bytes(b"")
    monkeypatch.setattr(ensemble.workers, "train_fold_models", interrupted)
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--fresh")) == 130
    assert "run the command again without --fresh" in capsys.readouterr().err
    assert not broken.exists() and not diverged.exists()
    assert not diverged.with_suffix(".history.json").exists()
    assert not shortened.exists() and not shortened.with_suffix(".history.json").exists()
    assert other_fold.exists()  # not a fold this run trains (two folds: 0 and 1)


def test_a_folder_where_a_fold_model_goes_stops_the_run_before_training(
        kaggle_dir_readonly, tmp_path, capsys):
    """It was found only when the trained model could not be saved there."""
    config = submit._parse_args(_args(kaggle_dir_readonly, tmp_path))[1]
    digits = submit.load_fold_digits(config)
    with pytest.warns(UserWarning):
        [member] = load_members(config)
    key = ensemble.member_key(member, config, data_fingerprint(digits.x_train, digits.y_train))
    folder = tmp_path / "artifacts" / "models" / key / "fold-0.keras"
    folder.mkdir(parents=True)
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: {folder}: expected a fold model's file, or nothing yet, found a folder "
        "(remove it)")
    assert sorted(path.name for path in folder.parent.iterdir()) == ["fold-0.keras"]


def _foreign_model(kind: str) -> keras.Model:
    """Models of other programs that a fold model's file could hold."""
    if kind == "unbuilt":
        return keras.Sequential([keras.layers.Dense(10)])
    inputs = keras.Input((28, 28, 1))
    if kind == "4 x 10 outputs":
        outputs = keras.layers.Dense(10)(keras.layers.Reshape((4, 196))(inputs))
    else:  # logits: the right shapes, no softmax
        outputs = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("kind, found", [
    ("4 x 10 outputs", "found (28, 28, 1) to (4, 10)"),  # broadcasting failed in the OOF sum
    ("unbuilt", "found a model without input and output shapes"),
])
def test_a_fold_model_of_other_shapes_is_refused(tmp_path, kind, found):
    path = tmp_path / "fold-0.keras"
    _foreign_model(kind).save(path)
    with pytest.raises(DataError) as caught:
        ensemble._load_fold_model(path)
    assert str(caught.value) == (f"{path}: expected a model from (28, 28, 1) images to 10 "
                                 f"classes, (28, 28, 1) to (10,), {found} (delete it or rerun "
                                 "with --fresh to retrain)")


def test_a_fold_model_copied_over_another_folds_file_is_refused(tmp_path):
    """Nothing told them apart: fold 0's model, copied over fold 1's, scored the images it
    had trained on as fold 1's held-out part."""
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    fold_0, fold_1 = (tmp_path / "default-0123456789" / f"fold-{k}.keras" for k in (0, 1))
    fold_0.parent.mkdir()
    model.name = ensemble.fold_model_name(fold_0)
    model.save(fold_0)
    assert ensemble._load_fold_model(fold_0).name == "default-0123456789-fold-0"
    # TensorFlow scopes variables by the name: a pseudo-labelled member's + is not allowed.
    pseudo = tmp_path / "default+pl-0123456789" / "fold-0.keras"
    assert ensemble.fold_model_name(pseudo) == "default_pl-0123456789-fold-0"
    shutil.copy(fold_0, fold_1)
    with pytest.raises(DataError) as caught:
        ensemble._load_fold_model(fold_1)
    assert str(caught.value) == (
        f"{fold_1}: expected the model trained for this file, 'default-0123456789-fold-1', "
        "found 'default-0123456789-fold-0' (delete it or rerun with --fresh to retrain)")


def test_a_fold_model_that_predicts_no_probabilities_is_refused(tmp_path):
    """A model without softmax was used silently: OOF 'probabilities' down to -1.6."""
    model = _foreign_model("logits")
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    probs = predict.predict_probs(model, images, tta=False)
    with pytest.raises(DataError, match=r"fold-0.keras: expected class probabilities 0..1 that "
                                        r"sum to 1 from a fold model, found .* for \d+ images"):
        predict.checked_probs(probs, tmp_path / "fold-0.keras")
    softmax = np.full((3, 10), 0.1)
    assert predict.checked_probs(softmax, tmp_path / "fold-0.keras") is softmax


@pytest.mark.parametrize("case", ["pixel_256", "missing_dir", "label_column_in_test"])
def test_bad_data_is_one_line_exit_2_and_writes_nothing(kaggle_dir, tmp_path, capsys, case):
    data_dir = kaggle_dir
    if case == "pixel_256":
        lines = (kaggle_dir / "train.csv").read_text().splitlines()
        cells = lines[3].split(",")
        cells[10] = "256"
        lines[3] = ",".join(cells)
        (kaggle_dir / "train.csv").write_text("\n".join(lines) + "\n")
    elif case == "missing_dir":
        data_dir = tmp_path / "nowhere"
    else:
        (kaggle_dir / "test.csv").write_text((kaggle_dir / "train.csv").read_text())
    assert run_cli(submit.main, _args(data_dir, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "submissions").exists() and not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("sevens, extra, message", [
    (4, ["--folds", "5"], "train.csv: expected at least 5 images of every digit for 5 stratified "
     "folds (--folds), found 4 of digit 7"),
    (0, [], "train.csv: expected at least 2 images of every digit for 2 stratified folds "
     "(--folds of the smoke profile), found no image of digit 7"),
    (8, ["--train-samples", "200"], "train.csv: expected at least 2 images of every digit for "
     "2 stratified folds (--folds of the smoke profile), found 1 of digit 7 in a subsample of "
     "200 (--train-samples)"),
    # The smoke profile's 2 folds passed, then its budget's plan trained 3: a traceback
    # after the networks were timed.
    (2, ["--minutes", "30"], "train.csv: expected at least 3 images of every digit for 3 "
     "stratified folds (the plan of 30 minutes), found 2 of digit 7"),
    (2, ["--minutes", "30", "--folds", "3"], "train.csv: expected at least 3 images of every "
     "digit for 3 stratified folds (--folds), found 2 of digit 7"),
])
def test_too_few_images_of_a_digit_for_the_folds_is_one_line_before_training(
        kaggle_dir, tmp_path, capsys, sevens, extra, message):
    keep_only(kaggle_dir, 7, sevens)
    assert run_cli(submit.main, _args(kaggle_dir, tmp_path, *extra)) == 2
    assert capsys.readouterr().err == f"error: {kaggle_dir}/{message}\n"
    assert not (tmp_path / "submissions").exists() and not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("budget", [[], ["--minutes", "30"], ["--minutes", "30", "--plan-only"]])
def test_damaged_search_leaderboard_stops_the_run_before_training(kaggle_dir_readonly,
                                                                  tmp_path, capsys, budget):
    trials = tmp_path / "artifacts" / "tune" / "trials.csv"
    trials.parent.mkdir(parents=True)
    trials.write_bytes(b"rank,trial_id\n1,\xff\n")
    assert run_cli(submit.main, [*_args(kaggle_dir_readonly, tmp_path), *budget]) == 2
    assert capsys.readouterr().err == (f"error: {trials}:2: column 2: expected UTF-8 text, "
                                       "found byte 0xff\n")
    assert not (tmp_path / "submissions").exists()
    # before a plan times the networks and saves itself, and before any training
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == ["tune"]


@pytest.mark.parametrize("cut_at, message", [
    ("2,1,COMP", "trials.csv:3: expected 5 values, as the header names, found 3 (a file cut "
     "short? rerun python -m src.tune to write it again)"),
    ("rank,tri", "trials.csv: expected a trials.csv written by python -m src.tune, found no "
     "column 'trial_id'")])
def test_a_search_leaderboard_cut_short_stops_the_run_before_training(kaggle_dir_readonly,
                                                                     tmp_path, capsys, cut_at,
                                                                     message):
    text = ("rank,trial_id,status,val_log_loss,conv_blocks\n1,0,COMPLETED,0.09,3\n"
            "2,1,COMPLETED,0.1,2\n")
    trials = tmp_path / "artifacts" / "tune" / "trials.csv"
    trials.parent.mkdir(parents=True)
    trials.write_text(text[:text.index(cut_at) + len(cut_at)])  # pandas read it as whole
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 2
    assert capsys.readouterr().err == f"error: {trials.parent}/{message}\n"
    assert not (tmp_path / "submissions").exists()


def test_a_submit_while_a_search_runs_in_its_folder_stops_before_reading_it(
        kaggle_dir_readonly, tmp_path, capsys):
    lock_path = tmp_path / "artifacts" / "tune" / ".search.lock"
    lock_path.parent.mkdir(parents=True)
    search = filelock.FileLock(lock_path)  # as python -m src.tune holds it while it runs
    search.acquire(timeout=0)
    try:
        assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 2
    finally:
        search.release()
    assert capsys.readouterr().err == (
        f"error: {lock_path.parent}: expected no search running in this folder, found one "
        "running (it holds .search.lock) (let it end and run this again, or give this run "
        "another --artifacts-dir)\n")
    assert not (tmp_path / "submissions").exists()
    assert sorted(path.name for path in (tmp_path / "artifacts").iterdir()) == ["tune"]


def test_out_of_range_flag_is_one_line_exit_2(kaggle_dir_readonly, tmp_path, capsys):
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--folds", "1")) == 2
    assert capsys.readouterr().err == "error: --folds: expected an integer 2..2147483647, found 1\n"


def _good_submission(rows=300):
    return pd.DataFrame({"ImageId": np.arange(1, rows + 1), "Label": np.arange(rows) % 10})


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.rename(columns={"Label": "label"}),
     "submission.csv:1: expected columns ImageId,Label, found ImageId,label"),
    (lambda f: f.iloc[:-1], "submission.csv: expected 300 rows, one per test image, found 299"),
    (lambda f: f.assign(ImageId=f["ImageId"].where(f.index != 4, 7)),
     "submission.csv:6: ImageId: expected ImageId 5, found '7'"),
    (lambda f: f.assign(Label=f["Label"].where(f.index != 9, 10)),
     "submission.csv:11: Label: expected a digit 0..9, found '10'"),
    # numbers equal to a right answer, but not written as Kaggle's files write them
    (lambda f: f.astype(str).assign(Label=f["Label"].astype(str).where(f.index != 2, "2.0")),
     "submission.csv:4: Label: expected a digit 0..9, found '2.0'"),
    (lambda f: f.astype(str).assign(Label=f["Label"].astype(str).where(f.index != 3, " 3")),
     "submission.csv:5: Label: expected a digit 0..9, found ' 3'"),
    (lambda f: f.astype(str).assign(ImageId=f["ImageId"].astype(str).where(f.index != 3, "4.0")),
     "submission.csv:5: ImageId: expected ImageId 4, found '4.0'"),
    # a row missing or one too many in the middle: the line where the ImageIds go wrong
    (lambda f: f.drop(index=6).reset_index(drop=True),
     "submission.csv:8: ImageId: expected ImageId 7, found '8'"),
    (lambda f: pd.concat([f, f.iloc[:1]], ignore_index=True),
     "submission.csv:302: expected 300 rows, one per test image, found 301"),
])
def test_validator_names_line_and_column(damage, message):
    run_outputs.validate_submission(_good_submission(), 300)
    with pytest.raises(DataError) as caught:
        run_outputs.validate_submission(damage(_good_submission()), 300)
    assert str(caught.value) == message


def test_check_flag_validates_any_csv(kaggle_dir_readonly, tmp_path, capsys):
    good = tmp_path / "good.csv"
    _good_submission().to_csv(good, index=False)
    argv = ["--check", str(good), "--data-dir", str(kaggle_dir_readonly)]
    assert run_cli(submit.main, argv) == 0
    assert "valid submission, 300 rows" in capsys.readouterr().out
    _good_submission(299).to_csv(good, index=False)
    assert run_cli(submit.main, argv) == 2
    assert "expected 300 rows" in capsys.readouterr().err
    # a value too many on every row: pandas would read the ImageIds as an index
    lines = good.read_text().splitlines()
    good.write_text("\n".join([lines[0]] + [line + ",0" for line in lines[1:]]) + "\n")
    assert run_cli(submit.main, argv) == 2
    assert capsys.readouterr().err == f"error: {good}:2: expected 2 values, found 3\n"
    # the header as the file writes it: pandas would rename a duplicate or blank name
    for header in ("ImageId,ImageId", ",Label"):
        good.write_text(f"{header}\n" + "".join(f"{i},{i % 10}\n" for i in range(1, 301)))
        assert run_cli(submit.main, argv) == 2
        assert capsys.readouterr().err == (
            f"error: {good}:1: expected columns ImageId,Label, found {header}\n")
    # test.csv alone is enough: a submission is checked against its rows only
    only_test = tmp_path / "only-test"
    only_test.mkdir()
    shutil.copy(kaggle_dir_readonly / "test.csv", only_test / "test.csv")
    _good_submission().to_csv(good, index=False)
    assert run_cli(submit.main, ["--check", str(good), "--data-dir", str(only_test)]) == 0
    assert "valid submission, 300 rows" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(submit.main, ["--check", str(good), "--data-dir", str(empty)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {empty}: expected test.csv (or test.csv.gz), found none")


def test_publish_never_overwrites_and_moves_latest(tmp_path):
    for text in ("first", "second"):
        partial = tmp_path / ".partial-run"
        partial.mkdir()
        (partial / "submission.csv").write_text(text)
        run_folders.publish_run(partial, tmp_path, "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run", "run-2"]
    assert (tmp_path / "latest").resolve() == (tmp_path / "run-2").resolve()
    assert (tmp_path / "run" / "submission.csv").read_text() == "first"  # not overwritten
    assert (tmp_path / "latest" / "submission.csv").read_text() == "second"


def test_publish_with_every_name_taken_is_one_line_and_keeps_the_partial(tmp_path):
    for name in util.numbered_names("run"):
        (tmp_path / name).mkdir()  # empty: os.rename would silently replace one
    partial = tmp_path / ".partial-run"
    partial.mkdir()
    with pytest.raises(DataError, match=r"run: expected a free name, found run and run-2 to "
                                        r"-999 taken \(move earlier runs away\)$"):
        run_folders.publish_run(partial, tmp_path, "run")
    assert partial.is_dir() and not any((tmp_path / "run").iterdir())


def _refuse_symlinks(*args, **kwargs):
    error = OSError(errno.EINVAL, "A required privilege is not held by the client")
    error.winerror = 1314  # what Windows raises without the symlink privilege
    raise error


def test_publish_takes_the_next_name_when_another_run_takes_its_own_first(tmp_path,
                                                                          monkeypatch):
    """Two runs of one second: both find the name free, one renames first; the other's
    rename fails (ENOTEMPTY) and its finished run was deleted. It takes the next name."""
    rename = os.rename

    def another_run_first(source, target):
        if Path(target).name == "run" and not (tmp_path / "run").exists():
            (tmp_path / "run").mkdir()
            (tmp_path / "run" / "submission.csv").write_text("the other run's")
        return rename(source, target)

    monkeypatch.setattr(run_folders.os, "rename", another_run_first)
    partial = tmp_path / ".partial-run"
    partial.mkdir()
    (partial / "submission.csv").write_text("this run's")
    assert run_folders.publish_run(partial, tmp_path, "run") == tmp_path / "run-2"
    assert (tmp_path / "run" / "submission.csv").read_text() == "the other run's"
    assert (tmp_path / "latest" / "submission.csv").read_text() == "this run's"


def test_a_link_that_fails_for_want_of_space_leaves_latest_to_the_warning(tmp_path,
                                                                           monkeypatch):
    """Only a system without symlinks falls back to latest.txt: a full disk is no reason
    to drop the link an earlier run made."""
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    publish = tmp_path / ".partial-first"
    publish.mkdir()
    run_folders.publish_run(publish, tmp_path, "first")
    monkeypatch.setattr(run_folders.os, "symlink", full_disk)
    partial = tmp_path / ".partial-run"
    partial.mkdir()
    with pytest.warns(UserWarning, match="could not be pointed at it: .*No space left"):
        assert run_folders.publish_run(partial, tmp_path, "run") == tmp_path / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "latest", "run"]
    assert (tmp_path / "latest").resolve() == (tmp_path / "first").resolve()


def test_a_latest_made_while_the_run_wrote_is_kept_and_the_run_published(tmp_path):
    def write(folder):
        (folder / "metrics.json").write_text("{}")
        (tmp_path / "latest").write_text("my notes: keep me")  # made meanwhile, by hand
        return {}

    with pytest.warns(UserWarning, match="could not be pointed at it: .*expected a link"):
        run_dir, _ = run_folders.write_run(tmp_path, "run", write)
    assert run_dir == tmp_path / "run" and (run_dir / "metrics.json").is_file()
    assert (tmp_path / "latest").read_text() == "my notes: keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run"]


def test_a_killed_runs_partial_link_is_removed(tmp_path):
    (tmp_path / "run").mkdir()
    stale = tmp_path / f".partial-{ended_pid()}@{socket.gethostname()}@latest"
    stale.symlink_to("run", target_is_directory=True)
    util.remove_stale_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # This process's own, left by a publish that failed (or by another of its id): a
    # symlink onto it failed, and latest stayed on the run before.
    partial_path = util.partial_path(tmp_path / "latest")
    partial_path.symlink_to("run", target_is_directory=True)
    publish = tmp_path / ".partial-second"
    publish.mkdir()
    run_folders.publish_run(publish, tmp_path, "second")
    assert (tmp_path / "latest").resolve() == (tmp_path / "second").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run", "second"]


def test_publish_names_latest_in_a_file_without_symlink_rights(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folders.os, "symlink", _refuse_symlinks)
    partial = tmp_path / ".partial-run"
    partial.mkdir()
    assert run_folders.publish_run(partial, tmp_path, "run") == tmp_path / "run"
    assert (tmp_path / "latest.txt").read_text() == "run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.txt", "run"]


def test_a_run_in_place_whose_latest_cannot_be_updated_is_a_warning(tmp_path, monkeypatch):
    # Once the run is renamed into place it is whole: a full disk that stops latest.txt
    # must not report the run as failed (its command would exit 2, skip --upload, and a
    # rerun would train a duplicate).
    monkeypatch.setattr(run_folders.os, "symlink", _refuse_symlinks)

    def full_disk(path, text):
        raise DataError("a writable file", "OSError: No space left on device", file=path)

    monkeypatch.setattr(run_folders, "write_atomically", full_disk)
    partial = tmp_path / ".partial-run"
    partial.mkdir()
    with pytest.warns(UserWarning, match=(rf"^{tmp_path / 'run'} is written, but "
                                          rf"{tmp_path / 'latest'} could not be pointed at it: "
                                          r".*latest.txt: expected a writable file")):
        assert run_folders.publish_run(partial, tmp_path, "run") == tmp_path / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_latest_link_and_latest_txt_never_disagree(tmp_path, monkeypatch):
    def publish(run_id):
        partial = tmp_path / f".partial-{run_id}"
        partial.mkdir()
        run_folders.publish_run(partial, tmp_path, run_id)

    publish("first")  # symlinks allowed: latest -> first
    symlink = run_folders.os.symlink
    monkeypatch.setattr(run_folders.os, "symlink", _refuse_symlinks)
    publish("second")  # no symlink rights: latest.txt names it, the old link goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "latest.txt", "second"]
    monkeypatch.setattr(run_folders.os, "symlink", symlink)
    publish("third")  # rights again: the link, and the old file goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "latest", "second", "third"]
    assert (tmp_path / "latest").resolve() == (tmp_path / "third").resolve()


def test_the_ensemble_is_the_plain_mean_of_its_members():
    probs = {"a": np.array([[0.9, 0.1], [0.2, 0.8]]), "b": np.array([[0.5, 0.5], [0.6, 0.4]])}
    np.testing.assert_allclose(plain_mean(probs), [[0.7, 0.3], [0.4, 0.6]])


def test_shift_images_moves_pixels_and_fills_zeros():
    x = np.zeros((1, 28, 28, 1), np.uint8)
    x[0, 5, 7, 0] = 200
    assert predict.shift_images(x, 1, 0)[0, 5, 8, 0] == 200
    assert predict.shift_images(x, 0, -1)[0, 4, 7, 0] == 200
    edge = np.full((1, 28, 28, 1), 9, np.uint8)
    assert predict.shift_images(edge, -1, 0)[0, :, 27, 0].sum() == 0


def test_default_member_with_a_warning_when_no_search(tmp_path):
    config = submit._parse_args(["--artifacts-dir", str(tmp_path)])[1]
    with pytest.warns(UserWarning, match="python -m src.tune"):
        [member] = load_members(config)
    assert member.name == "default"


def _write_top(tmp_path, hparams_per_rank):
    tune_dir = Path(tmp_path) / "tune"
    tune_dir.mkdir()
    top = [{"rank": rank, "trial_id": str(rank), "val_accuracy": 0.99 - rank / 100,
            "params": 1, "epochs": 2, "hparams": hparams}
           for rank, hparams in enumerate(hparams_per_rank, start=1)]
    (tune_dir / "best_hparams.json").write_text(json.dumps({"top": top}))


def test_members_come_from_the_tuner_top_k(tmp_path):
    _write_top(tmp_path, [{"dropout": 0.1 * rank + 0.1} for rank in (1, 2, 3)])
    config = submit._parse_args(["--artifacts-dir", str(tmp_path), "--top-k", "2",
                                 "--no-include-default"])[1]
    members = load_members(config)
    assert [m.name for m in members] == ["rank1", "rank2"]
    assert members[1].hparams["dropout"] == pytest.approx(0.3)


@pytest.mark.parametrize("hparams, column, expected, found", [
    ({"conv_blocks": 4}, "conv_blocks", "an integer from 2 to 3", "4"),  # no filters_3
    ({"dense_units": "128"}, "dense_units", "one of 64, 128, 256, 512", "'128'"),
    ({"dropout": 0.6}, "dropout", "a number from 0.2 to 0.5", "0.6"),
    ({"filters_0": 32.0}, "filters_0", "one of 16, 32, 48", "32.0"),
    ({"batch_norm": 1}, "batch_norm", "one of True, False", "1"),
    ({"dropuot": 0.3}, "dropuot", "one of conv_blocks, ", "an unknown name 'dropuot'"),
    ({"label_smoothing": float("nan")}, "label_smoothing", "a number from 0 to below 1", "nan"),
    ({"label_smoothing": -0.1}, "label_smoothing", "a number from 0 to below 1", "-0.1"),
    ({"label_smoothing": 1}, "label_smoothing", "a number from 0 to below 1", "1"),
])
def test_a_hand_edited_configuration_outside_the_space_is_one_line(tmp_path, hparams, column,
                                                                   expected, found):
    _write_top(tmp_path, [{"dropout": 0.3}, hparams])
    config = submit._parse_args(["--artifacts-dir", str(tmp_path), "--top-k", "2"])[1]
    with pytest.raises(DataError) as caught:
        load_members(config)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'tune' / 'best_hparams.json'}: rank2: {column}: "
                              f"expected {expected}")
    assert message.endswith(f"found {found} (rerun python -m src.tune, or edit it back)")


def test_two_configurations_of_one_rank_are_refused(tmp_path):
    """Both were named rank1: their fold models were summed, and every OOF row summed to 2."""
    _write_top(tmp_path, [{"dropout": 0.3}, {"dropout": 0.4}])
    path = tmp_path / "tune" / "best_hparams.json"
    saved = json.loads(path.read_text())
    saved["top"][1]["rank"] = 1
    path.write_text(json.dumps(saved))
    config = submit._parse_args(["--artifacts-dir", str(tmp_path), "--top-k", "2"])[1]
    with pytest.raises(DataError) as caught:
        load_members(config)
    assert str(caught.value) == (f"{path}: rank: expected a different rank for each "
                                 "configuration, found rank 1 twice")


@pytest.mark.parametrize("rank", ["/../../escaped", 0, 1.0, None])
def test_a_rank_that_is_no_positive_integer_is_one_line(tmp_path, rank):
    """A member's rank names its fold models' folder: '/../x' would write outside them."""
    _write_top(tmp_path, [{"dropout": 0.3}])
    path = tmp_path / "tune" / "best_hparams.json"
    saved = json.loads(path.read_text())
    saved["top"][0]["rank"] = rank
    path.write_text(json.dumps(saved))
    config = submit._parse_args(["--artifacts-dir", str(tmp_path)])[1]
    with pytest.raises(DataError) as caught:
        load_members(config)
    assert str(caught.value) == (f"{path}: rank: expected a rank, an integer >= 1, "
                                 f"found {rank!r}")


def test_a_fixed_setting_past_a_float_is_outside_the_space():
    """A JSON integer of 400 digits: math.isfinite raised OverflowError on it."""
    huge = 10**400
    assert search_results.hparams_outside_space({"label_smoothing": huge}) == (
        "label_smoothing", "a number from 0 to below 1", repr(huge))


def test_the_default_cnn_and_every_value_the_wide_space_offers_pass_the_check():
    assert search_results.hparams_outside_space(DEFAULT_HPARAMS) is None  # dropout 0.25
    assert search_results.hparams_outside_space({
        "conv_dropout": 0, "filters_2": 192, "dense_units": 512, "dropout": 0.5,
        "augment": 0.15, "learning_rate": 0.004, "batch_norm": True}) is None


def test_include_default_adds_the_default_cnn_unless_the_top_k_holds_it(tmp_path):
    _write_top(tmp_path, [{"dropout": 0.4}, dict(DEFAULT_HPARAMS)])
    quick = submit._parse_args(["--artifacts-dir", str(tmp_path)])[1]
    assert not quick.include_default and quick.top_k == 1  # off in every profile
    assert [m.name for m in load_members(quick)] == ["rank1"]
    with_default = submit._parse_args(["--artifacts-dir", str(tmp_path), "--include-default"])[1]
    members = load_members(with_default)
    assert [m.name for m in members] == ["rank1", "default"]
    assert members[1].hparams == DEFAULT_HPARAMS and "--include-default" in members[1].origin
    # rank 2 is the default already: no second copy of it
    top_two = submit._parse_args(["--artifacts-dir", str(tmp_path), "--top-k", "2",
                                  "--include-default"])[1]
    assert [m.name for m in load_members(top_two)] == ["rank1", "rank2"]
    # Under a plan too (the quick profile's one network): beside the pick, not in its place.
    from src.budget import asked_for, candidate_members

    assert [m.name for m in candidate_members(with_default)] == ["rank1", "default"]
    assert [m.name for m in candidate_members(quick)] == ["rank1"]
    assert asked_for(with_default, candidate_members(with_default)) == ["default"]
    assert asked_for(quick, candidate_members(quick)) == []
    # From 60 minutes the search's rank 2 is the default CNN: that one is asked for.
    hour = submit._parse_args(["--artifacts-dir", str(tmp_path), "--include-default",
                               "--minutes", "60"])[1]
    assert [m.name for m in candidate_members(hour)] == ["rank1", "rank2"]
    assert asked_for(hour, candidate_members(hour)) == ["rank2"]


def test_pseudo_labels_of_a_fold_come_from_that_folds_models_only():
    sure, unsure = np.full(10, 0.005), np.full(10, 0.1)
    sure[3] = 0.955
    result = ensemble.KFoldResult(fold_test_probs={
        # test image 0 is sure for fold 0's models only, image 1 for fold 1's only
        "a": [np.stack([sure, unsure]), np.stack([unsure, sure])],
        "b": [np.stack([sure, unsure]), np.stack([unsure, sure])]})
    pseudo = select_pseudo_labels(result.fold_test_probs, ["a", "b"], threshold=0.9)
    (idx0, labels0), (idx1, labels1) = pseudo.per_fold
    assert idx0.tolist() == [0] and labels0.tolist() == [3]
    assert idx1.tolist() == [1] and labels1.tolist() == [3]
    looser = select_pseudo_labels(result.fold_test_probs, ["a", "b"], threshold=0.05)
    assert looser.fingerprint() != pseudo.fingerprint()
    # Another test.csv that picks the same rows and labels trains on other images.
    x_test = np.zeros((2, 28, 28, 1), np.uint8)
    edited = x_test.copy()
    edited[1, 14, 14] = 255
    assert pseudo.images_fingerprint(edited) != pseudo.images_fingerprint(x_test)


def test_fold_model_key_changes_with_the_training_code(monkeypatch):
    member = Member("default", dict(DEFAULT_HPARAMS), "default", "default")
    config = submit._parse_args([])[1]
    before = ensemble.member_key(member, config, "data")
    monkeypatch.setattr(ensemble, "training_code_version", lambda: "edited")
    assert ensemble.member_key(member, config, "data") != before
    # A scikit-learn that draws other folds: the saved models would score images they saw.
    import sklearn

    monkeypatch.undo()
    ensemble.training_code_version.cache_clear()
    monkeypatch.setattr(sklearn, "__version__", "99.0")
    assert ensemble.member_key(member, config, "data") != before
    monkeypatch.undo()
    ensemble.training_code_version.cache_clear()
    assert ensemble.member_key(member, config, "data") == before


@pytest.mark.slow
def test_pseudo_labelled_round_joins_the_ensemble(kaggle_dir_readonly, tmp_path, capsys):
    args = _args(kaggle_dir_readonly, tmp_path, "--pseudo-threshold", "0.3",
                 "--pseudo-epochs", "1")
    assert run_cli(submit.main, args) == 0
    out = capsys.readouterr().out
    assert "pseudo-labels: " in out and "[default+pl] fold 2 of 2" in out
    [run_dir] = _run_dirs(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["models"]) == ["default", "default+pl"]
    assert metrics["ensemble_weights"] == {"default": 0.5, "default+pl": 0.5}
    counts = metrics["run_info"]["pseudo_labels_per_fold"]
    assert len(counts) == 2 and all(0 < count <= 300 for count in counts)
    assert metrics["run_info"]["tta"] is False and "tta_by_member" not in metrics["run_info"]
    # one network, and its pseudo-labelled round: not two configurations
    assert submit._default_message(run_dir, metrics).startswith("smoke: 1 config x 2 folds, ")
    assert run_cli(submit.main, args) == 0
    assert "trained 0, reused 4" in capsys.readouterr().out


def test_run_info_says_which_round_predicted_with_tta(tmp_path):
    """A budget decides TTA per round: the pseudo-labelled round may drop what the first kept,
    and the run's record says so instead of repeating the first round's decision."""
    _, config = submit._parse_args(_args(tmp_path, tmp_path, "--pseudo-threshold", "0.5"))
    members = [Member("default", dict(DEFAULT_HPARAMS), "the default CNN", "default")]
    digits = type("Digits", (), {"source": "kaggle", "train_path": "t", "test_path": "s",
                                 "x_train": np.zeros((2, 28, 28, 1), np.uint8),
                                 "y_train": np.arange(2), "x_test": np.zeros((1, 28, 28, 1))})
    result = ensemble.KFoldResult(tta={"default": True, "default+pl": False})
    info = run_outputs.submit_run_info(config, members, result, digits, [])
    assert info["tta"] is False
    assert info["tta_by_member"] == {"default": True, "default+pl": False}
    result.tta["default+pl"] = True
    info = run_outputs.submit_run_info(config, members, result, digits, [])
    assert info["tta"] is True and "tta_by_member" not in info


def test_run_info_gives_each_models_epochs_when_a_budget_cut_some(tmp_path):
    """run_info.epochs is the round's planned epochs; a late round's cut models trained
    fewer, and the record says which, as the curve's 'trained' column then does."""
    _, config = submit._parse_args(_args(tmp_path, tmp_path, "--epochs", "22",
                                         "--pseudo-threshold", "0.5", "--pseudo-epochs", "4"))
    members = [Member("default", dict(DEFAULT_HPARAMS), "the default CNN", "default")]
    digits = type("Digits", (), {"source": "kaggle", "train_path": "t", "test_path": "s",
                                 "x_train": np.zeros((2, 28, 28, 1), np.uint8),
                                 "y_train": np.arange(2), "x_test": np.zeros((1, 28, 28, 1))})
    result = ensemble.KFoldResult(epochs={"default": [22, 22], "default+pl": [4, 4]})
    info = run_outputs.submit_run_info(config, members, result, digits, [])
    assert info["epochs"] == 22 and "epochs_by_member" not in info
    for cut in ({"default": [22, 6], "default+pl": [4, 4]},
                {"default": [22, 22], "default+pl": [4, 3]}):
        result.epochs = cut
        info = run_outputs.submit_run_info(config, members, result, digits, [])
        assert info["epochs"] == 22 and info["epochs_by_member"] == cut
    info["epochs_by_member"] = {"default": [22, 20, 6, 5], "default+pl": [4, 3]}
    trained = curve.plan_details({"run_info": info, "ensemble": {}, "models": ["default"]})
    assert "default x 2 folds x 5-22 epochs," in trained["trained"]


@pytest.mark.parametrize("budget", [[], ["--minutes", "3"]], ids=["no plan", "a plan"])
def test_a_threshold_past_what_label_smoothing_reaches_stops_before_training(
        kaggle_dir_readonly, tmp_path, capsys, budget):
    """Smoothing 0.1 trained members towards 0.91: at 0.99 a real run found 5 test images
    of 28,000, and its second round trained on nothing new; 0.2 trains them towards 0.82.
    A plan would time (train) the networks and save itself first."""
    args = _args(kaggle_dir_readonly, tmp_path, "--pseudo-threshold", "0.95", *budget)
    assert run_cli(submit.main, args) == 2
    assert capsys.readouterr().err == (
        "error: --pseudo-threshold: expected a confidence up to 0.82, the most the members are "
        "trained towards (label smoothing 0.2), found 0.95\n")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "submissions").exists()


@pytest.mark.parametrize("smoothings, ceiling", [([0.1], 0.91), ([0.2, 0.1], 0.91), ([0.0], 1.0)])
def test_the_members_are_as_sure_as_their_least_smoothed_one(smoothings, ceiling):
    members = [Member(f"m{i}", {**DEFAULT_HPARAMS, "label_smoothing": s}, "test", "default")
               for i, s in enumerate(smoothings)]
    assert most_sure(members) == pytest.approx(ceiling)
    check_pseudo_threshold(members, ceiling)  # as sure as they get is still allowed


def test_each_repeat_holds_every_image_out_once_and_keeps_the_earlier_repeats():
    y = np.repeat(np.arange(10), 9)
    one = fold_splits(y, 3, seed=5)
    three = fold_splits(y, 3, seed=5, repeats=3)
    assert len(three) == 9
    for (_, held), (_, held_again) in zip(one, three[:3], strict=False):
        np.testing.assert_array_equal(held, held_again)
    for repeat in range(3):
        held = np.concatenate([held for _, held in three[3 * repeat:3 * repeat + 3]])
        np.testing.assert_array_equal(np.sort(held), np.arange(len(y)))
    assert not np.array_equal(np.sort(three[0][1]), np.sort(three[3][1]))


@pytest.mark.slow
def test_repeats_average_two_models_per_image_and_reuse_the_first_repeat(
        kaggle_dir_readonly, tmp_path, capsys):
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 0
    capsys.readouterr()
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path, "--repeats", "2")) == 0
    out = capsys.readouterr().out
    assert "trained 2, reused 2" in out and "[default] fold 2 of 2, repeat 2 of 2" in out
    first, second = _run_dirs(tmp_path)
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["run_info"]["repeats"] == 2
    assert json.loads((first / "metrics.json").read_text())["run_info"]["repeats"] == 1


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_latest_that_is_no_link_stops_the_run_before_it_trains(kaggle_dir_readonly, tmp_path,
                                                                  capsys, kind):
    """A copy of submissions/ that followed the link holds a real latest/: the run would
    otherwise be published, then fail to point latest at itself."""
    latest = tmp_path / "submissions" / "latest"
    latest.parent.mkdir()
    latest.mkdir() if kind == "folder" else latest.write_text("20261201-000000-quick-kaggle\n")
    assert run_cli(submit.main, _args(kaggle_dir_readonly, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {latest}: expected a link to the latest run, or nothing, found a "
                   f"{kind} (move it away: every run keeps its own folder beside it)\n")
    assert sorted(path.name for path in latest.parent.iterdir()) == ["latest"]
    assert not (tmp_path / "artifacts").exists()  # nothing trained


def test_a_run_folder_as_submissions_dir_stops_the_run_before_it_trains(
        kaggle_dir_readonly, tmp_path, capsys):
    """Runs published inside another run's folder nest where no ledger looks for them."""
    run_dir = tmp_path / "submissions" / "20261201-000000-quick-kaggle"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    argv = [*_args(kaggle_dir_readonly, tmp_path), "--submissions-dir", str(run_dir)]
    assert run_cli(submit.main, argv) == 2
    assert capsys.readouterr().err == (
        f"error: {run_dir}: --submissions-dir: expected a folder that holds run folders, such "
        "as submissions, found a run folder (it holds metrics.json)\n")
    assert sorted(path.name for path in run_dir.iterdir()) == ["metrics.json"]
    assert not (tmp_path / "artifacts").exists()  # nothing trained


def test_a_folder_inside_a_run_folder_as_submissions_dir_stops_the_run(
        kaggle_dir_readonly, tmp_path, capsys):
    """A folder below a run folder hides its runs from every ledger as the run folder does."""
    run_dir = tmp_path / "submissions" / "20261201-000000-quick-kaggle"
    inside = run_dir / "more" / "runs"
    inside.mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    # a project's own metrics.json above submissions/ (DVC writes one) is no run folder
    assert run_folders.check_submissions_dir(inside) is None
    (run_dir / "report.md").write_text("# a run\n")
    # ".." out of it is beside it, not inside; a link into it is inside
    beside = run_dir / "more" / ".." / ".." / "other"
    assert run_folders.check_submissions_dir(beside) is None
    link = tmp_path / "link"
    link.symlink_to(inside, target_is_directory=True)
    for given in (inside, link):
        argv = [*_args(kaggle_dir_readonly, tmp_path), "--submissions-dir", str(given)]
        assert run_cli(submit.main, argv) == 2
        assert capsys.readouterr().err == (
            f"error: {given}: --submissions-dir: expected a folder that holds run folders, "
            f"such as submissions, found a folder inside the run folder {run_dir.resolve()} "
            "(it holds metrics.json and report.md)\n")
    assert list(inside.iterdir()) == []
    assert not (tmp_path / "artifacts").exists()  # nothing trained


def test_a_latest_that_is_no_link_is_never_replaced(tmp_path):
    submissions = tmp_path / "submissions"
    (submissions / "latest").mkdir(parents=True)
    with pytest.raises(DataError, match="expected a link to the latest run"):
        run_folders.write_run(submissions, "20261205-000000-quick-kaggle",
                              lambda folder: (folder / "metrics.json").write_text("{}") or {})
    assert sorted(path.name for path in submissions.iterdir()) == ["latest"]


@pytest.mark.parametrize("text, found", [
    ('{"loss": "abc"}', "'loss': 'abc'"),
    ('{"loss": [0.5], "accuracy": [1, "x"]}', "'accuracy': [1, 'x']"),
    ('{"val_loss": 5}', "'val_loss': 5"),
    ("[" * 100_000 + "]" * 100_000, "an unreadable file (ValueError)"),
    ("{}", "no 'loss'"),  # the report drew no curve for the model, and said nothing
    ('{"loss": [0.5, 0.4]}', "no 'accuracy'"),
    ('{"loss": [0.5], "accuracy": [0.9]}', "'loss' over 1 epoch(s), where the model trained 2"),
])
def test_a_history_of_other_values_is_one_line(tmp_path, text, found):
    """The report plots every history; before, a string in one crashed it in matplotlib."""
    model_path = tmp_path / "fold-1.keras"
    model_path.with_suffix(".history.json").write_text(text)
    with pytest.raises(DataError) as caught:
        ensemble._load_history(model_path, epochs=2)
    assert str(caught.value) == (
        f"{tmp_path / 'fold-1.history.json'}: expected the training history python -m "
        f"src.submit saves beside each fold model, found {found} (delete it and "
        "fold-1.keras, or rerun with --fresh)")
    model_path.with_suffix(".history.json").write_text(
        '{"loss": [0.5, NaN], "accuracy": [0.9, 0.1], "lr": []}')
    assert ensemble._load_history(model_path, epochs=2)["lr"] == []  # NaN: training diverged


def test_check_of_a_folder_says_so(kaggle_dir_readonly, tmp_path, capsys):
    argv = ["--check", str(tmp_path), "--data-dir", str(kaggle_dir_readonly)]
    assert run_cli(submit.main, argv) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}: expected a submission CSV, found "
                                       "a folder\n")


def test_check_refuses_a_quoted_line_break_at_its_line(kaggle_dir_readonly, tmp_path,
                                                       capsys):
    # A cell spanning lines shifted every line named after it: here the ImageId out of
    # place on line 5 was named as line 4.
    lines = _good_submission().to_csv(index=False).splitlines()
    lines[1] = lines[1].replace(",", ',"') + '\n"'  # row 1's label, then a line break
    lines[3] = "7," + lines[3].split(",")[1]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    argv = ["--check", str(bad), "--data-dir", str(kaggle_dir_readonly)]
    assert run_cli(submit.main, argv) == 2
    assert capsys.readouterr().err == (f"error: {bad}:2: Label: expected a value on one "
                                       f"line, found '{lines[1][-3]}\\n'\n")
    bad.write_text('ImageId,"Label\n"\n' + "\n".join(lines[2:]) + "\n")
    assert run_cli(submit.main, argv) == 2
    assert capsys.readouterr().err == (f"error: {bad}:1: expected columns ImageId,Label on "
                                       "one line, found a quoted line break\n")


def test_check_refuses_a_blank_first_line_at_line_1(kaggle_dir_readonly, tmp_path, capsys):
    # pandas skips it and takes line 2 for the header: every line named after it was one
    # short.
    good = tmp_path / "good.csv"
    good.write_text("\n" + _good_submission().to_csv(index=False))
    argv = ["--check", str(good), "--data-dir", str(kaggle_dir_readonly)]
    assert run_cli(submit.main, argv) == 2
    assert capsys.readouterr().err == (f"error: {good}:1: expected columns ImageId,Label, "
                                       "found a blank line\n")


def test_ctrl_c_while_a_fold_model_loads_is_ctrl_c_not_a_damaged_file(tmp_path, monkeypatch):
    # It read "an unreadable file (SystemError) ... delete it": a good model, to delete.
    def interrupted(path):
        raise SystemError("<built-in function TFE_Py_Execute> returned a result with an "
                          "exception set") from KeyboardInterrupt()

    monkeypatch.setattr(keras.models, "load_model", interrupted)
    (tmp_path / "fold-0.keras").write_bytes(b"PK")  # there: load_model reads it
    with pytest.raises(KeyboardInterrupt):
        ensemble._load_fold_model(tmp_path / "fold-0.keras")
