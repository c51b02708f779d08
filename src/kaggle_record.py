"""A Kaggle submission recorded in a published run: ``kaggle`` in its metrics.json and a
line under the OOF accuracy in report.md and report.html (python -m src.submit --upload,
--check --upload, and python -m src.runs --sync)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from src.document import Paragraph
from src.errors import DataError
from src.metrics import ENSEMBLE, as_json_types
from src.run_metrics import read_run_metrics
from src.util import one_line, remove_stale_partials, write_all_atomically

OPENING, CLOSING = "<!-- kaggle -->", "<!-- /kaggle -->"
KAGGLE_BLOCK = re.compile(f"{re.escape(OPENING)}.*?{re.escape(CLOSING)}", re.S)


def kaggle_line(record: dict, oof: dict | None = None, in_run: bool = True) -> str:
    """One line on the run's Kaggle submission (kaggle_api.Submission.record()): the public
    score beside the OOF accuracy, or why there is no score. A CSV that is no run's
    (in_run False) has no folder for src.runs --sync to record its score in."""
    submitted = f"submitted {record['date'][:16].replace('T', ' ')} UTC as {record['message']!r}"
    if record["status"] == "complete" and record["public_score"] is not None:
        beside = f" beside {oof['accuracy']:.3%} out of fold" if oof else ""
        return (f"Kaggle public score: {record['public_score']:.5f} "
                f"({record['public_score']:.3%}){beside}; {submitted}")
    if record["status"] == "error":
        return f"Kaggle could not score the submission ({record['error']!r}); {submitted}"
    if record["status"] == "complete":  # Kaggle's score was missing, or no share 0..1
        return (f"Kaggle lists the submission as scored but gives no public score (an "
                f"accuracy 0..1 was expected); {submitted}")
    later = ("python -m src.runs --sync fetches the score" if in_run
             else "its score is on the competition's My Submissions page")
    return f"Kaggle has not scored the submission yet ({record['status']}); {submitted}; {later}"


def read_run_files(run_dir: Path) -> tuple[dict, dict[str, str]]:
    """A published run's metrics (checked) and the text of its report.md and report.html
    (those there): what recording a Kaggle score rewrites. DataError when one is damaged."""
    run_dir = Path(run_dir)
    metrics = read_run_metrics(run_dir)
    reports = {}
    for name in ("report.md", "report.html"):
        path = run_dir / name
        if path.is_file():
            try:
                reports[name] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise DataError("the report python -m src.submit wrote", one_line(error),
                                file=path) from None
            _check_kaggle_markers(path, reports[name])
    return metrics, reports


def _check_kaggle_markers(path: Path, document: str) -> None:
    """DataError unless the report's Kaggle markers are absent or one pair in order: with
    one edited away, the next record would add a second line, then replace whatever text
    stood between the old opening marker and the new closing one."""
    opening, closing = document.count(OPENING), document.count(CLOSING)
    if (opening, closing) == (0, 0) or (
            (opening, closing) == (1, 1) and document.index(OPENING) < document.index(CLOSING)):
        return
    raise DataError(f"the Kaggle line between one {OPENING} and one {CLOSING}",
                    f"{opening} and {closing} of them", file=path,
                    hint="mend the markers by hand, or delete both with the line between them")


def record_kaggle(run_dir: Path, record: dict) -> dict:
    """Add a Kaggle submission to a published run: ``kaggle`` in metrics.json and its line
    under the OOF accuracy in report.md and report.html (replacing an earlier one); return
    the metrics. Every file is read and checked before any is rewritten, and all are
    rewritten together, so a damaged one or a full disk is a DataError that leaves the run
    as it was."""
    run_dir = Path(run_dir)
    remove_stale_partials(run_dir)  # what an earlier record, killed mid-write, left
    metrics, reports = read_run_files(run_dir)
    metrics["kaggle"] = as_json_types(record)
    line = Paragraph(kaggle_line(metrics["kaggle"], metrics[ENSEMBLE]), strong=True)
    first_sections = {"report.md": (line.markdown(), "\n## "),
                      "report.html": (line.html(), "\n<h2>")}
    rewritten = {run_dir / name: _with_kaggle_block(document, *first_sections[name])
                 for name, document in reports.items()}
    # metrics.json last: --sync compares Kaggle's state with it alone, so a record cut short
    # after it would leave the reports stale for good.
    rewritten[run_dir / "metrics.json"] = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    write_all_atomically(rewritten)
    return metrics


def _with_kaggle_block(document: str, text: str, first_section: str) -> str:
    """document with text between the Kaggle markers: in place of an earlier block, else
    just before the first section heading (the end where there is none)."""
    block = f"{OPENING}\n{text}\n{CLOSING}"
    if KAGGLE_BLOCK.search(document):
        return KAGGLE_BLOCK.sub(lambda match: block, document, count=1)
    at = document.find(first_section)
    at = len(document) if at < 0 else at + 1
    return f"{document[:at]}{block}\n\n{document[at:]}"
