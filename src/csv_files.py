"""The competition's CSV files: their columns, and reading them with one-line errors.

read_digits_csv turns a train.csv or test.csv (or .csv.gz) into uint8 images and
labels. The fast path is pandas' C parser into integers, a chunk of rows at a time;
only the rows from a chunk that holds anything but integers in range are read again,
slowly and a chunk at a time, to name the first bad line and column in a DataError.
Their rows are numbers, one row a line: a quote is no part of them (a quoted cell could
span lines, and every line number after it would be wrong).
"""

from __future__ import annotations

import csv
import decimal
from pathlib import Path

import numpy as np
import pandas as pd

from src.csv_text import (
    READ_ERRORS,
    check_line_lengths,
    check_row_width,
    csv_syntax_error,
    first_nul_cell,
    first_true_cell,
    first_two_lines,
    line_fields,
    open_text,
    read_line,
    unreadable_error,
)
from src.errors import DataError
from src.util import is_file, not_a_file, shown

IMAGE_SHAPE = (28, 28, 1)
NUM_PIXELS = 28 * 28
NUM_CLASSES = 10
PIXEL_COLUMNS = [f"pixel{i}" for i in range(NUM_PIXELS)]
TRAIN_COLUMNS = ["label", *PIXEL_COLUMNS]


# Rows a pass parses at once: a bad row is read again slowly from its chunk on, in chunks
# (the whole of train.csv as text took 2.7 GB), and chunks of this size parse as fast as
# one pass.
CHUNK_ROWS = 4096

UTF16_WITHOUT_MARK = "UTF-16 text without a byte-order mark? save it as UTF-8"


def _check_header(path: Path, header: str, expected: list[str]) -> None:
    """DataError unless the header's text names the expected columns, in order."""
    if not header:
        raise DataError(f"a header row of {len(expected)} columns ({expected[0]}, ...)",
                        "an empty file", file=path, line=1)
    if "\0" in header:  # the checks below drop NUL bytes, as the readers of cells do
        raise DataError(f"a header row of {len(expected)} columns ({expected[0]}, ...)",
                        "NUL bytes", file=path, line=1, hint=UTF16_WITHOUT_MARK)
    # As csv reads it, so that a quoted name holding a comma is one name, as pandas reads it.
    names = [name.strip().strip('"') for name in line_fields(header) or header.split(",")]
    seen: set[str] = set()
    for position, (name, want) in enumerate(zip(names, expected, strict=False), start=1):
        if name != want:
            what = f"duplicate {shown(name)}" if name in seen else shown(name)
            raise DataError(repr(want), what, file=path, line=1, column=f"column {position}")
        seen.add(name)
    if len(names) != len(expected):
        raise DataError(f"{len(expected)} columns ({expected[0]}, ..., {expected[-1]})",
                        f"{len(names)}", file=path, line=1)


def _describe(value: object) -> str:
    text = str(value)
    return "an empty cell" if text.strip() == "" else shown(text)


def _column_limits(columns: list[str]) -> list[tuple[int, int]]:
    """Each column's (lowest, highest) value: label 0..9, pixels 0..255."""
    return [(0, NUM_CLASSES - 1) if name == "label" else (0, 255) for name in columns]


def _distinct_numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """A text column's distinct texts, each cell's index into them, and their numbers (NaN
    where none): a few hundred texts converted once, not every cell of a chunk."""
    codes, texts = pd.factorize(column)
    return codes, texts, pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce")


