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
import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from src.errors import DataError
from src.util import not_a_file, shown

IMAGE_SHAPE = (28, 28, 1)
NUM_PIXELS = 28 * 28
NUM_CLASSES = 10
PIXEL_COLUMNS = [f"pixel{i}" for i in range(NUM_PIXELS)]
TRAIN_COLUMNS = ["label", *PIXEL_COLUMNS]


# Rows a pass parses at once: a bad row is read again slowly from its chunk on, in chunks
# (the whole of train.csv as text took 2.7 GB), and chunks of this size parse as fast as
# one pass.
CHUNK_ROWS = 4096

# What reading a file can raise before any of its values is seen: bytes that are not
# UTF-8, a .gz that is not gzip or is cut short, a disk that fails.
LONGEST_LINE = 1 << 20  # characters: a row of 785 numbers is at most a few thousand
READ_ERRORS = (UnicodeDecodeError, OSError, EOFError, zlib.error)
# The first bytes of a .csv that is not UTF-8 text, and what to do about it.
FILE_SIGNATURES = {b"\x1f\x8b": "it is gzip-compressed: add .gz to its name",
                   b"PK\x03\x04": "it is a zip archive: unzip it",
                   b"\xff\xfe": "it is UTF-16 text: save it as UTF-8",
                   b"\xfe\xff": "it is UTF-16 text: save it as UTF-8"}


