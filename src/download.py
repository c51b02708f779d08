"""The data stage's fetch: the competition's train.csv and test.csv downloaded from Kaggle
(``--download`` of python -m src.tune and python -m src.submit, or on its own:
``python -m src.download [--data-dir DIR]``), unpacked and checked in a
hidden folder beside the data folder before they move in. The request goes through a
signed-in ``KaggleSession`` (src/kaggle_session.py), so a failure is one DataError line
that never holds a credential.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
import zlib
from pathlib import Path

from src.config import OneLineParser, path_flag, run_cli
from src.csv_files import read_digits_csv
from src.data import LOCAL_DATA_DIR, find_csv, find_data_dir
from src.errors import DataError
from src.kaggle_session import COMPETITION, KaggleSession
from src.util import check_writable_folder, partial_path, remove_stale_partials, writing

DATA_FILES = ("train.csv", "test.csv")


def download_competition_data(data_dir: str | Path | None = None,
                              competition: str = COMPETITION) -> Path:
    """Fetch the competition's files into data_dir (default data/digit-recognizer/) unless
    the folders the loader searches hold train.csv and test.csv already; return the folder.

    The zip is downloaded and unpacked into a hidden folder beside data_dir and both
    CSVs validated there; only then do the files move in, so a failed or killed
    download leaves data_dir as it was.
    """
    found = _folder_with_data(data_dir)
    if found is not None:
        print(f"data: {found} holds train.csv and test.csv already; not downloading", flush=True)
        return found
    target = Path(data_dir) if data_dir is not None else LOCAL_DATA_DIR
    check_writable_folder(target)  # a file there: named now, not as missing credentials
    made = _missing_folders(target.parent)  # removed again if the download fails
    with writing(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(target.parent)  # what a killed download left (a SIGKILL)
        staging = partial_path(target.parent / f"{target.name}-download")
        staging.mkdir(exist_ok=True)
    try:
        session = KaggleSession("download", f"nothing was written to {target}", competition)
        print(f"data: downloading the {competition!r} files from Kaggle ...", flush=True)
        session.call("competition_download_files", competition, path=str(staging / "zip"),
                     force=True, quiet=True)
        with writing(staging / "files"):
            unpacked = _unpack(staging / "zip", staging / "files", session.where)
        try:  # the loader's own checks, before anything moves in
            for name in DATA_FILES:
                read_digits_csv(unpacked / name, with_labels=name == "train.csv")
        except DataError as error:
            error.hint = f"a damaged download: nothing was written to {target}; try again"
            raise
        with writing(target):
            _move_into(unpacked, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)  # after a move, target holds the files: none is empty
    print(f"data: {target}/ holds {', '.join(sorted(p.name for p in target.iterdir()))}",
          flush=True)
    return target


def _missing_folders(folder: Path) -> list[Path]:
    """folder and those of its parents that do not exist, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove each folder, innermost first, up to the first that is not empty (or gone)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _folder_with_data(data_dir: str | Path | None) -> Path | None:
    """The folder the loader would read train.csv and test.csv from, or None."""
    try:
        folder = find_data_dir(data_dir)
    except DataError:
        return None
    return folder if find_csv(folder, "test") is not None else None


def _unpack(download_dir: Path, out_dir: Path, where: str) -> Path:
    """Unpack the one zip the API wrote into download_dir; return out_dir holding its files."""
    archives = sorted(download_dir.glob("*"))
    try:
        with zipfile.ZipFile(archives[0]) as archive:
            names = archive.namelist()
            missing = [name for name in DATA_FILES if name not in names]
            if missing:
                raise DataError(f"a zip holding {' and '.join(DATA_FILES)}",
                                f"{', '.join(names) or 'an empty zip'}", column=where)
            archive.extractall(out_dir)
    except (IndexError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError,
            NotImplementedError) as error:
        # zlib.error and EOFError: a damaged or short member behind an intact directory;
        # RuntimeError: a member marked encrypted; NotImplementedError: a compression
        # zipfile lacks
        kind = "zlib.error" if isinstance(error, zlib.error) else type(error).__name__
        found = f"{archives[0].name!r} ({kind})" if archives else "no file"
        raise DataError("a zip of the competition files", found, column=where,
                        hint="run the command again") from None
    return out_dir


def _move_into(unpacked: Path, target: Path) -> None:
    """Move the unpacked files into target, whole folder at once where it does not exist.

    Into an existing folder the files move one by one, train.csv last: the loader
    looks for train.csv, so it never finds the folder with part of the data.
    """
    if not target.exists():
        os.rename(unpacked, target)
        return
    files = sorted(unpacked.iterdir(), key=lambda path: path.name == "train.csv")
    for path in files:
        os.replace(path, target / path.name)


def main(argv: list[str] | None = None) -> int:
    """Fetch the competition's CSVs, as --download does, without training anything."""
    parser = OneLineParser(prog="python -m src.download", description=(
        "Fetch the competition's train.csv and test.csv from Kaggle with your API "
        "credentials (kaggle/README.md), checked before they move in; nothing is fetched "
        "when the folders the loader searches hold them already."))
    parser.add_argument("--data-dir", type=path_flag, help="where the files go (default: "
                        "data/digit-recognizer)")
    download_competition_data(parser.parse_args(argv).data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
