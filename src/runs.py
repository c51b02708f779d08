"""``python -m src.runs``: every run in submissions/, its CV score beside its leaderboard score.

Reads each run folder's metrics.json (written by src.report; the Kaggle loop of
``python -m src.submit --upload`` adds a ``kaggle`` record), prints one row a
run, and writes beside the runs ``runs.csv`` (the ledger) and ``runs.png`` (OOF
accuracy against the public score: whether the cross-validation can be
trusted), each atomically. ``--sync`` first asks Kaggle for the state of
earlier uploads and records it in the runs they came from.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from src import kaggle_api
from src.config import OneLineParser, path_flag, run_cli
from src.errors import DataError
from src.figures import cv_against_public_png
from src.kaggle_record import record_kaggle
from src.run_folders import RUN_ID_TIME, list_run_folders
from src.run_metrics import read_run_metrics
from src.util import NOT_ONE_LINE, is_plain_text, printable, write_all_atomically

SORTS = {"date": "newest first", "oof": "best OOF accuracy first",
         "lb": "best public score first"}
COLUMNS = ["run", "date", "profile", "minutes", "members", "oof", "oof_low", "oof_high",
           "public_score", "status", "message"]
NUMBERS = {"min", "OOF", "public"}  # right-aligned columns of the printed ledger
# The public column of a run without a public score, by its Kaggle status ("": never
# uploaded; complete: scored, but Kaggle gave no readable score).
NO_SCORE = {"": "-", "complete": "no score"}


def run_date(run_dir: Path) -> datetime:
    """When the run was published, from its name (UTC: submit names it once its models
    have trained), else when its submission.csv was written (not metrics.json, which each
    Kaggle score recorded rewrites)."""
    try:
        return datetime.strptime(run_dir.name[:15], RUN_ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        written = run_dir / "submission.csv"
        if not written.is_file():
            written = run_dir / "metrics.json"
        return datetime.fromtimestamp(written.stat().st_mtime, UTC)


def read_run(run_dir: Path) -> dict | None:
    """The ledger row of one run; one warning line and None when its metrics.json is damaged
    or its name holds a line break or bytes that are not UTF-8 (the row could be neither
    printed nor written to runs.csv)."""
    if not is_plain_text(run_dir.name):
        warnings.warn(f"{run_dir}: expected a run folder named in text on one line, found "
                      f"{NOT_ONE_LINE}; skipped", stacklevel=2)
        return None
    try:
        metrics = read_run_metrics(run_dir)
    except DataError as error:
        warnings.warn(f"{error}; skipped", stacklevel=2)
        return None
    kaggle = metrics.get("kaggle") or {}
    info = metrics["run_info"]
    return {"run": run_dir.name, "date": run_date(run_dir).strftime("%Y-%m-%d %H:%M"),
            "profile": info["profile"],
            "minutes": round(metrics["timings"]["total"] / 60, 2),
            "members": "+".join(metrics["models"]),
            "oof": metrics["ensemble"]["accuracy"],
            "oof_low": metrics["ensemble"]["ci95_low"],
            "oof_high": metrics["ensemble"]["ci95_high"],
            "public_score": kaggle.get("public_score"), "status": kaggle.get("status", ""),
            "message": kaggle.get("message", "")}


def ledger(submissions_dir: Path) -> pd.DataFrame:
    """One row per readable run folder, columns COLUMNS."""
    rows = [row for row in map(read_run, list_run_folders(submissions_dir)) if row is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def sort_ledger(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """The ledger newest first, or by OOF accuracy or public score, best first (runs
    without a public score last)."""
    key = {"date": "date", "oof": "oof", "lb": "public_score"}[by]
    newest_first = frame.sort_values(["date", "run"], ascending=False, kind="stable",
                                     key=_numbers_in_order)
    return newest_first.sort_values(key, ascending=False, kind="stable",
                                    na_position="last").reset_index(drop=True)


def _numbers_in_order(column: pd.Series) -> pd.Series:
    """Run names with their number padded, so that run X-10, the tenth of a second, sorts
    after X-2 (numbered_names); other columns as they are."""
    if column.name != "run":
        return column
    return column.str.replace(r"-(\d+)$", lambda found: f"-{int(found[1]):03d}", regex=True)


def format_ledger(frame: pd.DataFrame) -> str:
    """The ledger as a plain-text table for the terminal: text left, numbers right."""
    public = [f"{score:.3%}" if pd.notna(score) else NO_SCORE.get(status, status)
              for score, status in zip(frame["public_score"], frame["status"], strict=True)]
    columns = {
        "run": frame["run"], "date (UTC)": frame["date"], "profile": frame["profile"],
        "min": frame["minutes"].map("{:.1f}".format), "members": frame["members"],
        "OOF": frame["oof"].map("{:.3%}".format),
        "95% CI": [f"{low:.2%}-{high:.2%}" for low, high in zip(frame["oof_low"],
                                                             frame["oof_high"], strict=True)],
        "public": public, "message": frame["message"]}
    # A message is the user's text: a line break in it would split its row.
    cells = {header: [printable(str(value)) for value in values]
             for header, values in columns.items()}
    widths = {header: max([len(header), *map(len, values)]) for header, values in cells.items()}

    def line(values) -> str:
        return "  ".join(value.rjust(widths[header]) if header in NUMBERS
                         else value.ljust(widths[header])
                         for header, value in zip(cells, values, strict=True)).rstrip()

    return "\n".join([line(cells), *(line(row) for row in zip(*cells.values(), strict=True))])


def write_ledger(frame: pd.DataFrame, submissions_dir: Path) -> list[Path]:
    """Write runs.csv and, when a run has a public score, runs.png, together; return the
    paths. With no score left (a run uploaded again, pending), an older runs.png goes: it
    would plot a score the ledger no longer has."""
    figure = submissions_dir / "runs.png"
    contents: dict[Path, str | bytes] = {
        submissions_dir / "runs.csv": frame.to_csv(index=False, lineterminator="\n")}
    png = cv_against_public_png(frame)
    if png is not None:
        contents[figure] = png
    write_all_atomically(contents)  # never a new csv beside an old png
    if png is None and figure.is_file():
        figure.unlink()
    return list(contents)


def sync_scores(submissions_dir: Path) -> str:
    """Ask Kaggle for the user's submissions and record each run's latest state in its
    metrics.json and report; return a one-line summary."""
    runs = [(run_dir, _metrics_or_none(run_dir)) for run_dir in list_run_folders(submissions_dir)]
    runs = [(run_dir, metrics) for run_dir, metrics in runs if metrics is not None]
    if not runs:
        return "sync: no runs to record scores in"
    listing = kaggle_api.list_submissions()
    updated = 0
    for run_dir, metrics in runs:
        found = match_submission(listing, run_dir, metrics.get("kaggle"))
        if found is not None and _changed(metrics.get("kaggle"), found.record()):
            try:
                record_kaggle(run_dir, found.record())
            except DataError as error:  # a damaged report: the other runs still get theirs
                warnings.warn(f"{error}; its score is not recorded", stacklevel=2)
                continue
            updated += 1
    return (f"sync: {len(listing)} submission{'' if len(listing) == 1 else 's'} on Kaggle; "
            f"{updated} run{'' if updated == 1 else 's'} updated")


def match_submission(listing: list[kaggle_api.Submission], run_dir: Path, record: dict | None
                     ) -> kaggle_api.Submission | None:
    """The run's submission in Kaggle's listing: by its recorded id; by its recorded message
    and file name, made after the run was published; or, never recorded, by the run id the default
    message carries."""
    if record and record.get("ref"):
        return kaggle_api.find_submission(listing, ref=record["ref"])
    if record:
        return kaggle_api.find_submission(listing, message=record.get("message", ""),
                                          file_name=record.get("file_name", ""),
                                          after=run_date(run_dir).isoformat())
    by_id = re.compile(rf"\brun {re.escape(run_dir.name)}(?![\w-])")  # not run X in run X-2
    return next((row for row in listing if by_id.search(row.message) and
                 datetime.fromisoformat(row.date) >= run_date(run_dir) - kaggle_api.CLOCK_SKEW),
                None)


def _changed(old: dict | None, new: dict) -> bool:
    fields = ("ref", "status", "public_score", "error")
    return old is None or any(old.get(field) != new[field] for field in fields)


def _metrics_or_none(run_dir: Path) -> dict | None:
    """A run's metrics; None when damaged or oddly named (the ledger warns about it)."""
    if not is_plain_text(run_dir.name):
        return None
    try:
        return read_run_metrics(run_dir)
    except DataError:
        return None


