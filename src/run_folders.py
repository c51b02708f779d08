"""A run's folder under submissions/: named by its UTC time, filled as a hidden partial
folder, then renamed into place whole (never over an earlier run) with ``latest``
pointing at it."""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from src.errors import DataError
from src.util import (
    NOT_ONE_LINE,
    is_dir,
    is_one_line_path,
    no_free_name,
    numbered_names,
    one_line,
    partial_path,
    remove_stale_partials,
    write_atomically,
    writing,
)

RUN_ID_TIME = "%Y%m%d-%H%M%S"  # UTC: how a run folder's name starts


def new_run_id(kind: str) -> str:
    """A run folder name that sorts by time: 20261123-231500-quick-kaggle for kind
    "quick-kaggle" (profile and source)."""
    stamp = datetime.now(UTC).strftime(RUN_ID_TIME)
    return f"{stamp}-{kind}"


def publish_run(partial: Path, submissions_dir: Path, run_id: str) -> Path:
    """Rename the finished partial folder into place (never over an existing run) and
    point ``latest`` at it (``latest.txt`` names it where symlinks are not allowed);
    return the run folder."""
    for name in numbered_names(run_id):
        final = submissions_dir / name
        if final.exists() or final.is_symlink():
            continue
        try:
            os.rename(partial, final)
            break
        except OSError as error:  # another run took the name since: try the next one
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
    else:
        raise no_free_name(submissions_dir / run_id)
    try:
        _point_latest(submissions_dir, final.name)
    except (OSError, DataError) as error:  # the run is whole and in place: say so, and go on
        warnings.warn(f"{final} is written, but {submissions_dir / 'latest'} could not be "
                      f"pointed at it: {one_line(error)}", stacklevel=2)
    return final


def _point_latest(submissions_dir: Path, name: str) -> None:
    """Point the ``latest`` link at the run folder name, or where symlinks are not allowed,
    name it in ``latest.txt``; never both, so that they cannot disagree."""
    latest, latest_txt = submissions_dir / "latest", submissions_dir / "latest.txt"
    link = partial_path(latest)  # this process's own: two runs publishing never share it
    link.unlink(missing_ok=True)  # what this process (or one of its id) left there
    try:
        os.symlink(name, link, target_is_directory=True)
    except OSError as error:
        if not _no_symlinks(error):  # a full disk, say: publish_run warns
            raise
        # Windows without symlink rights: name the run in a text file instead
        write_atomically(latest_txt, name + "\n")
        if latest.is_symlink():  # an older run's link would now disagree with the file
            latest.unlink()
        return
    try:
        if latest.exists() and not latest.is_symlink():  # made while this run was writing
            check_latest(submissions_dir)
        os.replace(link, latest)
    finally:
        link.unlink(missing_ok=True)  # gone after a replace; left by a failed one
    latest_txt.unlink(missing_ok=True)  # an older run's file would now disagree with the link


def _no_symlinks(error: OSError) -> bool:
    """Whether creating a symlink failed because this system or user may not make one
    (Windows without the privilege: 1314; a file system without links), not for a reason
    that a text file would fail on too."""
    return (getattr(error, "winerror", None) == 1314
            or error.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES))


def latest_run(submissions_dir: Path) -> Path:
    """The newest finished run's folder: where the ``latest`` link points, or the run
    ``latest.txt`` names where links cannot be made; ``latest`` itself when neither is
    there (its absence for the caller to report)."""
    latest, latest_txt = submissions_dir / "latest", submissions_dir / "latest.txt"
    if latest.is_symlink() or not latest_txt.is_file():
        return latest
    try:
        name = latest_txt.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return latest
    return submissions_dir / name if name and "/" not in name and "\\" not in name else latest


def check_latest(submissions_dir: Path) -> None:
    """DataError unless ``latest`` under submissions_dir is a link or absent: a real folder
    or file there (a copy that followed the link) cannot be pointed at the new run, and is
    never replaced. Called before a run starts and again before it publishes."""
    latest = submissions_dir / "latest"
    if latest.exists() and not latest.is_symlink():
        found = "a folder" if latest.is_dir() else "a file"
        raise DataError("a link to the latest run, or nothing", found, file=latest,
                        hint="move it away: every run keeps its own folder beside it")


def check_submissions_dir(submissions_dir: Path) -> None:
    """DataError unless submissions_dir can take a new run folder: neither a run folder
    nor a folder inside one (its runs would nest there, where no ledger looks), and its
    ``latest`` a link or absent (check_latest)."""
    real = submissions_dir.resolve()  # the folders it names: links followed, ".." undone
    if (submissions_dir / "metrics.json").exists():
        found = "a run folder (it holds metrics.json)"
    else:  # a folder above counts only with a report beside its metrics.json: a project's
        # own metrics.json (DVC writes one) must not block its submissions/
        found = next((f"a folder inside the run folder {folder} (it holds metrics.json "
                      "and report.md)" for folder in real.parents
                      if (folder / "metrics.json").is_file()
                      and (folder / "report.md").is_file()), None)
    if found:
        raise DataError("a folder that holds run folders, such as submissions", found,
                        file=submissions_dir, column="--submissions-dir")
    check_latest(submissions_dir)


def write_run(submissions_dir: Path, run_id: str, write: Callable[[Path], dict]
              ) -> tuple[Path, dict]:
    """Create a new run folder under submissions_dir with ``write(folder)``, which fills it
    and returns its metrics; publish it whole (publish_run) or, should anything fail,
    leave nothing behind. Return (the run folder, the metrics)."""
    check_submissions_dir(submissions_dir)
    remove_stale_partials(submissions_dir)  # the run folder a killed run left half-written
    partial = partial_path(submissions_dir / run_id)
    with writing(submissions_dir):  # a read-only or file --submissions-dir: named as given
        submissions_dir.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    try:
        metrics = write(partial)
        with writing(submissions_dir):  # the rename into place and the latest link
            run_dir = publish_run(partial, submissions_dir, run_id)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return run_dir, metrics


def list_run_folders(submissions_dir: Path) -> list[Path]:
    """The run folders in submissions_dir, by name: every folder but hidden ones (partial
    runs) and the latest link."""
    if not submissions_dir.is_dir():
        return []
    return sorted(path for path in submissions_dir.iterdir()
                  if path.is_dir() and not path.is_symlink() and not path.name.startswith("."))


def distinct_folders(folders: list[Path]) -> list[Path]:
    """The run folders given on a command line, checked to exist and to differ."""
    seen: dict[Path, Path] = {}
    for folder in folders:
        if not is_dir(folder):
            raise DataError("a run folder of python -m src.submit",
                            "a file" if folder.exists() else "no such folder", file=folder)
        real = folder.resolve()
        if not is_one_line_path(str(real)):  # its name goes into figures, its path into files
            raise DataError("a run folder named in text on one line", NOT_ONE_LINE,
                            file=folder)
        if real in seen:
            raise DataError("different run folders", f"{seen[real]} and {folder}, the same one",
                            column="RUN")
        seen[real] = folder
    return folders
