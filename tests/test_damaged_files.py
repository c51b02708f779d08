"""Any bytes in, one line out: a CSV holding anything at all loads, or raises DataError.

Property-based: hypothesis edits small valid files at random (bytes flipped,
inserted or deleted, the file cut short, random bytes, gzip around it or
damage inside the gzip) and every outcome must be a clean load or a one-line
DataError naming the file, never another exception.
"""

from __future__ import annotations

import gzip
import re
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src import csv_files, data, submit
from src.config import run_cli
from src.csv_text import LONGEST_LINE
from src.errors import DataError

PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
ROWS = 4  # a few rows keep each example fast; the header alone is 7 KB
# Bytes that mean something to a CSV parser, a decoder or gzip, beside random ones.
MEANINGFUL_BYTES = [b"\x00", b"\xff", b"\xe9", b"\xc3", b"\xef\xbb\xbf", b"\x1f\x8b", b'"',
                    b"\r", b"\n", b",", b"-", b".", b" ", b"e", b"#", b"\\"]
# Fixed seeds and no example database: CI sees the same examples on every run.
REPRODUCIBLE = settings(max_examples=100, deadline=None, derandomize=True, database=None)


def _set_cell(path, line_number, column_index, value: bytes):
    lines = path.read_bytes().split(b"\n")
    cells = lines[line_number - 1].split(b",")
    cells[column_index] = value
    lines[line_number - 1] = b",".join(cells)
    path.write_bytes(b"\n".join(lines))


def _gzip_in_place(folder, name, content: bytes):
    """Replace folder/name.csv by name.csv.gz holding content (any bytes at all)."""
    (folder / f"{name}.csv").unlink()
    (folder / f"{name}.csv.gz").write_bytes(content)