def _parse_args(argv: Sequence[str] | None):
    parser = OneLineParser(prog="python -m src.runs", description="List every run in the "
                            "submissions folder, its OOF accuracy beside its public score; "
                            "write runs.csv and runs.png there.")
    parser.add_argument("--submissions-dir", default=None,
                        type=lambda text: Path(path_flag(text)),
                        help="where the run folders are (default: submissions)")
    parser.add_argument("--sort", choices=tuple(SORTS), default="date",
                        help="; ".join(f"{name}: {what}" for name, what in SORTS.items())
                        + " (default: date)")
    parser.add_argument("--sync", action="store_true", help="first fetch the public scores of "
                        "earlier uploads from Kaggle and record them in their runs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the ledger and write runs.csv and runs.png; with --sync, fetch the scores first."""
    args = _parse_args(argv)
    folder = args.submissions_dir or Path("submissions")
    if folder.exists() and not folder.is_dir():
        raise DataError("a folder of run folders", "a file", file=folder,
                        column="--submissions-dir")
    if args.submissions_dir is not None and not folder.exists():  # a typo, say
        raise DataError("a folder of run folders", "no such folder", file=folder,
                        column="--submissions-dir")
    if args.sync:
        print(sync_scores(folder), flush=True)
    frame = sort_ledger(ledger(folder), args.sort)
    if frame.empty:
        if (folder / "runs.csv").is_file():  # its runs are gone: it would still list them
            write_ledger(frame, folder)
        print(f"no runs in {folder}/ yet: `python -m src.submit` writes one")
        return 0
    print(format_ledger(frame))
    print("wrote " + ", ".join(str(path) for path in write_ledger(frame, folder)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