def _column_cells(column: pd.Series, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """A text column's cells as int16 numbers (0 where bad), and True for each cell that is
    not an integer low..high: both from one pass over its distinct texts."""
    codes, texts, numbers = _distinct_numbers(column)
    # a whole number written 3.0, 1e0 or ' 3' is one, as the fast path reads it
    bad = (numbers.isna() | (numbers.mod(1) != 0) | (numbers < low)
           | (numbers > high)).to_numpy(dtype=bool, copy=True)
    # ...but not 1e-400 or 255.0000000000000001, which float64 rounds to one
    bad[~bad] = [not _is_whole(text) for text in texts[~bad]]
    values = np.where(bad, 0, numbers.to_numpy(dtype=float, na_value=0)).astype(np.int16)
    return values[codes], bad[codes]


def _is_whole(text: str) -> bool:
    """Whether the number text writes is exactly a whole number (Decimal: no rounding)."""
    try:
        value = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:  # an exponent past Decimal's 10**18 (float read it
        # as a whole number): zero is one, any other such number 0 or infinity is not
        mantissa = text.strip().lower().partition("e")[0]
        return not any(digit in mantissa for digit in "123456789")
    return value.is_finite() and value == value.to_integral_value()


def _checked_cells(frame: pd.DataFrame, columns: list[str]
                   ) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """The frame's cells (text) as int16 values, and (row, column position, low, high) of
    its first cell, in file order, that is not an integer in its column's range, or None."""
    limits = _column_limits(columns)
    values = np.empty(frame.shape, np.int16)
    bad = np.empty(frame.shape, bool)
    for position, (low, high) in enumerate(limits):
        values[:, position], bad[:, position] = _column_cells(frame.iloc[:, position], low,
                                                              high)
    found = first_true_cell(bad)
    if found is None:
        return values, None
    row, position = found
    return values, (row, position, *limits[position])


def _blank_rows(frame: pd.DataFrame) -> pd.Series:
    """True for each row of a blank line (every cell, text, empty or spaces)."""
    blank = frame.iloc[:, 0].str.strip() == ""
    for name in frame.columns[1:]:  # only the rows still blank: few, if any
        if not blank.any():
            break
        blank[blank] = frame.loc[blank, name].str.strip() == ""
    return blank


def _read_slowly(path: Path, columns: list[str], skip_rows: int) -> np.ndarray:
    """Read the rows of a file the fast parse refused, from data row skip_rows on (the rows
    before it parsed), a chunk at a time so that memory stays small: return them as int16
    values if they are fine after all (blank lines at the file's end are dropped), else
    raise DataError at the first bad line and column."""
    skipped_lines = 1 + skip_rows  # the header and the rows already read
    check_row_width(path, skipped_lines + 1, read_line(path, skipped_lines + 1).split(","),
                     len(columns))
    kept = [np.empty((0, len(columns)), np.int16)]
    blank_from = None  # the first line of blank rows that may run to the file's end
    checked_to = skipped_lines  # the last line of the chunks checked
    with open_text(path) as handle:
        for _ in range(skipped_lines):
            handle.readline()
        try:
            # As text: pandas would read 1e-400 as 0.0, and True as a boolean.
            with pd.read_csv(handle, header=None, names=columns, na_filter=False, dtype=str,
                             skip_blank_lines=False, quoting=csv.QUOTE_NONE, low_memory=False,
                             chunksize=CHUNK_ROWS) as reader:
                for chunk in reader:
                    if len(chunk):
                        checked_to = skipped_lines + 1 + int(chunk.index[-1])
                    blank = _blank_rows(chunk)
                    if blank_from is not None:
                        if not blank.all():  # digits after a blank line
                            raise _blank_line_error(path, columns, blank_from)
                        continue
                    values, found = _checked_cells(chunk, columns)
                    if found is None:
                        kept.append(values)
                        continue
                    row, position, low, high = found
                    line = skipped_lines + 1 + int(chunk.index[0]) + row
                    if not blank.iloc[row:].all():
                        raise _bad_cell_error(path, columns, line, position, (low, high))
                    blank_from = line
                    kept.append(values[:row])
        except pd.errors.ParserError as error:
            syntax = csv_syntax_error(path, error, skipped_lines)
            if blank_from is not None:  # blank lines, then more: the first is the error
                raise _blank_line_error(path, columns, blank_from) from None
            # A row of the wrong width stops pandas before it hands over its chunk, whose
            # earlier lines may hold the first bad one.
            earlier = (_first_bad_line_between(path, columns, checked_to + 1, syntax.line)
                       if syntax.line is not None else None)
            raise (earlier or syntax) from None
    if blank_from is not None:
        _check_blank_to_the_end(path, columns, blank_from)
    return np.concatenate(kept)


def _first_bad_line_between(path: Path, columns: list[str], first: int,
                            last: int) -> DataError | None:
    """The DataError of the first bad line from line first up to (not with) line last,
    judged as the slow read judges a chunk; None when they are all fine."""
    lines = []
    with open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number >= last:
                break
            if number >= first:
                lines.append(text.rstrip("\r\n").split(","))
    # A blank line is one empty cell: of the wrong width, as a ragged row is.
    ragged = next((row for row, cells in enumerate(lines) if len(cells) != len(columns)),
                  len(lines))
    if ragged:
        _, found = _checked_cells(pd.DataFrame(lines[:ragged], columns=columns), columns)
        if found is not None:
            row, position, low, high = found
            return _bad_cell_error(path, columns, first + row, position, (low, high))
    if ragged < len(lines):
        return _bad_cell_error(path, columns, first + ragged, 0, _column_limits(columns)[0])
    return None


def _check_blank_to_the_end(path: Path, columns: list[str], first_line: int) -> None:
    """DataError at the first line from first_line on that holds more than spaces: pandas
    reads a row of empty cells (",") as it reads a blank line, but it is a row of no digits
    and was dropped with the blank lines after the last row."""
    with open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number >= first_line and text.strip():
                raise _bad_cell_error(path, columns, number, 0, _column_limits(columns)[0])


def _bad_cell_error(path: Path, columns: list[str], line: int, position: int,
                    limits: tuple[int, int]) -> DataError:
    """The DataError for a bad cell: a blank line, a row of the wrong length, or a value
    that is not an integer in the column's range, as the file writes it."""
    text = read_line(path, line)
    if text.strip() == "":
        return _blank_line_error(path, columns, line)
    cells = text.split(",")
    if len(cells) != len(columns):
        return DataError(f"{len(columns)} values", str(len(cells)), file=path, line=line)
    return DataError(f"an integer {limits[0]}..{limits[1]}", _describe(cells[position]),
                     file=path, line=line, column=columns[position])


def _blank_line_error(path: Path, columns: list[str], line: int) -> DataError:
    return DataError(f"{len(columns)} values", "a blank line", file=path, line=line)


def read_digits_csv(path: str | Path, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Kaggle train.csv (with_labels) or test.csv into uint8 images and int labels."""
    path = Path(path)
    if not is_file(path):
        raise DataError("a CSV file", not_a_file(path), file=path)
    columns = TRAIN_COLUMNS if with_labels else PIXEL_COLUMNS
    try:
        values = _read_values(path, columns)
        nul = first_nul_cell(path)
    except READ_ERRORS as error:
        raise unreadable_error(path, error, columns) from None
    if nul is not None:  # pandas read the cell as the digits before the NUL
        line, position, cell = nul
        low, high = _column_limits(columns)[min(position, len(columns) - 1)]
        raise DataError(f"an integer {low}..{high}", shown(cell), file=path, line=line,
                        column=columns[position] if position < len(columns) else None)
    if len(values) == 0:
        raise DataError("at least one row of digits", "only the header", file=path, line=2)
    pixels = values[:, 1:] if with_labels else values
    labels = values[:, 0].astype(np.int64) if with_labels else None
    return pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE), labels


def _read_values(path: Path, columns: list[str]) -> np.ndarray:
    """The file's header checked and its rows as int16 values, one column a header column,
    each an integer in its column's range; DataError for any bad value."""
    header, first_row = first_two_lines(path)
    _check_header(path, header, columns)
    check_row_width(path, 2, first_row.split(","), len(columns))
    check_line_lengths(path)
    chunks = [np.empty((0, len(columns)), np.int16)]
    try:
        # The fast path: C-parser passes into integers, no NaN handling, a chunk at a time,
        # so that only the rows from a bad row's chunk on are read again slowly.
        with pd.read_csv(path, na_filter=False, skip_blank_lines=False, low_memory=False,
                         quoting=csv.QUOTE_NONE, encoding="utf-8-sig",
                         chunksize=CHUNK_ROWS) as reader:
            for chunk in reader:
                chunks.append(_checked_int16(chunk, columns))
    except UnicodeDecodeError:  # a ValueError too, but no slower parse can read it
        raise
    except (ValueError, OverflowError, pd.errors.ParserError):
        skip_rows = sum(len(chunk) for chunk in chunks)
        chunks.append(_read_slowly(path, columns, skip_rows))
    return np.concatenate(chunks)


def _checked_int16(chunk: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A chunk's values as int16, when pandas read every column as integers in its range
    (label 0..9, pixels 0..255); else ValueError, for the slow read to name the cell.
    Not parsed straight into int16: pandas would read a column of True and False as 1
    and 0."""
    if not all(pd.api.types.is_integer_dtype(dtype) for dtype in chunk.dtypes):
        raise ValueError("a column that is not integers")
    values = chunk.to_numpy()
    lowest, highest = np.array(_column_limits(columns)).T
    if values.size and ((values < lowest).any() or (values > highest).any()):
        raise ValueError("a value out of its column's range")
    return values.astype(np.int16)
