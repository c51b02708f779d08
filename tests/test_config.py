"""Profiles, flag overrides, and the one-line errors of the shared command line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import src
from src import config, util
from src.config import Config
from src.errors import DataError
from tests.conftest import REPO_ROOT


def _parse(argv):
    parser = config.build_parser("prog", "test")
    for name in ("epochs", "folds", "max_trials", "tta", "jobs", "batch_size", "tuner",
                 "trial_seconds", "pseudo_epochs"):
        config.add_override(parser, name, "test")
    config.add_minutes(parser)
    return config.config_from_args(parser.parse_args(argv))


def test_profile_sets_values_and_flags_override_them():
    smoke = _parse(["--profile", "smoke"])
    assert smoke.epochs == config.PROFILES["smoke"]["epochs"]
    assert _parse(["--profile", "smoke", "--epochs", "7"]).epochs == 7
    assert _parse(["--profile", "full"]).tta is True
    assert _parse(["--profile", "full", "--no-tta"]).tta is False
    assert smoke.jobs == 1 and _parse(["--profile", "quick"]).jobs == 0  # 0: auto
    assert _parse(["--profile", "smoke", "--jobs", "2"]).jobs == 2


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "-1"], "--epochs: expected an integer 1..10000, found -1"),
    (["--max-trials", "0"], "--max-trials: expected an integer 1..10000, found 0"),
    (["--folds", "1"], "--folds: expected an integer 2..2147483647, found 1"),
    (["--jobs", "-1"], "--jobs: expected an integer 0..256, found -1"),
    # beyond NumPy's seeds (fold 1 of --seed 4294967295 crashed after fold 0 was saved)
    (["--seed", "4294967295"], "--seed: expected an integer 0..2147483647, found 4294967295"),
    (["--batch-size", "99999999999999999999"],
     "--batch-size: expected an integer 1..65536, found 99999999999999999999"),
    (["--epochs", "2147483648"], "--epochs: expected an integer 1..10000, found 2147483648"),
    # Counts this large exhausted memory (a calibration batch of 2**31 images, a list of
    # 2**31 trials) or hung in the planner before the first line.
    (["--batch-size", "2147483647"], "--batch-size: expected an integer 1..65536, found "
                                     "2147483647"),
    (["--max-trials", "2147483647"], "--max-trials: expected an integer 1..10000, found "
                                     "2147483647"),
    (["--minutes", "1e308"], "--minutes: expected a number of minutes up to 525600 (a year), "
                             "found 1e+308"),
    # its seconds overflowed to -inf in the search's plan: a traceback after timing
    (["--minutes=-1e308"], "--minutes: expected a number of minutes up to 525600 (a year), "
                           "found -1e+308"),
    # a plan priced a million fold models at once on 2 cores
    (["--jobs", "1000000"], "--jobs: expected an integer 0..256, found 1000000"),
    # no pseudo-labelled round without a threshold (or a plan): the flag was dropped
    (["--profile", "smoke", "--pseudo-epochs", "5"], "--pseudo-epochs: expected "
     "--pseudo-threshold P with --pseudo-epochs (no pseudo-labelled round without one), found "
     "--pseudo-epochs alone"),
    (["--trial-seconds", "1e308", "--tuner", "random"],
     "--trial-seconds: expected a number of seconds 0..31536000 (0: off), found 1e+308"),
])
def test_out_of_range_values_name_the_flag(argv, message):
    with pytest.raises(DataError) as caught:
        _parse(argv)
    assert str(caught.value) == message


@pytest.mark.parametrize("field, value, message", [
    ("tune_epochs", 43046721, "--tune-epochs: expected an integer 1..10000, found 43046721"),
    ("repeats", 100000, "--repeats: expected an integer 1..100, found 100000"),
    ("top_k", 2**31 - 1, "--top-k: expected an integer 1..100, found 2147483647"),
])
def test_counts_of_src_tune_and_src_submit_have_a_ceiling(field, value, message):
    with pytest.raises(DataError) as caught:
        Config(**{field: value}).validate()
    assert str(caught.value) == message


def test_unknown_choice_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        _parse(["--profile", "huge"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --profile")


def test_run_cli_turns_data_errors_into_exit_2(capsys):
    def main(argv):
        raise DataError("an integer 0..255", "'256'", file="train.csv", line=3, column="pixel1")

    assert config.run_cli(main, []) == 2
    assert capsys.readouterr().err == (
        "error: train.csv:3: pixel1: expected an integer 0..255, found '256'\n")


@pytest.mark.parametrize("argv, said", [
    (["--seed", "7"], "run the same command again to resume"),
    (["--overwrite"], "run the command again without --overwrite to resume, or with it to "
                      "start over"),
    (["--fresh", "--seed", "7"], "run the command again without --fresh to resume, or with "
                                 "it to start over"),
])
def test_ctrl_c_says_how_to_resume(capsys, argv, said):
    def main(argv):
        raise KeyboardInterrupt

    assert config.run_cli(main, argv) == 130
    assert capsys.readouterr().err == f"interrupted: {said}\n"


def test_ctrl_c_inside_a_c_call_is_ctrl_c(capsys):
    # How CPython reports a KeyboardInterrupt raised while TensorFlow's C code ran.
    def main(argv):
        raise SystemError("<built-in function TFE_Py_Execute> returned a result with an "
                          "exception set") from KeyboardInterrupt()

    assert config.run_cli(main, []) == 130
    assert capsys.readouterr().err == "interrupted: run the same command again to resume\n"

    def broken(argv):
        raise SystemError("a real one")

    with pytest.raises(SystemError, match="a real one"):
        config.run_cli(broken, [])


def _parse_budget(argv):
    parser = config.build_parser("prog", "test")
    config.add_override(parser, "epochs", "test")
    config.add_minutes(parser)
    return config.config_from_args(parser.parse_args(argv))


def test_profiles_are_budgets_and_smoke_plans_nothing():
    assert _parse_budget(["--profile", "quick"]).minutes == 30
    assert _parse_budget(["--profile", "full"]).minutes == 120
    smoke = _parse_budget(["--profile", "smoke"])
    assert smoke.minutes == 0 and not smoke.planned
    given = _parse_budget(["--profile", "smoke", "--minutes", "7.5"])
    assert given.minutes == 7.5 and given.planned
    # A given 0 is planned too: the plan answers it with the shortest workable budget.
    assert _parse_budget(["--profile", "smoke", "--minutes", "0"]).planned


def test_flags_given_hold_only_what_the_command_line_set():
    assert _parse_budget([]).flags_given == frozenset()
    chosen = _parse_budget(["--epochs", "7", "--minutes", "8", "--source", "kaggle"])
    assert chosen.flags_given == {"epochs", "minutes", "source"}


@pytest.mark.parametrize("text", ["abc", "inf", "nan", ""])
def test_a_budget_that_is_no_number_names_the_flag(text):
    with pytest.raises(DataError) as caught:
        _parse_budget(["--minutes", text])
    assert str(caught.value) == (
        f"--minutes: expected a number of minutes, such as 30, found {text!r}")


def _parse_search(argv):
    parser = config.build_parser("prog", "test")
    for name in ("tuner", "trial_seconds"):
        config.add_override(parser, name, "test")
    return config.config_from_args(parser.parse_args(argv))


def test_profiles_search_by_epochs():
    quick, full = _parse_search(["--profile", "quick"]), _parse_search(["--profile", "full"])
    for profile in (quick, full):
        assert profile.tuner == "bayesian" and not profile.include_default
    # Equal-epoch trials rank networks as full training does (README, search fidelity).
    assert quick.trial_seconds == 0 and full.trial_seconds == 0
    assert full.wide_space and not quick.wide_space
    # Hyperband's rungs count epochs: the profile's seconds per trial go, a given one fails.
    assert _parse_search(["--tuner", "hyperband"]).trial_seconds == 0
    with pytest.raises(DataError, match="^--trial-seconds: expected --tuner bayesian or random"):
        _parse_search(["--tuner", "hyperband", "--trial-seconds", "20"])


@pytest.mark.parametrize("text, shown", [
    ("plain text, é too, a\xa0no-break space", "plain text, é too, a\xa0no-break space"),
    ("a\nb\r\u2028", "a\\nb\\r\\u2028"),
    ("run\udcff", "run\\xff"),  # os.fsdecode's stand-in for a byte that is not UTF-8
])
def test_error_lines_show_any_text_on_one_line(text, shown):
    assert util.printable(text) == shown and util.is_plain_text(shown)


@pytest.mark.slow
def test_ctrl_c_while_a_stage_still_imports_is_one_line_exit_130():
    # Before run_cli takes Ctrl-C over, TensorFlow's import takes seconds: a 40-line
    # traceback from inside it, where every later Ctrl-C is one line.
    process = subprocess.Popen([sys.executable, "-m", "src.tune", "--help"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps, deadline = Path(f"/proc/{process.pid}/maps"), time.monotonic() + 60
    while time.monotonic() < deadline:  # TensorFlow's library is loading: src was imported
        if "tensorflow" in maps.read_text():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and out == ""
    assert err.splitlines()[-1] == "interrupted: before the command started; nothing was written"
    assert "Traceback" not in err
    # Imported otherwise (here by pytest), Ctrl-C stays Python's own.
    assert signal.getsignal(signal.SIGINT) is not src._interrupted_while_starting
