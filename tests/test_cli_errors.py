"""Every kind of bad input, through both command lines: one stderr line, exit 2, nothing written."""

from __future__ import annotations

import re
import shutil
import sys

import pytest

from src import bench, blend, compare, config, data, fidelity, runs, submit, tune
from src.config import run_cli
from src.errors import DataError
from tests.test_damaged_files import BYTE_CASES, damage_bytes
from tests.test_data import TRAIN_CASES, _break_train

CLIS = {"tune": tune.main, "submit": submit.main}
CASES = [*TRAIN_CASES, *BYTE_CASES, "missing_file", "test_csv_with_label", "two_rows"]


def _damage(kaggle_dir, case):
    """Break the fixture one way; return the fragment the error line must contain."""
    if case == "missing_file":
        (kaggle_dir / "train.csv").unlink()
        return "expected train.csv (or train.csv.gz), found none"
    if case == "test_csv_with_label":
        shutil.copy(kaggle_dir / "train.csv", kaggle_dir / "test.csv")
        return "test.csv:1: column 1: expected 'pixel0', found 'label'"
    if case == "two_rows":  # digits 0 and 1 only
        header, *rows = (kaggle_dir / "train.csv").read_text().splitlines()
        (kaggle_dir / "train.csv").write_text("\n".join([header, *rows[:2]]) + "\n")
        return "train.csv: expected at least "  # ... images of every digit for ...
    if case in BYTE_CASES:
        return damage_bytes(kaggle_dir, case)
    return _break_train(kaggle_dir / "train.csv", case)


