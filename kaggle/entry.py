"""Digit Recognizer on a Kaggle GPU: tune, train the ensemble, write submission.csv.

Kaggle uploads a script kernel's one code file and nothing else, so
``python kaggle/build.py`` copies this file into kaggle/build/ with the
project's src/ package packed into PACKAGE_ZIP. The kernel unpacks it into a
scratch folder, runs ``python -m src.tune`` and ``python -m src.submit`` on the
competition data, and leaves ``submission.csv`` and the run folder (report,
figures, metrics.json) in /kaggle/working, which Kaggle keeps as the output.
The search and the fold models live in the scratch folder and are not kept.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PROFILE = os.environ.get("DIGITS_KERNEL_PROFILE", "full")  # smoke, quick or full
INPUT_DIR = Path(os.environ.get("DIGITS_KERNEL_INPUT", "/kaggle/input/digit-recognizer"))
WORKING_DIR = Path(os.environ.get("DIGITS_KERNEL_WORKING", "/kaggle/working"))
STAGES = ("src.tune", "src.submit")
PACKAGE_ZIP = ""  # the src/ package as a base64 zip, written in by kaggle/build.py


def find_input_dir(preferred: Path) -> Path:
    """preferred if it holds train.csv and test.csv, else the first folder beside it that does."""
    if _holds_data(preferred):
        return preferred
    for train_csv in sorted(preferred.parent.rglob("train.csv")):
        if _holds_data(train_csv.parent):
            return train_csv.parent
    raise SystemExit(f"error: no train.csv and test.csv in {preferred} or under "
                     f"{preferred.parent}: add the digit-recognizer competition as input data")


def _holds_data(folder: Path) -> bool:
    return (folder / "train.csv").is_file() and (folder / "test.csv").is_file()


def unpack_package(folder: Path) -> Path:
    """Write the bundled src/ package into folder, the root the stages import it from."""
    if not PACKAGE_ZIP:
        raise SystemExit("error: this is the template: run `python kaggle/build.py` and push "
                         "kaggle/build/ instead")
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(PACKAGE_ZIP))) as archive:
        archive.extractall(folder)
    return folder


def run_stage(module: str, package_root: Path, data_dir: Path, artifacts_dir: Path,
              submissions_dir: Path) -> int:
    """Run ``python -m module`` from the unpacked package with this kernel's profile and folders."""
    command = [sys.executable, "-m", module, "--data-dir", str(data_dir), "--profile", PROFILE,
               "--artifacts-dir", str(artifacts_dir), "--submissions-dir", str(submissions_dir)]
    print("$ " + " ".join(command), flush=True)
    # The working directory comes first on `python -m`'s import path: src is the bundled one.
    return subprocess.run(command, cwd=package_root).returncode


def publish_submission(submissions_dir: Path, working_dir: Path) -> Path:
    """Copy the newest run's submission.csv to working_dir and drop the ``latest`` link.

    The kernel makes one run, so the link only repeats its folder in Kaggle's output.
    """
    latest = submissions_dir / "latest"
    target = working_dir / "submission.csv"
    shutil.copyfile(latest / "submission.csv", target)
    latest.unlink()
    return target


def main() -> int:
    """Tune, train and submit inside the kernel; the exit code of the first failing stage."""
    data_dir = find_input_dir(INPUT_DIR)
    submissions_dir = WORKING_DIR / "submissions"
    with tempfile.TemporaryDirectory(prefix="digit-recognizer-") as scratch:
        package_root = unpack_package(Path(scratch) / "package")
        for module in STAGES:
            code = run_stage(module, package_root, data_dir, Path(scratch) / "artifacts",
                             submissions_dir)
            if code:
                print(f"error: {module} failed with exit code {code}", file=sys.stderr)
                return code
    print(f"wrote {publish_submission(submissions_dir, WORKING_DIR)}", flush=True)
    return 0


if __name__ == "__main__":
    exit_code = main()
    if exit_code:  # exit only on failure: under IPython even SystemExit(0) prints as an error
        raise SystemExit(exit_code)
