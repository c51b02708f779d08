"""Reading the package's CSVs (plain or .gz) with one-line errors: a text handle that
drops a UTF-8 byte-order mark, a file's lines, the reasons pandas or the bytes refuse a
file as a DataError naming its line and column, and a CSV read as text for a caller to
check its cells (a submission, a run's probabilities). src.csv_files reads the digits.
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
from src.util import shown

LONGEST_LINE = 1 << 20  # characters: a row of 785 numbers is at most a few thousand
# What reading a file can raise before any of its values is seen: bytes that are not
# UTF-8, a .gz that is not gzip or is cut short, a disk that fails.
READ_ERRORS = (UnicodeDecodeError, OSError, EOFError, zlib.error)
# The first bytes of a .csv that is not UTF-8 text, and what to do about it.
FILE_SIGNATURES = {b"\x1f\x8b": "it is gzip-compressed: add .gz to its name",
                   b"PK\x03\x04": "it is a zip archive: unzip it",
                   b"\xff\xfe": "it is UTF-16 text: save it as UTF-8",
                   b"\xfe\xff": "it is UTF-16 text: save it as UTF-8"}


def open_text(path: Path):
    """A text handle on a .csv or .csv.gz; a UTF-8 byte-order mark is dropped."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_line(path: Path, line_number: int) -> str:
    """The text of one 1-based line of the file (a bad line, or a row after some parsed)."""
    with open_text(path) as handle:
        for number, text in enumerate(handle, start=1):
            if number == line_number:
                return text.rstrip("\r\n")
    return ""


def first_two_lines(path: Path) -> tuple[str, str]:
    """The header's text and the first row's, read in one pass ("" past the file's end), each
    cut at LONGEST_LINE characters: a .gz of a few megabytes can unpack to gigabytes with no
    line break, and the checks of these two lines refuse anything that long."""
    with open_text(path) as handle:
        return (handle.readline(LONGEST_LINE).rstrip("\r\n"),
                handle.readline(LONGEST_LINE).rstrip("\r\n"))


def _open_bytes(path: Path):
    """A binary handle on a .csv or on what a .csv.gz unpacks to."""
    return (gzip.open if path.suffix == ".gz" else open)(path, "rb")


def check_line_lengths(path: Path) -> None:
    """DataError at the first line longer than LONGEST_LINE bytes, before pandas parses the
    file: pandas holds a line whole, several times over, so a line gigabytes long (a file
    padded with zeros, a small .gz that unpacks to one endless line) would take the
    machine's memory rather than give a message. One pass in blocks of LONGEST_LINE bytes:
    two line breaks inside one block are never further apart than the limit, so only the
    stretch since the last break is carried from block to block."""
    since_break = offset = 0
    with _open_bytes(path) as handle:
        while block := handle.read(LONGEST_LINE):
            first = min((at for at in (block.find(b"\n"), block.find(b"\r")) if at >= 0),
                        default=len(block))
            if since_break + first > LONGEST_LINE:
                raise DataError(f"lines of at most {LONGEST_LINE:,} bytes", "a longer line",
                                file=path, line=_line_starting_at(path, offset - since_break))
            if first == len(block):
                since_break += len(block)
            else:
                since_break = len(block) - 1 - max(block.rfind(b"\n"), block.rfind(b"\r"))
            offset += len(block)


def _line_starting_at(path: Path, offset: int) -> int:
    """The 1-based number of the line that starts at a byte offset just after a line break
    (\n, \r or \r\n, as pandas counts them)."""
    breaks, ended_on_cr = 0, False
    with _open_bytes(path) as handle:
        while offset > 0 and (block := handle.read(min(offset, LONGEST_LINE))):
            offset -= len(block)
            # \r\n is one break, also when the two fall on either side of a block's end
            breaks += (block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
                       - (ended_on_cr and block.startswith(b"\n")))
            ended_on_cr = block.endswith(b"\r")
    return breaks + 1


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


# pandas before 3.0 ends a cell at a NUL byte: "1<NUL>2" read as 1, without a word.
NUL_ENDS_CELLS = int(pd.__version__.split(".")[0]) < 3


