"""Everything that talks to Kaggle about submissions: submit a CSV, wait for its public
score, list submissions (the data's download: src/download.py). Each request goes
through a signed-in ``KaggleSession`` (src/kaggle_session.py), so every failure is one
DataError line that never holds a credential.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from src.errors import DataError
from src.kaggle_session import COMPETITION, KaggleSession
from src.util import format_duration

WAIT_MINUTES = 10.0  # the longest an upload waits for its score (--wait-minutes)
POLL_SECONDS = 15.0
PAGE_SIZE = 50
MOST_LISTED = 1000  # the newest submissions --sync looks among
SYNC_LATER = "`python -m src.runs --sync` records the score later"
CLOCK_SKEW = timedelta(minutes=1)  # how far this machine's clock may be off Kaggle's


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
        date = row.date.replace(tzinfo=UTC) if row.date else _now()
        status = getattr(row.status, "name", str(row.status)).rsplit(".", 1)[-1].lower()
        return cls(ref=int(row.ref or 0), message=_text(row.description),
                   file_name=_text(row.file_name), date=date.isoformat(timespec="seconds"),
                   status=status, public_score=_score(row.public_score),
                   error=_text(row.error_description), competition=competition)

    def record(self) -> dict:
        """The submission as plain JSON values."""
        return dataclasses.asdict(self)


def _score(text: object) -> float | None:
    """A listed public score as the competition's accuracy, a share 0..1; None where there
    is none or it is no such share (an old row's odd score must not stop the listing of
    every other, nor be recorded where the ledger would call the run damaged)."""
    try:
        score = float(text)
    except (TypeError, ValueError):
        return None
    return score if 0 <= score <= 1 else None  # NaN fails both


def _text(value: object) -> str:
    """A listed text field as text that UTF-8 can write: a lone surrogate (JSON's "\\ud83d")
    as its escape, since the run's report and ledger could not be written with it."""
    return str(value or "").encode("utf-8", "backslashreplace").decode("utf-8")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def check_upload_credentials(competition: str = COMPETITION) -> None:
    """Sign in as an upload will, before a run trains: missing, refused or damaged
    credentials are one DataError now, not after the whole run."""
    KaggleSession("upload", "nothing was trained: fix them, or leave --upload out and upload "
                  "later with --check FILE --upload", competition)


def upload_submission(csv_path: Path, message: str, competition: str = COMPETITION
                      ) -> Submission:
    """Submit csv_path to the competition; return the submission, pending. Raises DataError
    (one line, no credentials in it) when it cannot; the CSV is never touched."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError("a submission CSV", "no such file", file=csv_path)
    again = f"`python -m src.submit --check {csv_path} --upload -m MESSAGE`"
    keep = f"{csv_path} is kept; upload it later with {again}"
    session = KaggleSession("upload", keep, competition)
    # A request that failed midway (a time-out) may have delivered the file: look first.
    session.keep = (f"{csv_path} is kept; if the competition's My Submissions page does not "
                    f"list it, upload it later with {again}")
    sent = _now()  # before Kaggle gets it: the time Kaggle lists is not earlier
    reply = session.call("competition_submit", str(csv_path), message, competition, quiet=True)
    if reply.message == session.api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise DataError(f"an upload of {csv_path} to {competition!r}", "an unfinished upload",
                        column=session.where, hint=f"check the network connection; {keep}")
    return Submission(ref=int(getattr(reply, "ref", 0) or 0), message=message,
                      file_name=csv_path.name, date=sent.isoformat(), status="pending",
                      competition=competition)


def wait_for_score(submitted: Submission, minutes: float = WAIT_MINUTES,
                   poll_seconds: float = POLL_SECONDS,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep,
                   keep: str = f"the upload went through; {SYNC_LATER}") -> Submission:
    """Poll Kaggle's list of submissions until ``submitted`` is scored (complete or error)
    or ``minutes`` have passed, a line per poll; return its last known state. A failed
    request is a DataError ending with keep."""
    session = KaggleSession("score", keep, submitted.competition)
    limit = minutes * 60
    started = clock()
    while True:
        listing = _list_submissions(session, enough=1)  # the newest page
        current = find_submission(listing, submitted.ref, submitted.message,
                                  submitted.file_name, after=submitted.date) or submitted
        waited = clock() - started
        if current.status != "pending" or waited >= limit:
            return current
        print(f"kaggle: submission {current.ref or current.message!r} is {current.status}; "
              f"waited {format_duration(waited)} of at most {format_duration(limit)}",
              flush=True)
        sleep(min(poll_seconds, limit - waited))


def list_submissions(competition: str = COMPETITION) -> list[Submission]:
    """The user's newest submissions to the competition (about MOST_LISTED), newest first."""
    session = KaggleSession("submissions", "nothing was written", competition)
    return _list_submissions(session, MOST_LISTED)


def _list_submissions(session: KaggleSession, enough: int) -> list[Submission]:
    """Kaggle's listing read page by page until it has given ``enough`` rows or ends."""
    rows, listed, largest, page = [], 0, 0, 0
    while listed < enough:
        page += 1
        batch = session.call("competition_submissions", session.competition,
                             page_number=page, page_size=PAGE_SIZE) or []
        listed += len(batch)
        rows += [Submission.from_api(row, session.competition) for row in batch
                 if row is not None]
        # The last page is short, or empty: Kaggle may hold a page to fewer rows than
        # PAGE_SIZE asks, so a full one is as long as the first.
        largest = largest or len(batch)
        if len(batch) < largest or not batch:
            break
    return sorted(rows, key=lambda row: row.date, reverse=True)


def find_submission(listing: list[Submission], ref: int = 0, message: str = "",
                    file_name: str = "", after: str = "") -> Submission | None:
    """The listed submission with id ``ref``; where no id is known, the newest with this
    message and file name made at or after ``after`` (ISO 8601, less CLOCK_SKEW)."""
    if ref:
        return next((row for row in listing if row.ref == ref), None)
    for row in listing:
        if (row.message == message and row.file_name == file_name
                and (not after or _utc(row.date) >= _utc(after) - CLOCK_SKEW)):
            return row
    return None


def _utc(iso_date: str) -> datetime:
    """An ISO 8601 date as an aware UTC datetime (a naive one is taken as UTC)."""
    date = datetime.fromisoformat(iso_date)
    return date if date.tzinfo else date.replace(tzinfo=UTC)
