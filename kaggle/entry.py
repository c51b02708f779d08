"""Digit Recognizer on a Kaggle GPU: tune, train the ensemble, write submission.csv.

Kaggle uploads a script kernel's one code file and nothing else, so
``python kaggle/build.py`` copies this file into kaggle/build/ with the
project's src/ package packed into PACKAGE_ZIP. The kernel checks that the
image has what the package needs, unpacks it into a scratch folder, runs
``python -m src.tune`` and ``python -m src.submit`` on the competition data
within a wall-clock budget, and leaves ``submission.csv`` and the run folder
(report, figures, metrics.json) in /kaggle/working, which Kaggle keeps as the
output. The search and the fold models live in the scratch folder and are not kept.
"""

from __future__ import annotations

import base64
import importlib
import io
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NoReturn

PROFILES = ("smoke", "quick", "full")
MAX_MINUTES = 525_600  # a year: src.config.MAX_MINUTES, the most a stage's --minutes takes
PARENT_PID_ENV = "DIGITS_PARENT_PID"  # src.processes.PARENT_PID_ENV: a stage ends with the kernel


def stop(message: str) -> NoReturn:
    """Stop the kernel with one error line and exit code 2: something in its settings or
    input to change."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def kernel_profile(text: str) -> str:
    """The DIGITS_KERNEL_PROFILE text, one of PROFILES; else the kernel stops in one line."""
    if text not in PROFILES:
        stop(f"DIGITS_KERNEL_PROFILE: expected one of {', '.join(PROFILES)}, found {text!r}")
    return text


def budget_minutes(text: str) -> float:
    """The DIGITS_KERNEL_MINUTES text as minutes; a bad value stops the kernel in one line."""
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and 0 < minutes <= MAX_MINUTES):
        stop(f"DIGITS_KERNEL_MINUTES: expected minutes > 0 up to {MAX_MINUTES}, found {text!r}")
    return minutes


PROFILE = kernel_profile(os.environ.get("DIGITS_KERNEL_PROFILE", "full"))
# Absolute: the stages run in another folder. Kaggle's input folder is searched for the
# competition's files (its folder's name has varied); one given is used as it is.
INPUT_GIVEN = "DIGITS_KERNEL_INPUT" in os.environ
INPUT_DIR = Path(os.environ.get("DIGITS_KERNEL_INPUT", "/kaggle/input/digit-recognizer")).absolute()
WORKING_DIR = Path(os.environ.get("DIGITS_KERNEL_WORKING", "/kaggle/working")).absolute()


# Kaggle stops a GPU session after 12 hours; the hour left is for start-up and saving output.
BUDGET_MINUTES = budget_minutes(os.environ.get("DIGITS_KERNEL_MINUTES", "660"))
TUNE_SHARE = 0.25  # of the budget, the most the search may take; the ensemble gets the rest
GRACE_SECONDS = 120  # for a stage stopped as by Ctrl-C to exit before it is killed
# src.submit plans to end this share of its time early: a plan that runs late still
# writes its submission before the interrupt, which would leave none.
SUBMIT_MARGIN = 0.05
TIMED_OUT = 124  # a stage's exit code when the kernel stopped it at its time limit
STAGES = ("src.tune", "src.submit")
PYTHON = "3.11"  # pyproject's requires-python: src imports datetime.UTC
# What the stages import, with the oldest version the package supports (pyproject.toml).
REQUIREMENTS = {"tensorflow": "2.16", "keras": "3.3", "keras_tuner": "1.4.7", "numpy": "1.26",
                "pandas": "2.0", "sklearn": "1.2", "scipy": "1.10", "seaborn": "0.12",
                "matplotlib": "3.7"}
# ... and the first version it does not: src/tuners.py wraps KerasTuner 1.4's oracle.
TOO_NEW = {"keras_tuner": "1.5"}
PACKAGE_ZIP = ""  # the src/ package as a base64 zip, written in by kaggle/build.py


def version_tuple(version: str) -> tuple[int, int, int]:
    """(major, minor, micro) of a version string: "2.17.0rc1" -> (2, 17, 0)."""
    parts = [int(re.match(r"\d*", part).group() or 0) for part in version.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def check_environment() -> dict[str, str]:
    """The versions of Python and of every package the stages need; the kernel stops in one
    line when one is missing or older than the package supports."""
    versions = {"python": platform.python_version()}
    if version_tuple(versions["python"]) < version_tuple(PYTHON):
        stop(f"this image has python {versions['python']}, the kernel needs >= {PYTHON}: "
             "pick the latest environment in the kernel's settings")
    for name, oldest in REQUIREMENTS.items():
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            stop(f"this image lacks {name} (>= {oldest}), which the kernel needs: pick the "
                 "latest environment in the kernel's settings")
        except Exception as error:  # installed but broken: a NumPy of another ABI, say
            stop(f"this image cannot import {name} ({type(error).__name__}: "
                 f"{' '.join(str(error).split())}): pick the latest environment in the "
                 "kernel's settings")
        if version_tuple(versions[name]) < version_tuple(oldest):
            stop(f"this image has {name} {versions[name]}, the kernel needs >= {oldest}: pick "
                 "the latest environment in the kernel's settings")
        if name in TOO_NEW and version_tuple(versions[name]) >= version_tuple(TOO_NEW[name]):
            stop(f"this image has {name} {versions[name]}, the kernel needs < {TOO_NEW[name]}: "
                 "pick an older environment in the kernel's settings")
    return versions


def find_input_dir(preferred: Path, search_beside: bool = True) -> Path:
    """preferred if it holds train.csv and test.csv, else (search_beside) the first folder
    under its parent that does."""
    if _holds_data(preferred):
        return preferred
    if not search_beside:
        stop(f"no train.csv and test.csv in {preferred} (DIGITS_KERNEL_INPUT)")
    for train_csv in sorted(preferred.parent.rglob("train.csv")):
        if _holds_data(train_csv.parent):
            return train_csv.parent
    stop(f"no train.csv and test.csv in {preferred} or under {preferred.parent}: add the "
         "digit-recognizer competition as input data")


def check_working_dir(folder: Path) -> None:
    """Make the output folder if it is missing and try a write in it; the kernel stops in
    one line, before any stage, where that fails (a file there or on the way, a
    read-only folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        found = ("a file" if folder.is_file() else error.strerror or type(error).__name__)
        stop(f"{folder}: expected a folder the kernel can write its output in "
             f"(DIGITS_KERNEL_WORKING), found {found}")


def _holds_data(folder: Path) -> bool:
    return (folder / "train.csv").is_file() and (folder / "test.csv").is_file()


def unpack_package(folder: Path) -> Path:
    """Write the bundled src/ package into folder, the root the stages import it from."""
    if not PACKAGE_ZIP:
        stop("this is the template: run `python kaggle/build.py` and push kaggle/build/ "
             "instead")
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(PACKAGE_ZIP))) as archive:
        archive.extractall(folder)
    return folder