def _open_text(path: Path):
    """A text handle on a .csv or .csv.gz; a UTF-8 byte-order mark is dropped."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_line(path: Path, line_number: int) -> str:
    """The text of one 1-based line of the file (a bad line, or a row after some parsed)."""
    with _open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number == line_number:
                return text.rstrip("\r\n")
    return ""


def _first_two_lines(path: Path) -> tuple[str, str]:
    """The header's text and the first row's, read in one pass ("" past the file's end), each
    cut at LONGEST_LINE characters: a .gz of a few megabytes can unpack to gigabytes with no
    line break, and the checks of these two lines refuse anything that long."""
    with _open_text(path) as handle:
        return (handle.readline(LONGEST_LINE).rstrip("\r\n"),
                handle.readline(LONGEST_LINE).rstrip("\r\n"))


def error_name(error: BaseException) -> str:
    """EOFError, gzip.BadGzipFile, zlib.error: the exception's type as Python prints it."""
    kind = type(error)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _field_name(line_text: bytes, offset: int, line: int, columns: list[str]) -> str:
    """The column that byte offset of a line falls in: its name, or its position in the header."""
    position = line_text.count(b",", 0, offset)
    if line == 1 or position >= len(columns):
        return f"column {position + 1}"
    return columns[position]


def unreadable_error(path: Path, error: BaseException, columns: list[str]) -> DataError:
    """The DataError for a file that cannot be read as text (error is one of READ_ERRORS):
    the line and column of its first byte that is not UTF-8, or the line where a damaged
    archive breaks off. Reads the file again, line by line: the failure path only."""
    line, text = 0, b""
    compressed = path.suffix == ".gz"
    try:
        with (gzip.open if compressed else open)(path, "rb") as handle:
            for text in handle:
                line += 1
                text.decode("utf-8")  # a line break is never part of a multi-byte character
    except UnicodeDecodeError as bad:
        hint = None
        if line == 1 and not compressed:
            hint = next((what for signature, what in FILE_SIGNATURES.items()
                         if text.startswith(signature)), None)
        return DataError("UTF-8 text", f"byte {text[bad.start]:#04x}", file=path, line=line,
                         column=_field_name(text, bad.start, line, columns), hint=hint)
    except (OSError, EOFError, zlib.error) as broken:
        expected = "a gzip archive" if compressed else "a readable file"
        return DataError(expected, f"{error_name(broken)}: {broken}", file=path,
                         line=line + 1 if line else None)
    # The file reads whole now: say what failed the first time.
    return DataError("a readable file", f"{error_name(error)}: {error}", file=path)


def _check_header(path: Path, header: str, expected: list[str]) -> None:
    """DataError unless the header's text names the expected columns, in order."""
    if not header:
        raise DataError(f"a header row of {len(expected)} columns ({expected[0]}, ...)",
                        "an empty file", file=path, line=1)
    # As csv reads it, so that a quoted name holding a comma is one name, as pandas reads it.
    names = [name.strip().strip('"') for name in _fields(header) or header.split(",")]
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


def _bad_cells(column: pd.Series, low: int, high: int) -> np.ndarray:
    """True for each cell of the column that is not an integer low..high."""
    if pd.api.types.is_bool_dtype(column.dtype):  # pandas reads True and False as booleans
        return np.ones(len(column), bool)
    if pd.api.types.is_integer_dtype(column.dtype):
        return ((column < low) | (column > high)).to_numpy()
    # a whole number written 3.0, 1e0 or ' 3' is one, as the fast path reads it
    numbers = pd.to_numeric(column, errors="coerce")
    return (numbers.isna() | (numbers.mod(1) != 0) | (numbers < low) | (numbers > high)).to_numpy()


def _first_bad_cell(frame: pd.DataFrame, columns: list[str]) -> tuple[int, int, int, int] | None:
    """(row, column position, low, high) of the frame's first cell, in file order, that is
    not an integer in its column's range, or None."""
    limits = _column_limits(columns)
    bad = np.column_stack([_bad_cells(frame.iloc[:, position], low, high)
                           for position, (low, high) in enumerate(limits)])
    found = first_true_cell(bad)
    if found is None:
        return None
    row, position = found
    return row, position, *limits[position]


def _blank_rows(frame: pd.DataFrame) -> pd.Series:
    """True for each row of a blank line (every cell empty or spaces)."""
    return frame.astype(str).apply(lambda column: column.str.strip() == "").all(axis=1)


def _as_int16(chunk: pd.DataFrame) -> np.ndarray:
    """Checked rows as int16 values; a column read as text (a blank line in its chunk) may
    hold whole numbers written 3.0 or 1e0, which int() would refuse."""
    return chunk.apply(pd.to_numeric).to_numpy(np.int16)


def _read_slowly(path: Path, columns: list[str], skip_rows: int) -> np.ndarray:
    """Read the rows of a file the fast parse refused, from data row skip_rows on (the rows
    before it parsed), a chunk at a time so that memory stays small: return them as int16
    values if they are fine after all (blank lines at the file's end are dropped), else
    raise DataError at the first bad line and column."""
    skipped_lines = 1 + skip_rows  # the header and the rows already read
    _check_row_width(path, skipped_lines + 1, _read_line(path, skipped_lines + 1).split(","),
                     len(columns))
    kept = [np.empty((0, len(columns)), np.int16)]
    blank_from = None  # the first line of blank rows that may run to the file's end
    with _open_text(path) as handle:
        for _ in range(skipped_lines):
            handle.readline()
        try:
            with pd.read_csv(handle, header=None, names=columns, na_filter=False,
                             skip_blank_lines=False, quoting=csv.QUOTE_NONE, low_memory=False,
                             chunksize=CHUNK_ROWS) as reader:
                for chunk in reader:
                    blank = _blank_rows(chunk)
                    if blank_from is not None:
                        if not blank.all():  # digits after a blank line
                            raise _blank_line_error(path, columns, blank_from)
                        continue
                    found = _first_bad_cell(chunk, columns)
                    if found is None:
                        kept.append(_as_int16(chunk))
                        continue
                    row, position, low, high = found
                    line = skipped_lines + 1 + int(chunk.index[0]) + row
                    if not blank.iloc[row:].all():
                        raise _bad_cell_error(path, columns, line, position, (low, high))
                    blank_from = line
                    kept.append(_as_int16(chunk.iloc[:row]))
        except pd.errors.ParserError as error:
            raise csv_syntax_error(path, error, skipped_lines) from None
    if blank_from is not None:
        _check_blank_to_the_end(path, columns, blank_from)
    return np.concatenate(kept)


def _check_blank_to_the_end(path: Path, columns: list[str], first_line: int) -> None:
    """DataError at the first line from first_line on that holds more than spaces: pandas
    reads a row of empty cells (",") as it reads a blank line, but it is a row of no digits
    and was dropped with the blank lines after the last row."""
    with _open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number >= first_line and text.strip():
                raise _bad_cell_error(path, columns, number, 0, _column_limits(columns)[0])


def _bad_cell_error(path: Path, columns: list[str], line: int, position: int,
                    limits: tuple[int, int]) -> DataError:
    """The DataError for a bad cell: a blank line, a row of the wrong length, or a value
    that is not an integer in the column's range, as the file writes it."""
    text = _read_line(path, line)
    if text.strip() == "":
        return _blank_line_error(path, columns, line)
    cells = text.split(",")
    if len(cells) != len(columns):
        return DataError(f"{len(columns)} values", str(len(cells)), file=path, line=line)
    return DataError(f"an integer {limits[0]}..{limits[1]}", _describe(cells[position]),
                     file=path, line=line, column=columns[position])


def _blank_line_error(path: Path, columns: list[str], line: int) -> DataError:
    return DataError(f"{len(columns)} values", "a blank line", file=path, line=line)


def csv_syntax_error(path: Path, error: Exception, line_offset: int = 0) -> DataError:
    """The DataError for pandas' ParserError: a row of the wrong length (as many values
    expected as the header, or the names pandas was given, holds), or an open quote.
    line_offset: the lines read before pandas was handed the file (its line numbers start
    after them)."""
    message = str(error).strip()
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if ragged is not None:
        return DataError(f"{ragged.group(1)} values", ragged.group(3), file=path,
                         line=int(ragged.group(2)) + line_offset)
    open_quote = re.search(r"EOF inside string starting at row (\d+)", message)
    if open_quote is not None:  # pandas counts rows from 0, the header included
        return DataError("a closing quote", "the end of the file", file=path,
                         line=int(open_quote.group(1)) + 1 + line_offset)
    return DataError("a well-formed CSV", " ".join(message.split()), file=path)


def read_csv_checked(path: Path, columns: list[str] | None, expected: str,
                     **read_options) -> pd.DataFrame:
    """pd.read_csv(path, **read_options) of a CSV (plain or .gz), a UTF-8 byte-order mark
    dropped: bytes that are not UTF-8, a damaged archive, a ragged row, an open quote, an
    empty file (``expected``: what it should have held) or a row that pandas would read
    shifted is a DataError naming the file (and the line, where there is one). columns:
    the header expected, for the messages; None where the file's own header says."""
    try:
        header_text, first_row = _first_two_lines(path)
        header = _fields(header_text)  # none: a blank first line, which pandas skips
        if header:  # before a ragged row later is named
            _check_row_width(path, 2, _fields(first_row), len(header))
        frame = pd.read_csv(path, encoding="utf-8-sig", **read_options)
    except READ_ERRORS as error:
        raise unreadable_error(path, error, columns or []) from None
    except pd.errors.ParserError as error:
        raise csv_syntax_error(path, error) from None
    except pd.errors.EmptyDataError:
        raise DataError(expected, "an empty file", file=path, line=1) from None
    return frame


def _fields(text: str) -> list[str]:
    """The values of one line as csv reads them; none where csv cannot (a field past its
    size limit: no check, pandas says what is wrong). NUL bytes are dropped: Python 3.10's
    csv refuses a line holding one."""
    try:
        return next(csv.reader([text.replace("\0", "")]), [])
    except csv.Error:
        return []


def read_csv_as_text(path: Path, columns: list[str]) -> pd.DataFrame:
    """Every cell of a CSV (plain or .gz) as text, for a caller to check against columns;
    anything unreadable is a DataError, as read_csv_checked says. The frame's columns are
    named as the file writes them, for the caller's message: pandas would rename a
    duplicate (ImageId.1) or a blank name (Unnamed: 0). A blank line is a row of empty
    cells, refused at its line: pandas would skip it, and every line number after it
    would be one short. Blank lines after the last row are dropped: an editor's."""
    expected = f"columns {','.join(columns)}"
    frame = read_csv_checked(path, columns, expected, dtype=str, na_filter=False,
                             skip_blank_lines=False)
    header = _fields(_first_two_lines(path)[0])
    if not header:  # a blank first line: pandas would take the next for the header
        raise DataError(expected, "a blank line", file=path, line=1)
    blank = _blank_lines(path, frame)
    filled = np.flatnonzero(~blank)
    frame = frame.iloc[:filled[-1] + 1 if len(filled) else 0]
    if blank[:len(frame)].any():
        line = int(np.argmax(blank)) + 2  # the header is line 1
        raise DataError(f"{len(columns)} values", "a blank line", file=path, line=line)
    if len(header) == len(frame.columns):
        frame.columns = header
    return frame


def _blank_lines(path: Path, frame: pd.DataFrame) -> np.ndarray:
    """Which rows of a frame read with skip_blank_lines=False were lines of nothing but
    spaces. A row of empty cells (",") is a row, for the caller to name its cells: only
    the line's text tells the two apart, read when some row's cells are all empty."""
    cells_empty = frame.apply(lambda column: column.str.strip().eq("")).all(axis=1).to_numpy()
    blank = np.zeros(len(frame), dtype=bool)
    if cells_empty.any():
        with _open_text(path) as handle:
            # the lines as pandas splits them (str.splitlines also splits at \f, \x85, ...)
            lines = re.split(r"\r\n|\r|\n", handle.read())[1:]  # the header is line 1
        for row in np.flatnonzero(cells_empty):
            blank[row] = row >= len(lines) or not lines[row].strip()
    return blank


def _check_row_width(path: Path, line: int, fields: list[str], width: int) -> None:
    """DataError when the row on line (its values), the first a parse is handed, has more
    values than the header: pandas would take its first ones as every row's index and
    read them all shifted (a file whose rows all end in an extra value would load wrong)."""
    if len(fields) > width:
        raise DataError(f"{width} values", str(len(fields)), file=path, line=line)


def first_true_cell(mask: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first True of a 2-D mask, row by row (file order); None when
    none is."""
    if not mask.any():
        return None
    row = int(np.argmax(mask.any(axis=1)))
    return row, int(np.argmax(mask[row]))


def read_digits_csv(path: str | Path, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Kaggle train.csv (with_labels) or test.csv into uint8 images and int labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError("a CSV file", not_a_file(path), file=path)
    columns = TRAIN_COLUMNS if with_labels else PIXEL_COLUMNS
    try:
        values = _read_values(path, columns)
    except READ_ERRORS as error:
        raise unreadable_error(path, error, columns) from None
    if len(values) == 0:
        raise DataError("at least one row of digits", "only the header", file=path, line=2)
    pixels = values[:, 1:] if with_labels else values
    labels = values[:, 0].astype(np.int64) if with_labels else None
    return pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE), labels


def _read_values(path: Path, columns: list[str]) -> np.ndarray:
    """The file's header checked and its rows as int16 values, one column a header column,
    each an integer in its column's range; DataError for any bad value."""
    header, first_row = _first_two_lines(path)
    _check_header(path, header, columns)
    _check_row_width(path, 2, first_row.split(","), len(columns))
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
