"""Everything that talks to Kaggle: download the competition files, submit a CSV, wait
for its public score, list submissions. Each request goes through a signed-in
``KaggleSession`` (src/kaggle_session.py), so every failure is one DataError line
that never holds a credential.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from src.csv_files import read_digits_csv
from src.data import LOCAL_DATA_DIR, find_csv, find_data_dir
from src.errors import DataError
from src.kaggle_session import COMPETITION, KaggleSession
from src.util import format_duration, partial_path, remove_stale_partials, writing

DATA_FILES = ("train.csv", "test.csv")
WAIT_MINUTES = 10.0  # the longest an upload waits for its score (--wait-minutes)
POLL_SECONDS = 15.0
PAGE_SIZE = 50
MAX_PAGES = 20  # the newest 1,000 submissions
SYNC_LATER = "`python -m src.runs --sync` records the score later"


@dataclass
class Submission:
    """One submission as Kaggle lists it; ``asdict`` of it is what a run's metrics.json keeps."""

    ref: int  # Kaggle's id of the submission; 0 where unknown
    message: str  # the submission's description
    file_name: str
    date: str  # ISO 8601, UTC
    status: str  # pending, complete or error
    public_score: float | None = None
    error: str = ""  # Kaggle's words when the status is error
    competition: str = COMPETITION

    @classmethod
    def from_api(cls, row, competition: str = COMPETITION) -> Submission:
        """From kagglesdk's ApiSubmission (snake_case fields; naive UTC date; status enum)."""
        date = row.date.replace(tzinfo=timezone.utc) if row.date else _now()
        status = getattr(row.status, "name", str(row.status)).rsplit(".", 1)[-1].lower()
        score = float(row.public_score) if row.public_score else None
        return cls(ref=int(row.ref or 0), message=row.description or "",
                   file_name=row.file_name or "", date=date.isoformat(timespec="seconds"),
                   status=status, public_score=score, error=row.error_description or "",
                   competition=competition)

    def record(self) -> dict:
        """The submission as plain JSON values."""
        return dataclasses.asdict(self)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def upload_submission(csv_path: Path, message: str, competition: str = COMPETITION
                      ) -> Submission:
    """Submit csv_path to the competition; return the submission, pending. Raises DataError
    (one line, no credentials in it) when it cannot; the CSV is never touched."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError("a submission CSV", "no such file", file=csv_path)
    keep = (f"{csv_path} is kept; upload it later with "
            f"`python -m src.submit --check {csv_path} --upload -m MESSAGE`")
    session = KaggleSession("upload", keep, competition)
    reply = session.call("competition_submit", str(csv_path), message, competition, quiet=True)
    if reply.message == session.api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise DataError(f"an upload of {csv_path} to {competition!r}", "an unfinished upload",
                        column=session.where, hint=f"check the network connection; {keep}")
    return Submission(ref=int(getattr(reply, "ref", 0) or 0), message=message,
                      file_name=csv_path.name, date=_now().isoformat(), status="pending",
                      competition=competition)


def wait_for_score(submitted: Submission, minutes: float = WAIT_MINUTES,
                   poll_seconds: float = POLL_SECONDS,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> Submission:
    """Poll Kaggle's list of submissions until ``submitted`` is scored (complete or error)
    or ``minutes`` have passed, a line per poll; return its last known state."""
    session = KaggleSession("score", f"the upload went through; {SYNC_LATER}",
                            submitted.competition)
    limit = minutes * 60
    started = clock()
    while True:
        listing = _list_submissions(session, pages=1)
        current = find_submission(listing, submitted.ref, submitted.message,
                                  submitted.file_name) or submitted
        waited = clock() - started
        if current.status != "pending" or waited >= limit:
            return current
        print(f"kaggle: submission {current.ref or current.message!r} is {current.status}; "
              f"waited {format_duration(waited)} of at most {format_duration(limit)}",
              flush=True)
        sleep(min(poll_seconds, limit - waited))


def list_submissions(competition: str = COMPETITION) -> list[Submission]:
    """The user's newest submissions to the competition (up to MAX_PAGES pages), newest first."""
    session = KaggleSession("submissions", "nothing was written", competition)
    return _list_submissions(session, MAX_PAGES)


def _list_submissions(session: KaggleSession, pages: int) -> list[Submission]:
    rows = []
    for page in range(1, pages + 1):
        batch = session.call("competition_submissions", session.competition,
                             page_number=page, page_size=PAGE_SIZE) or []
        rows += [Submission.from_api(row, session.competition) for row in batch
                 if row is not None]
        if len(batch) < PAGE_SIZE:
            break
    return sorted(rows, key=lambda row: row.date, reverse=True)


def find_submission(listing: list[Submission], ref: int = 0, message: str = "",
                    file_name: str = "", after: str = "") -> Submission | None:
    """The listed submission with id ``ref``; where no id is known, the newest with this
    message and file name made at or after ``after`` (ISO 8601)."""
    if ref:
        return next((row for row in listing if row.ref == ref), None)
    for row in listing:
        if (row.message == message and row.file_name == file_name
                and (not after or _utc(row.date) >= _utc(after))):
            return row
    return None


def _utc(iso_date: str) -> datetime:
    """An ISO 8601 date as an aware UTC datetime (a naive one is taken as UTC)."""
    date = datetime.fromisoformat(iso_date)
    return date if date.tzinfo else date.replace(tzinfo=timezone.utc)


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
    print(f"data: {target}/ holds {', '.join(sorted(p.name for p in target.iterdir()))}",
          flush=True)
    return target


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
    except (IndexError, zipfile.BadZipFile, zlib.error, EOFError) as error:
        # zlib.error and EOFError: a damaged or short member behind an intact directory
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