def run_stage(module: str, package_root: Path, data_dir: Path, artifacts_dir: Path,
              submissions_dir: Path, seconds: float, minutes: float) -> int:
    """Run ``python -m module`` from the unpacked package with this kernel's profile, folders
    and budget (``--minutes``: the stage plans to end within it), for at most ``seconds``;
    its exit code, or TIMED_OUT."""
    command = [sys.executable, "-m", module, "--data-dir", str(data_dir), "--profile", PROFILE,
               "--artifacts-dir", str(artifacts_dir), "--submissions-dir", str(submissions_dir)]
    if PROFILE != "smoke":  # smoke has fixed values; the others plan to the kernel's budget
        command += ["--minutes", f"{minutes:g}"]
    print(f"$ {' '.join(command)}  # at most {seconds / 60:.0f} min", flush=True)
    # The working directory comes first on `python -m`'s import path: src is the bundled one.
    return run_with_time_limit(command, package_root, seconds)


def _start_with_ctrl_c(command: list[str], cwd: Path) -> subprocess.Popen:
    """Start command with Ctrl-C's default action, and the kernel's pid to watch.

    A process started with SIGINT ignored (a shell's background job) passes that on, and
    the stage would not stop cleanly. exec resets a handled signal to its default but keeps
    an ignored one ignored, so the kernel handles Ctrl-C while it starts the child; not with
    Popen's preexec_fn, which can deadlock the child of a threaded parent (TensorFlow's
    threads run here once check_environment has imported it).
    """
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:  # a SIGKILL of the kernel leaves its child running: the stage watches this pid
        return subprocess.Popen(command, cwd=cwd,
                                env={**os.environ, PARENT_PID_ENV: str(os.getpid())})
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_with_time_limit(command: list[str], cwd: Path, seconds: float) -> int:
    """Run command; past ``seconds`` interrupt it as Ctrl-C would (the stages stop cleanly),
    and kill it if it is still there GRACE_SECONDS later. Its exit code, or TIMED_OUT."""
    process = _start_with_ctrl_c(command, cwd)
    try:
        return process.wait(timeout=max(seconds, 0))
    except subprocess.TimeoutExpired:
        _stop(process)
        return TIMED_OUT
    except BaseException:  # Ctrl-C in the kernel itself: the stage must not outlive it
        try:  # at a terminal the Ctrl-C reached the stage too: a second one could cut its
            process.wait(timeout=1)  # clean stop short
        except subprocess.TimeoutExpired:
            _stop(process)
        raise


