"""Loaders: the Kaggle CSVs (good, harmless variants, every kind of bad input) and Keras MNIST."""

from __future__ import annotations

import gzip
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src import csv_files, data
from src.errors import DataError


def _lines(path):
    return path.read_text().splitlines()


def _write_lines(path, lines, newline="\n", final_newline=True):
    path.write_text(newline.join(lines) + (newline if final_newline else ""))


def test_kaggle_csvs_load_as_uint8_images(kaggle_dir):
    digits = data.load_kaggle(kaggle_dir)
    assert digits.x_train.shape == (1497, 28, 28, 1) and digits.x_train.dtype == np.uint8
    assert digits.x_test.shape == (300, 28, 28, 1) and digits.x_test.dtype == np.uint8
    assert digits.y_train.dtype == np.int64 and set(digits.y_train) == set(range(10))
    np.testing.assert_array_equal(digits.test_ids, np.arange(1, 301))
    assert digits.y_test is None and digits.source == "kaggle"
    assert digits.x_train.max() == 255 and digits.x_train.min() == 0


def test_gzipped_csvs_load_the_same(kaggle_dir, tmp_path):
    plain = data.load_kaggle(kaggle_dir)
    zipped_dir = tmp_path / "gz"
    zipped_dir.mkdir()
    for name in ("train", "test"):
        with open(kaggle_dir / f"{name}.csv", "rb") as src, \
                gzip.open(zipped_dir / f"{name}.csv.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    zipped = data.load_kaggle(zipped_dir)
    np.testing.assert_array_equal(plain.x_train, zipped.x_train)
    np.testing.assert_array_equal(plain.y_train, zipped.y_train)
    np.testing.assert_array_equal(plain.x_test, zipped.x_test)


@pytest.fixture(params=[None, 500], ids=["one_chunk", "chunks_of_500_rows"])
def chunk_rows(request, monkeypatch):
    """The rows a parse reads at once: the package's (more than the fixture's 1,497), or
    500, so that the damage deep in the file, or at a chunk's end, falls in a later chunk
    than the first."""
    if request.param is not None:
        monkeypatch.setattr(csv_files, "CHUNK_ROWS", request.param)
    return request.param


@pytest.mark.parametrize("variant", ["crlf", "cr", "bom", "no_final_newline",
                                     "trailing_blank_lines",
                                     "many_trailing_blank_lines",
                                     "spaced_quoted_header_and_trailing_blank_lines"])
def test_harmless_variants_load_normally(kaggle_dir, variant, chunk_rows):
    expected = data.load_kaggle(kaggle_dir)
    path = kaggle_dir / "train.csv"
    lines = _lines(path)
    if variant == "crlf":
        _write_lines(path, lines, newline="\r\n")
    elif variant == "cr":  # old Mac line ends: 2.4 MB without one \n, yet no line is long
        _write_lines(path, lines, newline="\r")
    elif variant == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    elif variant == "no_final_newline":
        _write_lines(path, lines, final_newline=False)
    elif variant == "trailing_blank_lines":
        _write_lines(path, lines + ["", ""])
    elif variant == "many_trailing_blank_lines":  # rows 1,497-1,505: across chunks of 500
        _write_lines(path, lines + ["", " ", ""] * 3)
    else:  # the header check strips spaces and quotes; the slower parse must too
        header = ", ".join(f'"{name}"' for name in lines[0].split(","))
        _write_lines(path, [header, *lines[1:], "", ""])
    loaded = data.load_kaggle(kaggle_dir)
    np.testing.assert_array_equal(loaded.x_train, expected.x_train)
    np.testing.assert_array_equal(loaded.y_train, expected.y_train)


def _set_cell(lines, line_number, column_index, value):
    cells = lines[line_number - 1].split(",")
    cells[column_index] = value
    lines[line_number - 1] = ",".join(cells)


def _break_train(path, case):
    """Apply one kind of damage to train.csv; return the expected message fragment."""
    lines = _lines(path)
    if case == "empty_file":
        path.write_text("")
        return "train.csv:1: expected a header row of 785 columns (label, ...), found an empty file"
    if case == "header_only":
        _write_lines(path, lines[:1])
        return "train.csv:2: expected at least one row of digits, found only the header"
    if case == "missing_column":
        _write_lines(path, [",".join(line.split(",")[:-1]) for line in lines])
        return "train.csv:1: expected 785 columns (label, ..., pixel783), found 784"
    if case == "misnamed_column":
        _set_cell(lines, 1, 6, "pixle5")
        _write_lines(path, lines)
        return "train.csv:1: column 7: expected 'pixel5', found 'pixle5'"
    if case == "duplicated_column":
        _set_cell(lines, 1, 6, "pixel4")
        _write_lines(path, lines)
        return "train.csv:1: column 7: expected 'pixel5', found duplicate 'pixel4'"
    if case == "non_numeric":
        _set_cell(lines, 5, 101, "abc")
        _write_lines(path, lines)
        return "train.csv:5: pixel100: expected an integer 0..255, found 'abc'"
    if case == "blank_cell":
        _set_cell(lines, 7, 201, "")
        _write_lines(path, lines)
        return "train.csv:7: pixel200: expected an integer 0..255, found an empty cell"
    if case == "nan_cell":
        _set_cell(lines, 7, 201, "NaN")
        _write_lines(path, lines)
        return "train.csv:7: pixel200: expected an integer 0..255, found 'NaN'"
    if case == "pixel_256":
        _set_cell(lines, 9, 301, "256")
        _write_lines(path, lines)
        return "train.csv:9: pixel300: expected an integer 0..255, found '256'"
    if case == "pixel_minus_1":
        _set_cell(lines, 9, 301, "-1")
        _write_lines(path, lines)
        return "train.csv:9: pixel300: expected an integer 0..255, found '-1'"
    if case == "fractional_pixel":
        _set_cell(lines, 3, 401, "12.5")
        _write_lines(path, lines)
        return "train.csv:3: pixel400: expected an integer 0..255, found '12.5'"
    if case == "whole_float_before_text":  # 3.0 is read as 3 here too, as when alone
        _set_cell(lines, 4, 0, "3.0")
        _set_cell(lines, 8, 0, "x")
        _write_lines(path, lines)
        return "train.csv:8: label: expected an integer 0..9, found 'x'"
    if case == "label_10":
        _set_cell(lines, 4, 0, "10")
        _write_lines(path, lines)
        return "train.csv:4: label: expected an integer 0..9, found '10'"
    if case == "label_minus_1":
        _set_cell(lines, 4, 0, "-1")
        _write_lines(path, lines)
        return "train.csv:4: label: expected an integer 0..9, found '-1'"
    if case == "ragged_long_row":
        lines[5] += ",0"
        _write_lines(path, lines)
        return "train.csv:6: expected 785 values, found 786"
    if case == "every_row_one_longer":  # pandas would take each row's label as its index
        _write_lines(path, [lines[0]] + [line + ",0" for line in lines[1:]])
        return "train.csv:2: expected 785 values, found 786"
    if case == "first_row_one_longer":
        lines[1] += ",0"
        _write_lines(path, lines)
        return "train.csv:2: expected 785 values, found 786"
    if case == "ragged_short_row":
        lines[5] = lines[5].rsplit(",", 1)[0]
        _write_lines(path, lines)
        return "train.csv:6: expected 785 values, found 784"
    if case == "spaced_header_and_bad_cell":
        _set_cell(lines, 5, 101, "abc")
        _write_lines(path, [", ".join(lines[0].split(",")), *lines[1:]])
        return "train.csv:5: pixel100: expected an integer 0..255, found 'abc'"
    if case == "blank_line_inside":
        _write_lines(path, lines[:4] + [""] + lines[4:])
        return "train.csv:5: expected 785 values, found a blank line"
    if case == "blank_lines_then_digits":  # rows 498-499: the blank lines end a chunk of 500
        _write_lines(path, lines[:499] + ["", ""] + lines[499:])
        return "train.csv:500: expected 785 values, found a blank line"
    if case == "bad_cell_deep":
        _set_cell(lines, len(lines) - 2, 3, "x")
        _write_lines(path, lines)
        return f"train.csv:{len(lines) - 2}: pixel2: expected an integer 0..255, found 'x'"
    if case == "ragged_long_row_deep":
        lines[-3] += ",0"
        _write_lines(path, lines)
        return f"train.csv:{len(lines) - 2}: expected 785 values, found 786"
    if case == "quoted_comma_in_header":  # csv and pandas read it as one name
        _write_lines(path, ['"label,pixel0"' + lines[0][len("label,pixel0"):], *lines[1:]])
        return "train.csv:1: column 1: expected 'label', found 'label,pixel0'"
    if case == "column_of_booleans":  # pandas reads a column of them as True and False
        for number in range(2, len(lines) + 1):
            _set_cell(lines, number, 301, "True" if number % 2 else "false")
        _write_lines(path, lines)
        return "train.csv:2: pixel300: expected an integer 0..255, found 'false'"
    if case == "labels_as_booleans":
        _write_lines(path, [lines[0]] + [("True" if number % 2 else "False") + line[1:]
                                         for number, line in enumerate(lines[1:])])
        return "train.csv:2: label: expected an integer 0..9, found 'False'"
    if case == "infinite_pixel":  # 1e400 too: pandas reads both as a float's infinity
        _set_cell(lines, 6, 11, "1e400")
        _write_lines(path, lines)
        return "train.csv:6: pixel10: expected an integer 0..255, found '1e400'"
    if case == "pixel_that_rounds_to_0":  # float64 reads 1e-400 as 0.0, a whole number
        _set_cell(lines, 6, 11, "1e-400")
        _write_lines(path, lines)
        return "train.csv:6: pixel10: expected an integer 0..255, found '1e-400'"
    if case == "label_that_rounds_to_3":  # and this as 3.0
        _set_cell(lines, 4, 0, "3.0000000000000000001")
        _write_lines(path, lines)
        return "train.csv:4: label: expected an integer 0..9, found '3.0000000000000000001'"
    if case == "label_written_1e1":  # the cell as the file writes it
        _set_cell(lines, 4, 0, "1e1")
        _write_lines(path, lines)
        return "train.csv:4: label: expected an integer 0..9, found '1e1'"
    if case == "quoted_cell_across_lines":  # every line number after it would be off
        _set_cell(lines, 3, 0, '"3')
        lines.insert(3, '"' + lines[3])
        _write_lines(path, lines)
        return "train.csv:3: label: expected an integer 0..9, found '\"3'"
    if case == "bad_cell_then_a_longer_row":  # pandas stops at the row too long first
        _set_cell(lines, 4, 3, "x")
        lines[6] += ",0"
        _write_lines(path, lines)
        return "train.csv:4: pixel2: expected an integer 0..255, found 'x'"
    if case == "blank_line_then_a_longer_row":
        lines[6] += ",0"
        _write_lines(path, lines[:4] + [""] + lines[4:])
        return "train.csv:5: expected 785 values, found a blank line"
    if case == "row_of_empty_cells_at_end":  # pandas reads "," as it reads a blank line
        _write_lines(path, [*lines, ",", ""])
        return f"train.csv:{len(lines) + 1}: expected 785 values, found 2"
    if case == "megabyte_long_header_name":  # quoted whole, the message was a megabyte
        _write_lines(path, ["x" * 1_000_000 + lines[0][len("label"):], *lines[1:]])
        return f"train.csv:1: column 1: expected 'label', found '{'x' * 40}'..."
    raise AssertionError(case)


TRAIN_CASES = [
    "empty_file", "header_only", "missing_column", "misnamed_column", "duplicated_column",
    "non_numeric", "blank_cell", "nan_cell", "pixel_256", "pixel_minus_1", "fractional_pixel",
    "whole_float_before_text",
    "label_10", "label_minus_1", "ragged_long_row", "every_row_one_longer", "first_row_one_longer",
    "ragged_short_row", "blank_line_inside", "blank_lines_then_digits", "bad_cell_deep",
    "ragged_long_row_deep", "spaced_header_and_bad_cell", "quoted_comma_in_header",
    "column_of_booleans", "labels_as_booleans", "infinite_pixel", "label_written_1e1",
    "pixel_that_rounds_to_0", "label_that_rounds_to_3",
    "quoted_cell_across_lines", "row_of_empty_cells_at_end", "megabyte_long_header_name",
    "bad_cell_then_a_longer_row", "blank_line_then_a_longer_row",
]


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_bad_train_csv_names_file_line_and_column(kaggle_dir, case, chunk_rows):
    expected = _break_train(kaggle_dir / "train.csv", case)
    with pytest.raises(DataError) as caught:
        data.load_kaggle(kaggle_dir)
    assert str(caught.value) == f"{kaggle_dir / expected}"


@pytest.mark.parametrize("after", ["nothing", "a text cell", "a trailing blank line"])
def test_whole_numbers_written_as_floats_read_as_integers(kaggle_dir, chunk_rows, after):
    """Whether a cell like 3.0 is read must not hang on the rows around it: pandas' fast
    parse reads it as 3, and so must the slow one that a text cell or a blank line (whose
    empty cells make every column text) sends the chunk to."""
    path = kaggle_dir / "train.csv"
    lines = _lines(path)
    _set_cell(lines, 4, 0, "3.0")
    _set_cell(lines, 3, 11, "1e0")
    _set_cell(lines, 5, 12, " 7")
    _set_cell(lines, 6, 13, "0e1000000000000000000")  # past Decimal's exponents: still 0
    if after == "a text cell":  # in the same column: pandas then reads the column as text
        _set_cell(lines, 9, 0, "x")
    if after == "a trailing blank line":
        lines.append("")
    _write_lines(path, lines)
    if after == "a text cell":
        with pytest.raises(DataError, match=r"train.csv:9: label: expected an integer "
                                            r"0..9, found 'x'$"):
            data.load_kaggle(kaggle_dir)
        return
    digits = data.load_kaggle(kaggle_dir)
    assert len(digits.y_train) == len(_lines(path)) - 1 - (after == "a trailing blank line")
    assert digits.y_train[2] == 3
    assert digits.x_train[1].ravel()[10] == 1 and digits.x_train[3].ravel()[11] == 7
    assert digits.x_train[4].ravel()[12] == 0


def test_missing_train_file_says_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError, match="expected train.csv .*, found none .*kaggle competitions"):
        data.load_kaggle(tmp_path)
    (tmp_path / "train.csv").mkdir()  # an archive unpacked into a folder of the file's name
    with pytest.raises(DataError, match=r"expected train.csv \(or train.csv.gz\), found a "
                                        "folder named train.csv"):
        data.load_kaggle(tmp_path)