def damage_bytes(folder, case):
    """Damage the fixture in folder one of the ways the issue reports; return a regular
    expression the error line must match (the folder left out)."""
    train, test = folder / "train.csv", folder / "test.csv"
    if case == "latin1_byte_in_train":
        _set_cell(train, 6, 101, "\xe9".encode("latin-1"))
        return r"train.csv:6: pixel100: expected UTF-8 text, found byte 0xe9"
    if case == "latin1_byte_in_header":
        _set_cell(train, 1, 6, "pix\xe9l5".encode("latin-1"))
        return r"train.csv:1: column 7: expected UTF-8 text, found byte 0xe9"
    if case == "png_as_train":
        train.write_bytes(PNG_START + bytes(range(256)) * 8)
        return r"train.csv:1: column 1: expected UTF-8 text, found byte 0x89"
    if case == "stray_ff_in_test":
        _set_cell(test, 120, 5, b"0\xff")
        return r"test.csv:120: pixel5: expected UTF-8 text, found byte 0xff"
    if case == "nul_byte_in_train":
        _set_cell(train, 9, 301, b"1\x002")
        return r"train.csv:9: pixel300: expected an integer 0..255, found '1\\x002'"
    if case == "open_quote":  # no quote is part of a row: one row is one line
        _set_cell(train, 8, 40, b'"0')
        return r"train.csv:8: pixel39: expected an integer 0..255, found '\"0'"
    if case == "gzip_named_csv":
        train.write_bytes(gzip.compress(train.read_bytes(), mtime=0))
        return (r"train.csv:1: column 1: expected UTF-8 text, found byte 0x8b "
                r"\(it is gzip-compressed: add .gz to its name\)")
    if case == "utf16_train":  # as Excel's "Unicode text" saves it
        train.write_bytes(train.read_text().encode("utf-16"))
        return (r"train.csv:1: column 1: expected UTF-8 text, found byte 0xff "
                r"\(it is UTF-16 text: save it as UTF-8\)")
    if case == "gz_holding_plain_text":
        _gzip_in_place(folder, "train", train.read_bytes())
        return (r"train.csv.gz: expected a gzip archive, found gzip.BadGzipFile: "
                r"Not a gzipped file \(b'la'\)")
    if case == "gz_cut_short":
        archive = gzip.compress(train.read_bytes(), mtime=0)
        _gzip_in_place(folder, "train", archive[:len(archive) // 2])
        return (r"train.csv.gz:\d+: expected a gzip archive, found EOFError: Compressed file "
                r"ended before the end-of-stream marker was reached")
    if case == "utf16_without_mark":  # the header's every other byte a NUL
        train.write_bytes(train.read_text().encode("utf-16-le"))
        return (r"train.csv:1: expected a header row of 785 columns \(label, \.\.\.\), found "
                r"NUL bytes \(UTF-16 text without a byte-order mark\? save it as UTF-8\)")
    if case == "long_line_in_train":  # pandas would hold it whole, many times over
        lines = train.read_bytes().split(b"\n")
        lines.insert(4, b"0" * (LONGEST_LINE + 1))
        train.write_bytes(b"\n".join(lines))
        return r"train.csv:5: expected lines of at most 1,048,576 bytes, found a longer line"
    if case == "zeros_after_the_rows_in_gz":  # as `truncate -s 2G` pads a file
        content = train.read_bytes()
        _gzip_in_place(folder, "train", gzip.compress(content + bytes(3 * LONGEST_LINE)))
        zeros_line = len(content.splitlines()) + 1
        return (rf"train.csv.gz:{zeros_line}: expected lines of at most "
                r"1,048,576 bytes, found a longer line")
    if case == "gz_holding_binary":
        _gzip_in_place(folder, "train", gzip.compress(PNG_START, mtime=0))
        return r"train.csv.gz:1: column 1: expected UTF-8 text, found byte 0x89"
    raise AssertionError(case)


BYTE_CASES = ["latin1_byte_in_train", "latin1_byte_in_header", "png_as_train",
              "stray_ff_in_test", "nul_byte_in_train", "open_quote", "gzip_named_csv",
              "utf16_train", "utf16_without_mark", "long_line_in_train",
              "zeros_after_the_rows_in_gz", "gz_holding_plain_text", "gz_cut_short",
              "gz_holding_binary"]


@pytest.mark.parametrize("case", BYTE_CASES)
def test_damaged_bytes_name_file_line_and_column(kaggle_dir, case):
    expected = damage_bytes(kaggle_dir, case)
    with pytest.raises(DataError) as caught:
        data.load_kaggle(kaggle_dir)
    assert re.fullmatch(re.escape(f"{kaggle_dir}/") + expected, str(caught.value))


@pytest.mark.parametrize("end", ["\n\n", " \n\t\n", "\r\n\r\n"])
def test_check_flag_takes_blank_lines_after_the_last_row(kaggle_dir_readonly, tmp_path, capsys,
                                                         end):
    path = tmp_path / "sub.csv"
    rows = "".join(f"{i},{i % 10}\n" for i in range(1, 301))
    path.write_bytes(("ImageId,Label\n" + rows + end).encode())
    assert run_cli(submit.main, ["--check", str(path), "--data-dir", str(kaggle_dir_readonly)]) == 0
    assert capsys.readouterr().out.endswith("valid submission, 300 rows\n")
    # A form feed splits no line for pandas: the blank line after it is still named.
    path.write_text("ImageId,Label\n1\x0c,1\n\n" + rows)
    assert run_cli(submit.main, ["--check", str(path), "--data-dir", str(kaggle_dir_readonly)]) == 2
    assert capsys.readouterr().err.endswith("sub.csv:3: expected 2 values, found a blank line\n")
    # A row of empty cells is a row, not a blank line: Kaggle would read one more row.
    path.write_text("ImageId,Label\n" + rows + ",\n")
    assert run_cli(submit.main, ["--check", str(path), "--data-dir", str(kaggle_dir_readonly)]) == 2
    assert capsys.readouterr().err.endswith(
        "sub.csv:302: expected 300 rows, one per test image, found 301\n")


@pytest.mark.parametrize("damage, expected", [
    (lambda text: text.replace(b"\n3,", b"\n3\xe9,"), r"sub.csv:4: ImageId: expected UTF-8 "
     r"text, found byte 0xe9"),
    (lambda text: gzip.compress(text, mtime=0)[:-100], r"sub.csv.gz:\d+: expected a gzip "
     r"archive, found EOFError: Compressed file ended before the end-of-stream marker was reached"),
    # A blank line was skipped: it passed, and a bad value after it was named a line early.
    (lambda text: text.replace(b"\n3,3\n", b"\n\n3,3\n"),
     r"sub.csv:4: expected 2 values, found a blank line"),
    (lambda text: text.replace(b"\n3,3\n", b"\n\n3,3\n").replace(b"\n12,", b"\n12x,"),
     r"sub.csv:4: expected 2 values, found a blank line"),
])
def test_check_flag_reports_damaged_bytes_on_one_line(kaggle_dir_readonly, tmp_path, capsys,
                                                       damage, expected):
    text = "ImageId,Label\n" + "".join(f"{i},{i % 10}\n" for i in range(1, 301))
    damaged = damage(text.encode())
    path = tmp_path / ("sub.csv.gz" if damaged.startswith(b"\x1f\x8b") else "sub.csv")
    path.write_bytes(damaged)
    argv = ["--check", str(path), "--data-dir", str(kaggle_dir_readonly)]
    assert run_cli(submit.main, argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch("error: " + re.escape(f"{tmp_path}/") + expected + "\n", err), err


@pytest.fixture(scope="module")
def small_files(kaggle_dir_readonly, tmp_path_factory):
    """The first ROWS rows of train.csv and test.csv and a valid submission for them,
    as bytes, and a folder to write damaged copies into."""
    def head(name):
        lines = (kaggle_dir_readonly / name).read_bytes().splitlines(keepends=True)
        return b"".join(lines[:ROWS + 1])

    submission = "ImageId,Label\n" + "".join(f"{i},{i % 10}\n" for i in range(1, ROWS + 1))
    folder = tmp_path_factory.mktemp("damaged")
    (folder / "valid-test.csv").write_bytes(head("test.csv"))
    return {"train": head("train.csv"), "test": head("test.csv"),
            "submission": submission.encode()}, folder


some_bytes = st.one_of(st.sampled_from(MEANINGFUL_BYTES), st.binary(min_size=1, max_size=8))


@st.composite
def edited(draw, original: bytes, start: int = 0) -> bytes:
    """original after one to three random edits from byte start on: a byte replaced,
    bytes inserted or deleted, or the rest cut off."""
    content = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        last = max(len(content) - 1, 0)
        at = draw(st.integers(min(start, last), last))
        edit = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if edit == "replace":
            content[at:at + 1] = bytes([draw(st.integers(0, 255))])
        elif edit == "insert":
            content[at:at] = draw(some_bytes)
        elif edit == "delete":
            del content[at:at + draw(st.integers(1, 16))]
        else:
            del content[at:]
    return bytes(content)


def damaged_files(original: bytes):
    """(suffix, bytes) of a damaged file: edited or random bytes, plain or gzipped, or a
    gzip archive of the valid file with edits to the archive itself."""
    body = original.index(b"\n") + 1  # the header is half the bytes: edit the rows as often
    text = st.one_of(edited(original), edited(original, start=body), st.binary(max_size=2000))
    return st.one_of(
        text.map(lambda content: (".csv", content)),
        text.map(lambda content: (".csv.gz", gzip.compress(content, mtime=0))),
        edited(gzip.compress(original, mtime=0)).map(lambda content: (".csv.gz", content)),
    )


def _load(target, path, folder):
    if target == "submission":
        submit.check_submission_file(path, folder / "valid-test.csv")
        return
    images, labels = csv_files.read_digits_csv(path, with_labels=target == "train")
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
    assert labels is None or len(labels) == len(images)


@pytest.mark.parametrize("target", ["train", "test", "submission"])
@REPRODUCIBLE
@given(choice=st.data())
def test_any_bytes_load_or_raise_one_line_data_error(small_files, target, choice):
    originals, folder = small_files
    suffix, content = choice.draw(damaged_files(originals[target]), label="file")
    path = folder / f"{target}{suffix}"
    path.write_bytes(content)
    try:
        _load(target, path, folder)
    except DataError as error:
        message = str(error)
        assert message.startswith(f"{path}") and message.isprintable(), message
        assert "expected " in message and ", found " in message, message


def _outcome(target, path):
    """What reading the file gave: its values, or that it raised DataError."""
    try:
        images, labels = csv_files.read_digits_csv(path, with_labels=target == "train")
    except DataError:
        return "DataError"
    return images.tobytes(), None if labels is None else labels.tolist()


@pytest.mark.parametrize("target", ["train", "test"])
@REPRODUCIBLE
@given(choice=st.data())
def test_a_parse_in_chunks_loads_what_one_pass_does(small_files, target, choice):
    """Any bytes, read 2 rows at a time (the damage in a later chunk, or across two) and in
    one pass: the same values, or a DataError both times. (The lines may differ: within a
    chunk, pandas names a ragged row before a bad cell earlier in the chunk.)"""
    originals, folder = small_files
    suffix, content = choice.draw(damaged_files(originals[target]), label="file")
    path = folder / f"chunked-{target}{suffix}"
    path.write_bytes(content)
    outcomes = []
    for rows in (csv_files.CHUNK_ROWS, 2):
        with mock.patch.object(csv_files, "CHUNK_ROWS", rows):
            outcomes.append(_outcome(target, path))
    assert outcomes[0] == outcomes[1]