def first_nul_cell(path: Path) -> tuple[int, int, str] | None:
    """(line, position, cell text) of the first cell holding a NUL byte, or None; read
    only where pandas would cut such a cell short (NUL_ENDS_CELLS)."""
    if not NUL_ENDS_CELLS:
        return None
    with _open_bytes(path) as handle:
        for line, text in enumerate(handle, start=1):
            at = text.find(b"\0")
            if at >= 0:
                position = text.count(b",", 0, at)
                cell = text.split(b",")[position].rstrip(b"\r\n")
                return line, position, cell.decode("utf-8", "backslashreplace")
    return None


def unreadable_error(path: Path, error: BaseException, columns: list[str]) -> DataError:
    """The DataError for a file that cannot be read as text (error is one of READ_ERRORS):
    the line and column of its first byte that is not UTF-8, or the line where a damaged
    archive breaks off. Reads the file again, line by line: the failure path only."""
    line, text = 0, b""
    compressed = path.suffix == ".gz"
    try:
        with _open_bytes(path) as handle:
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
        header_text, first_row = first_two_lines(path)
        header = line_fields(header_text)  # none: a blank first line, which pandas skips
        if header:  # before a ragged row later is named
            check_row_width(path, 2, line_fields(first_row), len(header))
        check_line_lengths(path)
        frame = pd.read_csv(path, encoding="utf-8-sig", **read_options)
    except READ_ERRORS as error:
        raise unreadable_error(path, error, columns or []) from None
    except pd.errors.ParserError as error:
        raise csv_syntax_error(path, error) from None
    except pd.errors.EmptyDataError:
        raise DataError(expected, "an empty file", file=path, line=1) from None
    return frame


def line_fields(text: str) -> list[str]:
    """The values of one line as csv reads them; none where csv cannot (a field past its
    size limit: no check, pandas says what is wrong). NUL bytes are dropped: the readers
    name a cell holding one themselves (first_nul_cell, or its value's check)."""
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
    nul = first_nul_cell(path)
    if nul is not None:
        line, position, cell = nul
        raise DataError("text without NUL bytes", repr(cell), file=path, line=line,
                        column=columns[position] if position < len(columns) else None)
    header = line_fields(first_two_lines(path)[0])
    if not header:  # a blank first line: pandas would take the next for the header
        raise DataError(expected, "a blank line", file=path, line=1)
    _check_one_line_cells(path, frame, columns)
    blank = _blank_lines(path, frame)
    filled = np.flatnonzero(~blank)
    frame = frame.iloc[:filled[-1] + 1 if len(filled) else 0]
    if blank[:len(frame)].any():
        line = int(np.argmax(blank)) + 2  # the header is line 1
        raise DataError(f"{len(columns)} values", "a blank line", file=path, line=line)
    if len(header) == len(frame.columns):
        frame.columns = header
    return frame


def _check_one_line_cells(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    """DataError at the first quoted cell that spans lines: every line number named after
    it (row + 2) would be off by the line breaks it holds."""
    if any("\n" in name or "\r" in name for name in frame.columns):
        raise DataError(f"columns {','.join(columns)} on one line", "a quoted line break",
                        file=path, line=1)
    spanning = first_true_cell(frame.apply(
        lambda column: column.str.contains("[\r\n]", regex=True)).to_numpy())
    if spanning is not None:
        row, position = spanning
        raise DataError("a value on one line", shown(frame.iat[row, position]), file=path,
                        line=row + 2, column=columns[position] if position < len(columns)
                        else None)


def _blank_lines(path: Path, frame: pd.DataFrame) -> np.ndarray:
    """Which rows of a frame read with skip_blank_lines=False were lines of nothing but
    spaces. A row of empty cells (",") is a row, for the caller to name its cells: only
    the line's text tells the two apart, read when some row's cells are all empty."""
    cells_empty = frame.apply(lambda column: column.str.strip().eq("")).all(axis=1).to_numpy()
    blank = np.zeros(len(frame), dtype=bool)
    if cells_empty.any():
        with open_text(path) as handle:
            # the lines as pandas splits them (str.splitlines also splits at \f, \x85, ...)
            lines = re.split(r"\r\n|\r|\n", handle.read())[1:]  # the header is line 1
        for row in np.flatnonzero(cells_empty):
            blank[row] = row >= len(lines) or not lines[row].strip()
    return blank


def check_row_width(path: Path, line: int, fields: list[str], width: int) -> None:
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