def test_missing_test_file(kaggle_dir):
    (kaggle_dir / "test.csv").unlink()
    with pytest.raises(DataError, match=r"test.csv: expected a CSV file, found no such file"):
        data.load_kaggle(kaggle_dir)


def test_a_folder_named_test_csv_is_no_file(kaggle_dir):
    (kaggle_dir / "test.csv").unlink()
    (kaggle_dir / "test.csv").mkdir()
    with pytest.raises(DataError, match=r"test.csv: expected a CSV file, found a folder"):
        data.load_kaggle(kaggle_dir)


def test_test_csv_with_a_label_column(kaggle_dir):
    shutil.copy(kaggle_dir / "train.csv", kaggle_dir / "test.csv")
    with pytest.raises(DataError) as caught:
        data.load_kaggle(kaggle_dir)
    expected = "test.csv:1: column 1: expected 'pixel0', found 'label'"
    assert str(caught.value) == f"{kaggle_dir}/{expected}"


def test_data_dir_search_order(kaggle_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="DIGITS_DATA_DIR"):
        data.find_data_dir()
    monkeypatch.setenv("DIGITS_DATA_DIR", str(kaggle_dir))
    assert data.find_data_dir() == kaggle_dir
    local = tmp_path / "data" / "digit-recognizer"
    shutil.copytree(kaggle_dir, local)
    monkeypatch.delenv("DIGITS_DATA_DIR")
    assert data.find_data_dir() == data.LOCAL_DATA_DIR
    assert data.find_data_dir(kaggle_dir) == kaggle_dir