def _stop(process: subprocess.Popen) -> None:
    """Interrupt the process as Ctrl-C would; kill it if it is there GRACE_SECONDS later."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def publish_submission(submissions_dir: Path, working_dir: Path) -> Path:
    """Copy the newest run's submission.csv to working_dir, under a hidden name first and
    then renamed, so Kaggle's output never holds half a file; drop the ``latest`` link.

    The kernel makes one run, so the link only repeats its folder in Kaggle's output.
    """
    latest, latest_txt = submissions_dir / "latest", submissions_dir / "latest.txt"
    target = working_dir / "submission.csv"
    partial = working_dir / f".partial-{os.getpid()}-submission.csv"
    try:  # where symlinks are not allowed, src.submit names its run in latest.txt
        run = latest if latest.is_symlink() else submissions_dir / latest_txt.read_text().strip()
        shutil.copyfile(run / "submission.csv", partial)
        os.replace(partial, target)
    except OSError as error:  # after hours of training: one line, and the run folder stays
        stop(f"{target}: could not publish the run's submission.csv ({error.strerror or error}); "
             f"it is under {submissions_dir}")
    finally:
        partial.unlink(missing_ok=True)  # gone once renamed; a failed copy's, removed
    latest.unlink(missing_ok=True)
    return target


def main(clock=time.monotonic) -> int:
    """Tune, train and submit inside the kernel within BUDGET_MINUTES; the exit code of the
    first failing stage. A search stopped at its share of the budget is not a failure: the
    ensemble goes on without its results."""
    deadline = clock() + BUDGET_MINUTES * 60
    versions = check_environment()
    print("kernel: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
          flush=True)
    print(f"kernel: profile {PROFILE}, time budget {BUDGET_MINUTES:.0f} min, the search at most "
          f"{TUNE_SHARE * BUDGET_MINUTES:.0f} min of it", flush=True)
    data_dir = find_input_dir(INPUT_DIR, search_beside=not INPUT_GIVEN)
    check_working_dir(WORKING_DIR)  # not after hours of search and training
    submissions_dir = WORKING_DIR / "submissions"
    with tempfile.TemporaryDirectory(prefix="digit-recognizer-") as scratch:
        package_root = unpack_package(Path(scratch) / "package")
        for module in STAGES:
            seconds = deadline - clock()
            # The search plans its share of the whole budget; the ensemble plans what is left
            # (less its margin), which a search stopped at its limit could not record for it.
            minutes = (BUDGET_MINUTES if module == "src.tune"
                       else math.floor((1 - SUBMIT_MARGIN) * seconds / 6) / 10)
            if module == "src.tune":
                seconds = min(seconds, TUNE_SHARE * BUDGET_MINUTES * 60)
            code = run_stage(module, package_root, data_dir, Path(scratch) / "artifacts",
                             submissions_dir, seconds, minutes)
            if code == TIMED_OUT and module == "src.tune":
                print("kernel: src.tune stopped at its share of the time budget; src.submit "
                      "goes on without its results (the default CNN)", flush=True)
            elif code == TIMED_OUT:
                print(f"error: {module} did not finish within the time budget of "
                      f"{BUDGET_MINUTES:.0f} min (its plan ran late): a smaller "
                      "BUDGET_MINUTES in kaggle/entry.py leaves Kaggle's session more room; "
                      "build again (kaggle/README.md)", file=sys.stderr)
                return code
            elif code:
                print(f"error: {module} failed with exit code {code}", file=sys.stderr)
                return code
    print(f"wrote {publish_submission(submissions_dir, WORKING_DIR)}", flush=True)
    return 0


if __name__ == "__main__":
    exit_code = main()
    if exit_code:  # exit only on failure: under IPython even SystemExit(0) prints as an error
        raise SystemExit(exit_code)
