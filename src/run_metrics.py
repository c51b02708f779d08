"""A published run's metrics.json read back: checked for the fields that the commands
reading it (src.runs, src.blend, src.compare, src.submit --check --upload, src.runs
--sync, and the bench and its curve through src.bench_runs) print, sum, plot and
rewrite, so that a damaged file is one DataError naming the field, never a traceback
halfway through a write."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from src.errors import DataError
from src.util import is_count, is_number, is_share, one_line, read_json


def _seconds(value: object) -> bool:
    return is_number(value) and value >= 0


def _text(value: object) -> bool:
    return isinstance(value, str)


def _names(value: object) -> bool:
    return isinstance(value, dict) and len(value) > 0


# (dotted key, the check, what it expects, whether it must be there)
FIELDS: list[tuple[str, Callable[[object], bool], str, bool]] = [
    ("ensemble.accuracy", is_share, "a share 0..1", True),
    ("ensemble.ci95_low", is_share, "a share 0..1", True),
    ("ensemble.ci95_high", is_share, "a share 0..1", True),
    ("ensemble.total", lambda value: is_count(value, 1), "an integer >= 1", False),
    ("ensemble.errors", lambda value: is_count(value, 0), "an integer >= 0", False),
    ("models", _names, "an object naming at least one member", True),
    ("timings.total", _seconds, "a number of seconds >= 0", True),
    ("run_info.command", _text, "text", True),
    ("run_info.profile", _text, "text", True),
    ("run_info.runs", _names, "an object naming the runs blended", False),
    ("run_info.repeats", lambda value: is_count(value, 1), "an integer >= 1", False),
    ("run_info.data", lambda value: isinstance(value, dict), "an object", False),
    ("run_info.data.train", _text, "text", False),
    ("run_info.data.test", _text, "text", False),
    ("kaggle", lambda value: value is None or isinstance(value, dict), "an object or null",
     False),
]
DATA_SETS = {"train": "training images", "test": "test images"}
# The submission record that `--upload` and `--sync` add (kaggle_api.Submission.record()).
KAGGLE_FIELDS: list[tuple[str, Callable[[object], bool], str, bool]] = [
    ("kaggle.status", _text, "text", True),
    ("kaggle.message", _text, "text", True),
    ("kaggle.date", _text, "text", True),
    ("kaggle.public_score", lambda value: is_share(value, or_null=True),
     "a share 0..1 or null", False),
    ("kaggle.ref", lambda value: is_count(value, 0), "an integer >= 0", False),
    ("kaggle.file_name", _text, "text", False),
    ("kaggle.error", _text, "text", False),
]


def _lookup(metrics: dict, dotted: str) -> object:
    """metrics["a"]["b"] for "a.b"; KeyError when a key on the way is missing."""
    value: object = metrics
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(dotted)
        value = value[key]
    return value


def metrics_problem(metrics: object) -> tuple[str, str, str] | None:
    """(field, expected, found) for the first field of a run's metrics that its readers
    cannot use; None when they all can."""
    if not isinstance(metrics, dict):
        return "metrics", "a JSON object", f"a JSON {type(metrics).__name__}"
    fields = list(FIELDS)
    if isinstance(metrics.get("kaggle"), dict):
        fields += KAGGLE_FIELDS
    run_info = metrics.get("run_info")
    if isinstance(run_info, dict) and "runs" not in run_info:  # a blend has no folds
        fields.append(("run_info.folds", lambda value: is_count(value, 2), "an integer >= 2",
                       True))
    for dotted, fits, expected, required in fields:
        try:
            value = _lookup(metrics, dotted)
        except KeyError:
            if required:
                return dotted, expected, "no such key"
            continue
        if not fits(value):
            return dotted, expected, json.dumps(value)[:80]
    return _accuracy_problem(metrics["ensemble"])


def _accuracy_problem(ensemble: dict) -> tuple[str, str, str] | None:
    """The ensemble's accuracy against its own errors and total (a hand-edited accuracy
    was printed and blended as fact), as metrics.score writes the three."""
    if "errors" not in ensemble or "total" not in ensemble:
        return None  # a run from before they were written
    errors, total = ensemble["errors"], ensemble["total"]
    if errors > total:
        return "ensemble.errors", f"at most ensemble.total ({total})", str(errors)
    expected = (total - errors) / total
    if not math.isclose(ensemble["accuracy"], expected, rel_tol=1e-12, abs_tol=1e-12):
        return ("ensemble.accuracy", f"{expected!r}, its errors ({errors}) of its total "
                f"({total})", json.dumps(ensemble["accuracy"]))
    return None


def read_run_metrics(run_dir: Path) -> dict:
    """The run folder's metrics.json; DataError naming the file and the field when it is
    missing, not JSON, or holds a field its readers cannot use (text where a number goes,
    NaN, a score above 1, negative minutes)."""
    path = Path(run_dir) / "metrics.json"
    try:
        metrics = read_json(path, finite=True)
    except FileNotFoundError:
        raise DataError("a run folder of python -m src.submit, with its metrics.json",
                        "no metrics.json", file=run_dir) from None
    except (OSError, ValueError) as error:
        raise DataError("the metrics.json of python -m src.submit", one_line(error),
                        file=path) from None
    problem = metrics_problem(metrics)
    if problem is not None:
        field, expected, found = problem
        raise DataError(expected, found, file=path, column=field)
    return metrics


def check_same_data(runs: dict[Path, dict], loaded: dict[str, str] | None = None,
                    data_sets: tuple[str, ...] = ("train", "test")) -> None:
    """DataError naming the first run whose metrics record other data (run_info.data: a
    hash of the training images and labels, and of the test images) than loaded, or than
    the first run that records it: its rows would be averaged or paired with other images
    (a train.csv shuffled within each digit passes every check of rows and labels).
    runs: each run's folder and metrics; runs from before the record pass."""
    for data_set in data_sets:
        images = DATA_SETS[data_set]
        expected = None if loaded is None else loaded.get(data_set)
        source = "the data loaded here"
        for folder, metrics in runs.items():
            data = metrics["run_info"].get("data")
            recorded = data.get(data_set) if isinstance(data, dict) else None
            if recorded is None:
                continue
            if expected is None:
                expected, source = recorded, str(folder)
            elif recorded != expected:
                raise DataError(f"a run of the same {images} as {source} (hash {expected})",
                                f"one of other {images} (hash {recorded})",
                                file=Path(folder) / "metrics.json",
                                column=f"run_info.data.{data_set}")
