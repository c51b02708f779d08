"""A run folder's probability files: what its ensemble said about every image.

``python -m src.submit`` writes two gzipped CSVs beside its submission, and
``python -m src.blend`` reads them back to average runs:

- ``oof.csv.gz``: one row per training image the run trained on, in train.csv's order
  (MNIST's training set's with --source keras; after --train-samples, the subsample's
  shuffled order): ``row`` (each image's 0-based row among those images),
  ``label``, and ``p0`` to ``p9``, the out-of-fold probabilities of the ensemble (each
  the mean of the fold models that never saw the image); when a search chose the members,
  last ``search_holdout``: 1 for the images it chose them on, 0 for the rest;
- ``test_probs.csv.gz``: one row per test image: ``ImageId`` and ``p0`` to ``p9``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from src.csv_files import NUM_CLASSES
from src.csv_text import first_true_cell, read_csv_as_text
from src.errors import DataError
from src.util import is_file, not_a_file, write_atomically

OOF_FILE = "oof.csv.gz"
TEST_FILE = "test_probs.csv.gz"
PROB_COLUMNS = [f"p{digit}" for digit in range(NUM_CLASSES)]
OOF_COLUMNS = ["row", "label", *PROB_COLUMNS]
TEST_COLUMNS = ["ImageId", *PROB_COLUMNS]
SEARCH_HOLDOUT = "search_holdout"
# Tolerance on a row's sum: the files keep 7 significant digits.
SUM_TOLERANCE = 1e-4


def _gzipped_csv(frame: pd.DataFrame) -> bytes:
    text = frame.to_csv(index=False, float_format="%.7g", lineterminator="\n")
    return gzip.compress(text.encode("utf-8"), mtime=0)


def write_probabilities(run_dir: Path, y_train: np.ndarray, oof_probs: np.ndarray,
                        test_ids: np.ndarray, test_probs: np.ndarray,
                        search_holdout: np.ndarray | None = None,
                        train_rows: np.ndarray | None = None) -> None:
    """Write OOF_FILE and TEST_FILE into run_dir, each atomically; search_holdout: which
    training images the search chose the members on (a boolean per image), if any;
    train_rows: each image's row in train.csv where the run trained on a subsample."""
    oof = pd.DataFrame(oof_probs, columns=PROB_COLUMNS)
    oof.insert(0, "label", np.asarray(y_train, dtype=np.int64))
    oof.insert(0, "row", np.arange(len(oof)) if train_rows is None
               else np.asarray(train_rows, dtype=np.int64))
    if search_holdout is not None:
        oof[SEARCH_HOLDOUT] = np.asarray(search_holdout, dtype=np.int64)
    test = pd.DataFrame(test_probs, columns=PROB_COLUMNS)
    test.insert(0, "ImageId", np.asarray(test_ids, dtype=np.int64))
    write_atomically(run_dir / OOF_FILE, _gzipped_csv(oof))
    write_atomically(run_dir / TEST_FILE, _gzipped_csv(test))


def _read_frame(path: Path, columns: list[str], optional: str | None = None) -> pd.DataFrame:
    """The file's rows as text, its header checked (columns, then optional or not);
    DataError for anything unreadable."""
    if not is_file(path):
        found = not_a_file(path)
        raise DataError(f"{path.name}, which python -m src.submit writes in a run folder",
                        found, file=path,
                        hint="runs older than this file do not have it: rerun their "
                        "python -m src.submit command, which reuses their fold models"
                        if found == "no such file" else None)
    frame = read_csv_as_text(path, columns)
    if list(frame.columns) not in (columns, [*columns, optional]):
        found = ",".join(map(str, frame.columns))
        raise DataError(f"columns {','.join(columns)}",
                        found if found.isprintable() else repr(found), file=path, line=1)
    if len(frame) == 0:
        raise DataError("at least one row", "only the header", file=path, line=2)
    return frame


def _probabilities(frame: pd.DataFrame, path: Path) -> np.ndarray:
    """The p0..p9 columns as float64 (N, 10), each a probability, each row summing to 1."""
    text = frame[PROB_COLUMNS]
    probs = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = first_true_cell(~np.isfinite(probs) | (probs < 0) | (probs > 1))
    if bad is not None:
        row, col = bad
        raise DataError("a probability 0..1", repr(text.iat[row, col]), file=path,
                        line=row + 2, column=PROB_COLUMNS[col])
    sums = probs.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > SUM_TOLERANCE)
    if len(off):
        row = int(off[0])
        raise DataError("probabilities that sum to 1", f"a sum of {sums[row]:.6g}", file=path,
                        line=row + 2, column="p0..p9")
    return probs


def _check_column(frame: pd.DataFrame, column: str, expected: np.ndarray, path: Path,
                  what: str) -> None:
    """DataError at the first row whose column is not the expected whole number."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    other_data = ("is it a run on other data, or on a --train-samples subset? give the "
                  "--source and --data-dir it ran on; a subset's runs are neither blended nor "
                  "compared")
    if len(values) != len(expected):
        raise DataError(f"{len(expected)} rows, one per {what}", str(len(values)), file=path,
                        hint=other_data)
    bad = np.flatnonzero(values != expected)  # NaN is never equal
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{expected[row]}, as in the data", repr(frame[column].iat[row]),
                        file=path, line=row + 2, column=column, hint=other_data)


def read_oof(run_dir: Path, y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The run's OOF probabilities (N, 10), checked to be of these N labelled images, and
    which of them its search chose the members on (booleans; None without a search)."""
    path = Path(run_dir) / OOF_FILE
    frame = _read_frame(path, OOF_COLUMNS, optional=SEARCH_HOLDOUT)
    _check_column(frame, "row", np.arange(len(y_train)), path, "training image")
    _check_column(frame, "label", np.asarray(y_train), path, "training image")
    search_holdout = None
    if SEARCH_HOLDOUT in frame.columns:
        flags = frame[SEARCH_HOLDOUT].to_numpy()
        bad = np.flatnonzero(~np.isin(flags, ["0", "1"]))
        if len(bad):
            raise DataError("0 or 1", repr(flags[bad[0]]), file=path, line=int(bad[0]) + 2,
                            column=SEARCH_HOLDOUT)
        search_holdout = flags == "1"
    return _probabilities(frame, path), search_holdout


def any_search_holdout(flags: list[np.ndarray | None]) -> np.ndarray | None:
    """The images that any of the runs' searches chose its members on (read_oof's flags);
    None when no run came from a search."""
    chosen_on = [held for held in flags if held is not None]
    return np.logical_or.reduce(chosen_on) if chosen_on else None


def read_test(run_dir: Path, test_ids: np.ndarray) -> np.ndarray:
    """The run's test probabilities (M, 10), checked to be of these M test images."""
    path = Path(run_dir) / TEST_FILE
    frame = _read_frame(path, TEST_COLUMNS)
    _check_column(frame, "ImageId", np.asarray(test_ids), path, "test image")
    return _probabilities(frame, path)
