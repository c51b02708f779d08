"""What the benchmarks share: the machine they ran on, the package's own commands run
as a user runs them (a subprocess each, in a fresh folder) with the figures their
metrics.json holds, and result files that never overwrite earlier ones.

src.bench (speed) and src.curve (accuracy against minutes) use it.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from src.calibrate import available_cores, cpu_model
from src.config import Config
from src.errors import DataError
from src.processes import child_environment
from src.run_folders import latest_run
from src.run_metrics import read_run_metrics
from src.util import no_free_name, numbered_names, write_all_new, writing

THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                    "TF_ENABLE_ONEDNN_OPTS")


def machine_info() -> dict:
    """CPU, cores, libraries, visible GPUs and the thread settings in force."""
    return {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cores": available_cores(),
        "platform": platform.platform(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "environment": {name: os.environ.get(name, "unset") for name in THREAD_VARIABLES},
    }


def machine_line(machine: dict) -> str:
    """The machine in one Markdown line."""
    gpus = ", ".join(machine["gpus"]) or "none visible"
    threads = ", ".join(f"{name}={value}" for name, value in machine["environment"].items())
    return (f"{machine['cpu']}, {machine['cpu_count']} cores ({machine['usable_cores']} usable); "
            f"GPU: {gpus}; TensorFlow {machine['tensorflow']}, Keras {machine['keras']}; "
            f"threads: intra-op {machine['intra_op_threads']}, inter-op "
            f"{machine['inter_op_threads']} (0: TensorFlow picks), {threads}")



# ---------------------------------------------------------------- the package's commands


def run_summary(run_dir: Path, details: Callable[[dict], dict] | None = None) -> dict:
    """Accuracy, wall time and profile of the finished run in run_dir, from its metrics.json
    checked as src.run_metrics checks it; with details, also what details(metrics) returns.
    Where there is no such run, {"note": why}: the bench reports on without it."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {"note": f"no finished run at {path}: run `python -m src.submit` or pass "
                        "--run-quick"}
    try:
        metrics = read_run_metrics(run_dir)
        result = {"source": str(path), "profile": metrics["run_info"]["profile"],
                  "accuracy": float(metrics["ensemble"]["accuracy"]),
                  "submit_seconds": float(metrics["timings"]["total"])}
        return {**result, **details(metrics)} if details else result
    except DataError as error:
        return {"note": str(error)}
    except (ValueError, KeyError, TypeError) as error:  # a field only details reads
        return {"note": f"{path} is not a metrics.json of python -m src.submit "
                        f"({type(error).__name__}: {error})"}


def child_flags(config: Config, folder: Path) -> list[str]:
    """The flags that run a stage on the bench's data, profile, seed and precision, writing
    only under folder (never the user's own search or runs)."""
    flags = ["--profile", config.profile, "--source", config.source, "--seed", str(config.seed),
             "--precision", config.precision, "--artifacts-dir", str(folder / "artifacts"),
             "--submissions-dir", str(folder / "submissions")]
    if config.data_dir:
        flags += ["--data-dir", config.data_dir]
    if config.keras_npz:
        flags += ["--keras-npz", config.keras_npz]
    return flags


def run_stage(stage: str, flags: Sequence[str]) -> tuple[int, float]:
    """Run python -m src.<stage> with flags; its exit code and wall-clock seconds."""
    command = [sys.executable, "-m", f"src.{stage}", *flags]
    print(f"running {shlex.join(command)}", flush=True)
    tick = time.perf_counter()
    finished = subprocess.run(command, check=False, env=child_environment())
    return finished.returncode, time.perf_counter() - tick


def run_profile(config: Config, folder: Path) -> dict:
    """Run python -m src.tune, then python -m src.submit, with config's profile in a fresh
    folder; their wall times and the run's metrics."""
    seconds = {}
    for stage in ("tune", "submit"):
        code, seconds[stage] = run_stage(stage, child_flags(config, folder))
        if code != 0:
            return {"note": f"python -m src.{stage} exited with code {code}"}
    result = run_summary(latest_run(folder / "submissions"))
    return {**result, "tune_wall_seconds": seconds["tune"],
            "submit_wall_seconds": seconds["submit"]}


def new_folder(path: Path) -> Path:
    """Create path, or path-2, path-3, ... when taken: a folder no earlier run wrote."""
    with writing(path):
        for name in numbered_names(path.name):
            try:
                (path.parent / name).mkdir(parents=True)
                return path.parent / name
            except FileExistsError:
                continue
    raise no_free_name(path)


def write_new_files(folder: Path, stem: str, texts: dict[str, str | bytes]) -> list[Path]:
    """Write each suffix's text (or bytes) to folder/<stem><suffix>, all of them or none
    (util.write_all_atomically); when a name is taken, the stem gets -2, -3, ... so no
    earlier file is overwritten. A failed write is a DataError naming the file."""
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    for name in numbered_names(stem):
        paths = [folder / f"{name}{suffix}" for suffix in texts]
        # All or none: a .md without its .json would pass for a whole record.
        if write_all_new(dict(zip(paths, texts.values(), strict=True))):
            return paths
    raise no_free_name(folder / stem)