def test_keras_npz_loads_like_mnist(mnist_npz):
    digits = data.load_keras_mnist(mnist_npz)
    assert digits.x_train.shape == (1497, 28, 28, 1) and digits.x_train.dtype == np.uint8
    assert digits.y_test is not None and digits.y_test.shape == (300,)
    assert digits.source == "keras"


def test_keras_npz_without_source_keras_is_refused(mnist_npz):
    """Without --source keras the CSVs would load and the npz be ignored without a word."""
    from src.config import Config

    with pytest.raises(DataError) as caught:
        data.load_digits(Config(keras_npz=str(mnist_npz)))
    assert str(caught.value) == ("--keras-npz: expected --source keras with --keras-npz, "
                                 "found --source kaggle")
    assert data.load_digits(Config(source="keras", keras_npz=str(mnist_npz))).source == "keras"


def test_data_dir_with_source_keras_is_refused(kaggle_dir_readonly, mnist_npz):
    """MNIST would load, and the folder's CSVs be ignored without a word."""
    from src.config import Config

    with pytest.raises(DataError) as caught:
        data.load_digits(Config(source="keras", keras_npz=str(mnist_npz),
                                data_dir=str(kaggle_dir_readonly)))
    assert str(caught.value) == ("--data-dir: expected --source kaggle with --data-dir, found "
                                 "--source keras (--keras-npz FILE reads MNIST from a local "
                                 "file)")