@pytest.mark.parametrize("cli", list(CLIS))
@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(kaggle_dir, tmp_path, capsys, cli, case):
    expected = _damage(kaggle_dir, case)
    outputs = [tmp_path / "artifacts", tmp_path / "submissions"]
    argv = ["--data-dir", str(kaggle_dir), "--profile", "smoke",
            "--artifacts-dir", str(outputs[0]), "--submissions-dir", str(outputs[1])]
    assert run_cli(CLIS[cli], argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(expected, err) if case in BYTE_CASES else expected in err
    assert not any(path.exists() for path in outputs)


@pytest.mark.parametrize("cli", [fidelity.main, bench.main], ids=["fidelity", "bench"])
def test_only_the_commands_that_fetch_data_offer_download(cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["--download"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --download") and err.count("\n") == 1


def test_a_stray_argument_holding_a_line_break_is_still_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        runs.main(["x\ny"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: unrecognized arguments: x\\ny (see python -m src.runs --help)\n")


def test_fidelity_refuses_submissions_dir_it_would_not_use(capsys):
    with pytest.raises(SystemExit) as exit_:
        fidelity.main(["--submissions-dir", "elsewhere"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --submissions-dir")
    assert err.count("\n") == 1


@pytest.mark.parametrize("cli, flag", [
    (submit.main, "--check"),  # an empty --check ran a whole 30-minute training instead
    (submit.main, "--submissions-dir"), (tune.main, "--artifacts-dir"),
    (tune.main, "--data-dir"), (submit.main, "--keras-npz"),
    (fidelity.main, "--artifacts-dir"), (blend.main, "--submissions-dir"),
    (runs.main, "--submissions-dir"), (blend.main, "RUN"), (compare.main, "RUN")])
@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_path_flag_is_refused_not_the_current_folder(capsys, cli, flag, empty):
    # a run folder given as '' was read as the current folder
    err = _path_flag_error(capsys, cli, flag, empty)
    assert err.startswith(f"error: argument {flag}: expected a path, found {empty!r} (see ")


def _path_flag_error(capsys, cli, flag: str, path: str) -> str:
    """The one line, exit code 2, of cli with path as flag (RUN: a run folder)."""
    if flag == "RUN":
        argv = ["run-a", path]
    else:
        argv = [*(["run-a", "run-b"] if cli is blend.main else []), flag, path]
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


@pytest.mark.parametrize("cli, flag", [
    (submit.main, "--submissions-dir"), (tune.main, "--data-dir"), (bench.main, "--data-dir"),
    (blend.main, "--submissions-dir"), (blend.main, "RUN"), (compare.main, "RUN")])
@pytest.mark.parametrize("path, shown", [("runs/bad\udcffdir", "runs/bad\\xffdir"),
                                         ("runs/a\nb", "runs/a\\nb")])
def test_a_path_flag_that_is_no_text_on_one_line_is_refused(capsys, cli, flag, path, shown):
    """A byte that is not UTF-8 (a Latin-1 folder name) was a traceback once a report or
    figure named the path: blend and bench after all their work."""
    err = _path_flag_error(capsys, cli, flag, path)
    assert err.startswith(f"error: argument {flag}: expected a path in text on one line, found "
                          f"'{shown}' (a line break, control character or byte that is not "
                          "UTF-8) (see ")


def test_a_tab_in_a_path_is_fine_and_the_environment_s_data_dir_is_checked_too(monkeypatch):
    assert config.path_flag("data/tab\there") == "data/tab\there"  # it breaks no line
    # bench wrote it into its report and crashed there, after all its timings
    monkeypatch.setenv(config.DATA_DIR_ENV, "/data/bad\udcffdir")
    with pytest.raises(DataError) as caught:
        data.find_data_dir()
    assert str(caught.value) == ("$DIGITS_DATA_DIR: expected a path in text on one line, found "
                                 "'/data/bad\\xffdir' (a line break, control character or byte "
                                 "that is not UTF-8)")


def test_a_data_dir_that_is_a_file_or_a_runs_folder_that_is_not_there_says_so(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("label\n")
    assert run_cli(submit.main, ["--data-dir", str(tmp_path / "train.csv")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'train.csv'}: --data-dir: expected a "
                                       "folder holding train.csv, found a file\n")
    # Given by hand, a folder that is not there is a typo, not a ledger of no runs yet.
    assert run_cli(runs.main, ["--submissions-dir", str(tmp_path / "subs")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'subs'}: --submissions-dir: "
                                       "expected a folder of run folders, found no such folder\n")


@pytest.mark.parametrize("where, found", [("/dev/null", "something other than a file"),
                                          ("folder", "a folder"), ("nowhere", "no such file")])
def test_check_says_what_stands_where_the_csv_should_be(tmp_path, capsys, where, found):
    path = tmp_path / "folder" if where == "folder" else (
        tmp_path / "nowhere" if where == "nowhere" else where)
    (tmp_path / "folder").mkdir()
    (tmp_path / "test.csv").write_text("pixel0\n0\n")
    assert run_cli(submit.main, ["--check", str(path), "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {path}: expected a submission CSV, found {found}\n"


@pytest.mark.parametrize("cli", [tune.main, submit.main, blend.main], ids=["tune", "submit",
                                                                         "blend"])
def test_a_path_too_long_for_the_system_is_one_line(tmp_path, capsys, cli):
    """Python 3.11's Path.is_file() raises ENAMETOOLONG (and EACCES in a folder this user may
    not search) where it would return False: it was a traceback and exit code 1."""
    too_long = tmp_path / ("a" * 300)
    argv = ([str(too_long), str(tmp_path)] if cli is blend.main else
            ["--data-dir", str(too_long), "--profile", "smoke"])
    argv += ["--artifacts-dir", str(tmp_path / "artifacts")] if cli is not blend.main else []
    assert run_cli(cli, [*argv, "--submissions-dir", str(tmp_path / "submissions")]) == 2
    err = capsys.readouterr().err
    # Python 3.11 to 3.13 raise where they look at it; a later one may call it missing
    assert err.startswith(f"error: {too_long}") and err.count("\n") == 1
    if sys.version_info < (3, 14):
        assert err == (f"error: {too_long}: expected a path this user can read, found File "
                       "name too long (ENAMETOOLONG)\n")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "submissions").exists()