def test_train_labels_alone_need_no_test_csv(kaggle_dir):
    from src.config import Config

    (kaggle_dir / "test.csv").unlink()  # scoring saved predictions needs no test images
    labels = data.load_train_labels(Config(data_dir=str(kaggle_dir)))
    assert labels.dtype == np.int64 and labels.tolist() == pd.read_csv(
        kaggle_dir / "train.csv", usecols=["label"])["label"].tolist()


def test_train_labels_alone_refuse_keras_npz_without_source_keras(kaggle_dir, mnist_npz):
    from src.config import Config

    with pytest.raises(DataError, match="--keras-npz: expected --source keras"):
        data.load_train_labels(Config(data_dir=str(kaggle_dir), keras_npz=str(mnist_npz)))


def test_train_labels_alone_from_mnist(mnist_npz):
    from src.config import Config

    keras_labels = data.load_train_labels(Config(source="keras", keras_npz=str(mnist_npz)))
    assert keras_labels.tolist() == data.load_keras_mnist(mnist_npz).y_train.tolist()


def test_keras_download_path_uses_keras_datasets(mnist_npz, monkeypatch):
    import keras

    def fake_load_data():
        with np.load(mnist_npz) as npz:
            return (npz["x_train"], npz["y_train"]), (npz["x_test"], npz["y_test"])

    monkeypatch.setattr(keras.datasets.mnist, "load_data", fake_load_data)
    assert data.load_keras_mnist().x_test.shape == (300, 28, 28, 1)


def test_keras_download_failure_is_one_clear_error(monkeypatch):
    import keras

    def offline():
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match="expected the MNIST download.*--keras-npz"):
        data.load_keras_mnist()


    def interrupted():  # Ctrl-C inside a C call: not a failed download
        raise SystemError("returned a result with an exception set") from KeyboardInterrupt()

    monkeypatch.setattr(keras.datasets.mnist, "load_data", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.load_keras_mnist()


def test_keras_npz_with_missing_key(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="bad.npz: expected arrays .*, found no 'y_train'"):
        data.load_keras_mnist(tmp_path / "bad.npz")


@pytest.mark.parametrize("key, value, found", [
    ("x_train", np.full((2, 28, 28), 0.5, np.float32), "x_train: expected integers (MNIST's "
     "own are uint8), found dtype float32"),  # scaled to 0..1: would load as blank images
    ("x_train", np.full((2, 28, 28), np.nan), "x_train: expected integers"),
    ("y_test", np.array([3.7, 1.0]), "y_test: expected integers"),
    ("x_test", np.zeros((0, 28, 28), np.uint8), "x_test: expected at least one image, found none"),
    # numpy's issubdtype counts timedelta64 as an integer
    ("y_train", np.array([3, 1], "m8[s]"), "y_train: expected integers (MNIST's own are uint8), "
     "found dtype timedelta64[s]"),
])
def test_keras_npz_of_other_values_is_one_clear_error(tmp_path, key, value, found):
    arrays = dict(x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.array([1, 2], np.uint8),
                  x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([3, 4], np.uint8))
    if key == "x_test":
        arrays["y_test"] = np.zeros(0, np.uint8)
    np.savez(tmp_path / "mnist.npz", **{**arrays, key: value})
    with pytest.raises(DataError) as caught:
        data.load_keras_mnist(tmp_path / "mnist.npz")
    assert str(caught.value).startswith(f"{tmp_path / 'mnist.npz'}: {found}")


@pytest.mark.parametrize("shape, found", [("(100000000000000000000, 28, 28)", "OverflowError"),
                                          ("(True, 28, 28)", "TypeError"),
                                          # numpy's fallback parser tokenizes it
                                          ("(2, 28, 28", "tokenize.TokenError")])
def test_keras_npz_claiming_an_impossible_shape_is_one_clear_error(tmp_path, shape, found):
    arrays = dict(x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.array([1, 2], np.uint8),
                  x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([3, 4], np.uint8))
    np.savez(tmp_path / "mnist.npz", **arrays)
    with zipfile.ZipFile(tmp_path / "mnist.npz") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    npy = members["x_train.npy"]  # magic, version, header length, then the header's dict
    length = int.from_bytes(npy[8:10], "little")
    header = npy[10:10 + length].replace(b"(2, 28, 28)", shape.encode()).rstrip(b" \n")
    members["x_train.npy"] = npy[:10] + header.ljust(length - 1) + b"\n" + npy[10 + length:]
    with zipfile.ZipFile(tmp_path / "mnist.npz", "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(DataError) as caught:
        data.load_keras_mnist(tmp_path / "mnist.npz")
    assert str(caught.value).startswith(
        f"{tmp_path / 'mnist.npz'}: expected an npz archive, found {found}: ")


@pytest.mark.parametrize("damage, found", [
    (lambda raw: raw[:len(raw) // 2], "no zip directory (not a zip, or one cut short)"),
    (lambda raw: b"", "no zip directory (not a zip, or one cut short)"),
    (lambda raw: gzip.compress(raw), "no zip directory (not a zip, or one cut short)"),
    (lambda raw: raw[:5000] + bytes([raw[5000] ^ 0xFF]) + raw[5001:],
     "zipfile.BadZipFile: Bad CRC-32 for file 'x_train.npy'"),
])
def test_damaged_keras_npz_is_one_clear_error(mnist_npz, tmp_path, damage, found):
    damaged = tmp_path / "mnist.npz"
    damaged.write_bytes(damage(mnist_npz.read_bytes()))
    with pytest.raises(DataError) as caught:
        data.load_keras_mnist(damaged)
    assert str(caught.value).startswith(f"{damaged}: expected an npz archive")
    assert str(caught.value).endswith(f", found {found}")


def _rewrite_npz(source: Path, target: Path, member: str, payload: bytes | None = None,
                 name: str | None = None) -> None:
    """A copy of an npz, stored uncompressed, with one member's bytes or name replaced."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            raw = old.read(info)
            if info.filename == member:
                raw = raw if payload is None else payload
                new.writestr(name or member, raw)
            else:
                new.writestr(info.filename, raw)


def _set_zip_field(raw: bytes, signature: bytes, offset: int, value: int, flag: bool) -> bytes:
    """Every local or central header's 2-byte field at offset set to value (or OR-ed in)."""
    patched, start = bytearray(raw), 0
    while (start := patched.find(signature, start)) >= 0:
        field = int.from_bytes(patched[start + offset:start + offset + 2], "little")
        field = field | value if flag else value
        patched[start + offset:start + offset + 2] = field.to_bytes(2, "little")
        start += 4
    return bytes(patched)


def _huge_header(npy: bytes) -> bytes:
    """The .npy bytes of a uint8 (N, 28, 28) array with a header claiming 10**11 images."""
    header_length = int.from_bytes(npy[8:10], "little")
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (100000000000, 28, 28), }"
    header = header.ljust(header_length - 1) + "\n"
    return npy[:10] + header.encode() + npy[10 + header_length:]


@pytest.mark.parametrize("damage, found", [
    ("member_not_npy", "y_train: expected a .npy array, found raw bytes (a member not saved "
                       "by numpy)"),
    ("encrypted_flag", "expected an npz archive, found RuntimeError: File 'x_train.npy' is "
                       "encrypted"),
    ("unknown_compression", "expected an npz archive, found NotImplementedError: That "
                            "compression method is not supported"),
    ("huge_shape", "expected an npz archive, found MemoryError"),
])
def test_an_npz_numpy_reads_oddly_is_one_clear_error(mnist_npz, tmp_path, damage, found):
    """Each of these was a traceback: RuntimeError, NotImplementedError, numpy's
    _ArrayMemoryError, and an AttributeError on the bytes np.load returns for a member
    not named .npy."""
    damaged = tmp_path / "mnist.npz"
    if damage == "member_not_npy":
        _rewrite_npz(mnist_npz, damaged, "y_train.npy", b"not an npy", name="y_train")
    elif damage == "huge_shape":
        with zipfile.ZipFile(mnist_npz) as npz:
            npy = npz.read("x_train.npy")
        _rewrite_npz(mnist_npz, damaged, "x_train.npy", _huge_header(npy))
    else:
        _rewrite_npz(mnist_npz, damaged, "x_train.npy")
        raw = damaged.read_bytes()
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            if damage == "encrypted_flag":
                raw = _set_zip_field(raw, signature, offset, 1, flag=True)
            else:  # method 9, Deflate64: the field after the flags
                raw = _set_zip_field(raw, signature, offset + 2, 9, flag=False)
        damaged.write_bytes(raw)
    with pytest.raises(DataError) as caught:
        data.load_keras_mnist(damaged)
    message = str(caught.value)
    assert message.startswith(f"{damaged}: ") and "\n" not in message
    assert found in message, message


def test_keras_npz_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(DataError) as caught:
        data.load_keras_mnist(tmp_path)
    assert str(caught.value) == f"{tmp_path}: expected an mnist.npz file, found a folder"


def test_keras_npz_loads_only_the_four_arrays(mnist_npz, tmp_path):
    with np.load(mnist_npz) as npz:
        arrays = {key: npz[key] for key in npz.files}
    # A member numpy loads only with pickles on: it was loaded too, and refused the archive.
    np.savez(tmp_path / "mnist.npz", **arrays, notes=np.array([{"from": "a notebook"}]))
    loaded = data.load_keras_mnist(tmp_path / "mnist.npz")
    np.testing.assert_array_equal(loaded.y_test, arrays["y_test"])


def test_keras_npz_that_cannot_be_opened_says_why(mnist_npz, monkeypatch):
    def denied(*args, **kwargs):  # as chmod 000 does for anyone but root
        raise PermissionError(13, "Permission denied", str(mnist_npz))

    monkeypatch.setattr(data, "open", denied, raising=False)  # data.py's open, not the world's
    with pytest.raises(DataError) as caught:
        data.load_keras_mnist(mnist_npz)
    assert str(caught.value) == (f"{mnist_npz}: expected a readable file, found PermissionError: "
                                 f"[Errno 13] Permission denied: '{mnist_npz}'")


@pytest.mark.parametrize("download", ["train.csv.zip", "digit-recognizer.zip"])
def test_a_data_dir_holding_kaggle_s_zip_says_to_unzip_it(tmp_path, download):
    (tmp_path / download).write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    with pytest.raises(DataError) as caught:
        data.find_data_dir(tmp_path)
    assert str(caught.value).startswith(
        f"{tmp_path}: expected train.csv (or train.csv.gz), found {download}, not unzipped (")


def test_stratified_split_and_subsample_keep_class_balance(kaggle_dir):
    digits = data.load_kaggle(kaggle_dir)
    x_tr, x_val, y_tr, y_val = data.split_train_val(digits.x_train, digits.y_train, 0.2, seed=0)
    assert len(x_val) == pytest.approx(0.2 * len(digits.x_train), abs=1)
    assert np.bincount(y_val).min() >= 25
    rows = data.subsample_rows(digits.y_train, 500, seed=0)
    y_small = digits.y_train[rows]
    assert len(set(rows)) == 500 and np.bincount(y_small, minlength=10).min() >= 45
    # Row numbers split along with the images: the hold-out's rows name its images.
    *_, val_rows = data.split_train_val(digits.x_train, digits.y_train, 0.2, 0,
                                        np.arange(len(digits.y_train)))
    np.testing.assert_array_equal(digits.x_train[val_rows], x_val)


def _digits_with(counts: dict[int, int], others: int = 100) -> data.Digits:
    """Labelled blank images: counts[d] of digit d, others of every other digit."""
    y = np.concatenate([np.full(counts.get(d, others), d) for d in range(10)])
    x = np.zeros((len(y), 28, 28, 1), np.uint8)
    return data.Digits(x_train=x, y_train=y, x_test=x[:1], test_ids=np.ones(1),
                       train_path="train.csv")


@pytest.mark.parametrize("counts, size, needed, message", [
    ({4: 0}, 0, 2, "train.csv: expected at least 2 images of every digit for the plan, "
     "found no image of digit 4"),
    ({7: 2}, 0, 3, "train.csv: expected at least 3 images of every digit for the plan, "
     "found 2 of digit 7"),
    ({}, 25, 3, "--size: expected 0 (every image) or at least 30: 3 of each digit for the plan, "
     "found 25"),
    ({7: 10}, 200, 3, "train.csv: expected at least 3 images of every digit for the plan, "
     "found 2 of digit 7 in a subsample of 200 (--size)"),
])
def test_too_few_images_of_a_digit_for_the_plan(counts, size, needed, message):
    with pytest.raises(DataError) as caught:
        data.plan_training_images(_digits_with(counts), size, seed=0, needed=needed,
                                  purpose="the plan", size_flag="--size")
    assert str(caught.value) == message


def test_a_plan_with_enough_images_gets_its_stratified_subsample():
    digits = _digits_with({7: 10})
    x, y, rows = data.plan_training_images(digits, 200, seed=0, needed=2,
                                           purpose="the plan", size_flag="--size")
    assert len(x) == len(y) == 200 and np.bincount(y).min() == 2
    np.testing.assert_array_equal(digits.y_train[rows], y)
    everything = _digits_with({})
    for size in (0, 995, 1000, 5000):  # 0, too large, or too close to all to stratify: all
        x, y, rows = data.plan_training_images(everything, size, seed=0, needed=2,
                                               purpose="the plan", size_flag="--size")
        assert len(y) == 1000 and sorted(rows) == list(range(1000))


@pytest.mark.realdata
def test_real_competition_files(real_data_dir):
    started = time.perf_counter()
    digits = data.load_kaggle(real_data_dir)
    seconds = time.perf_counter() - started
    assert digits.x_train.shape == (42000, 28, 28, 1)
    assert digits.x_test.shape == (28000, 28, 28, 1)
    counts = np.bincount(digits.y_train, minlength=10).tolist()
    assert counts == [4132, 4684, 4177, 4351, 4072, 3795, 4137, 4401, 4063, 4188]
    print(f"loaded the real train.csv and test.csv in {seconds:.2f}s")
