"""python -m src.compare: two runs' OOF accuracy, the images that tell them apart, and a
paired test that calls one ahead or a tie."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src import compare, probabilities
from src.config import run_cli
from tests.fixtures import TEST_SIZE, write_run


def _run(data_dir, submissions_dir, name: str, wrong_rows, search_holdout=None):
    """A run folder whose OOF answers are right except on wrong_rows."""
    labels = pd.read_csv(data_dir / "train.csv", usecols=["label"])["label"].to_numpy()
    answers = labels.copy()
    answers[list(wrong_rows)] = (labels[list(wrong_rows)] + 1) % 10
    oof = np.full((len(labels), 10), 0.01)
    oof[np.arange(len(labels)), answers] = 0.91
    run_dir = write_run(submissions_dir, name, correct=len(labels) - len(wrong_rows),
                        total=len(labels))
    probabilities.write_probabilities(run_dir, labels, oof, np.arange(1, TEST_SIZE + 1),
                                      np.full((TEST_SIZE, 10), 0.1), search_holdout)
    return run_dir


def test_the_images_one_run_alone_gets_right_decide():
    right_a = np.ones(1000, bool)
    right_b = np.ones(1000, bool)
    right_a[:3] = False  # both wrong on 0-2; only B right on 3; only A right on 4-33
    right_b[:3] = False
    right_a[3] = False
    right_b[4:34] = False
    result = compare.compare(right_a, right_b)
    assert (result.errors_a, result.errors_b) == (4, 33)
    assert (result.only_a_right, result.only_b_right) == (30, 1)
    assert result.difference == pytest.approx(29 / 1000)
    assert result.p_value == pytest.approx(2 * 32 / 2**31)  # 2 P(X <= 1), X ~ Bin(31, 1/2)
    # 31/1000 (2 [0.8330, 0.9992] - 1), the Clopper-Pearson interval of 30 in 31
    assert (result.low, result.high) == pytest.approx((0.020645, 0.030949), abs=1e-6)
    assert result.verdict() == "run A ahead"
    swapped = compare.compare(right_b, right_a)
    assert swapped.verdict() == "run B ahead"
    assert (swapped.low, swapped.high) == pytest.approx((-result.high, -result.low))


def test_runs_that_differ_on_few_images_tie():
    right_a, right_b = np.ones(1000, bool), np.ones(1000, bool)
    right_a[:5], right_b[5:8] = False, False
    result = compare.compare(right_a, right_b)
    assert result.p_value >= compare.AHEAD_P_VALUE
    assert result.low < 0 < result.high
    assert result.verdict() == "a tie"
    same = compare.compare(right_a, right_a)
    assert (same.p_value, same.low, same.high, same.verdict()) == (1.0, 0.0, 0.0, "a tie")
    with pytest.raises(ValueError, match="at least one image"):
        compare.compare(right_a[:0], right_b[:0])


def test_five_images_against_none_is_a_tie_and_its_interval_says_so():
    # Exact p = 2 / 2**5 = 0.0625: a tie. A Wald interval (5/1000 +- 1.96 sqrt(5 - 0.025)
    # / 1000) left 0 out and so contradicted the verdict printed beside it.
    right_a, right_b = np.ones(1000, bool), np.ones(1000, bool)
    right_b[:5] = False
    result = compare.compare(right_a, right_b)
    assert result.verdict() == "a tie" and result.p_value == pytest.approx(0.0625)
    assert result.low < 0 < result.high


@settings(max_examples=300, deadline=None)
@given(only_a=st.integers(0, 60), only_b=st.integers(0, 60), both_wrong=st.integers(0, 20))
def test_the_interval_leaves_out_zero_exactly_when_the_verdict_is_ahead(only_a, only_b,
                                                                          both_wrong):
    images = 200
    right_a, right_b = np.ones(images, bool), np.ones(images, bool)
    right_a[:both_wrong], right_b[:both_wrong] = False, False
    right_a[both_wrong:both_wrong + only_b] = False
    right_b[both_wrong + only_b:both_wrong + only_b + only_a] = False
    result = compare.compare(right_a, right_b)
    assert (result.only_a_right, result.only_b_right) == (only_a, only_b)
    assert result.low <= result.difference <= result.high
    assert (result.verdict() == "a tie") == (result.low <= 0 <= result.high)


def test_a_gap_that_only_pairing_resolves():
    # The README's seed-42 two-hour runs: 143 and 165 errors of 42,000, 49 and 27 apart;
    # each run's own 95% interval is about +-0.06 point, wider than the gap.
    right_a, right_b = np.ones(42_000, bool), np.ones(42_000, bool)
    right_a[:116], right_b[:116] = False, False  # wrong in both
    right_a[116:143], right_b[143:192] = False, False
    result = compare.compare(right_a, right_b)
    assert (result.errors_a, result.errors_b) == (143, 165)
    assert (result.only_a_right, result.only_b_right) == (49, 27)
    assert result.p_value == pytest.approx(0.01544, abs=1e-5)
    assert (100 * result.low, 100 * result.high) == pytest.approx((0.0096, 0.0909), abs=1e-4)
    assert result.verdict() == "run A ahead"
    assert "McNemar exact p = 0.015: run A ahead" in compare.describe(result)[2]


def test_a_p_value_just_under_the_rule_never_prints_as_the_rule():
    # 25 against 42 images: exact p = 0.0498, "ahead"; rounded, it would print 0.050.
    right_a, right_b = np.ones(1000, bool), np.ones(1000, bool)
    right_a[:42], right_b[42:67] = False, False
    result = compare.compare(right_a, right_b)
    assert 0.0495 < result.p_value < 0.05 and result.verdict() == "run B ahead"
    assert "McNemar exact p = 0.049: run B ahead" in compare.describe(result)[2]
    assert [compare._format_p(p) for p in (1.0, 0.027, 0.000999, 1.6e-4)] == [
        "1.000", "0.027", "9.99e-04", "1.60e-04"]


def test_compare_prints_both_runs_and_the_verdict(kaggle_dir_readonly, tmp_path, capsys):
    first = _run(kaggle_dir_readonly, tmp_path / "a", "run-a", range(0, 2))
    second = _run(kaggle_dir_readonly, tmp_path / "b", "run-b", range(2, 40))
    total = len(pd.read_csv(kaggle_dir_readonly / "train.csv", usecols=["label"]))
    assert run_cli(compare.main, [str(first), str(second),
                                  "--data-dir", str(kaggle_dir_readonly)]) == 0
    out = capsys.readouterr().out
    assert f"on {total} images: run A" in out
    assert "(2 errors), run B" in out and "(38 errors)" in out
    assert "only run A right on 38, only run B right on 2" in out
    assert "run A ahead" in out
    assert "without the" not in out  # neither run came from a search


def test_compare_needs_only_train_csv(kaggle_dir_readonly, tmp_path, capsys):
    only_train = tmp_path / "data"
    only_train.mkdir()
    (only_train / "train.csv").write_bytes((kaggle_dir_readonly / "train.csv").read_bytes())
    first = _run(only_train, tmp_path / "a", "run-a", range(0, 3))
    second = _run(only_train, tmp_path / "b", "run-b", range(0, 5))
    assert run_cli(compare.main, [str(first), str(second), "--data-dir", str(only_train)]) == 0
    assert "only run A right on 2, only run B right on 0" in capsys.readouterr().out


def test_compare_also_leaves_out_the_images_a_search_chose_on(kaggle_dir_readonly, tmp_path,
                                                            capsys):
    total = len(pd.read_csv(kaggle_dir_readonly / "train.csv", usecols=["label"]))
    held_a, held_b = np.zeros(total, bool), np.zeros(total, bool)
    held_a[:20], held_b[10:30] = True, True  # the union, 30 images, is left out
    first = _run(kaggle_dir_readonly, tmp_path / "a", "run-a", [], search_holdout=held_a)
    second = _run(kaggle_dir_readonly, tmp_path / "b", "run-b", range(0, 40),
                  search_holdout=held_b)
    assert run_cli(compare.main, [str(first), str(second),
                                  "--data-dir", str(kaggle_dir_readonly)]) == 0
    out = capsys.readouterr().out
    assert "without the 30 images a search chose a run's members on:" in out
    assert f"on {total - 30} images: run A 100.000% (0 errors)" in out
    assert "(10 errors)" in out


@pytest.mark.parametrize("held", ["none", "every"])
def test_a_search_holdout_of_no_image_or_every_image(kaggle_dir_readonly, tmp_path, capsys, held):
    """A hold-out of no image is compared once (it printed "without the 0 images" and the
    same comparison again); one of every image leaves nothing to compare."""
    total = len(pd.read_csv(kaggle_dir_readonly / "train.csv", usecols=["label"]))
    first = _run(kaggle_dir_readonly, tmp_path / "a", "run-a", [1],
                 search_holdout=np.full(total, held == "every"))
    second = _run(kaggle_dir_readonly, tmp_path / "b", "run-b", [2])
    assert run_cli(compare.main, [str(first), str(second),
                                  "--data-dir", str(kaggle_dir_readonly)]) == 0
    out = capsys.readouterr().out
    if held == "none":
        assert "without the" not in out and out.count("only run A right on") == 1
    else:
        assert f"without the {total} images a search chose a run's members on:\n" in out
        assert out.endswith("  none left to compare\n")


def test_one_folder_twice_or_none_is_one_line(kaggle_dir_readonly, tmp_path, capsys):
    run_dir = _run(kaggle_dir_readonly, tmp_path, "run-a", [1])
    assert run_cli(compare.main, [str(run_dir), str(run_dir),
                                  "--data-dir", str(kaggle_dir_readonly)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the same one" in err
    assert run_cli(compare.main, [str(run_dir), str(tmp_path / "gone"),
                                  "--data-dir", str(kaggle_dir_readonly)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gone" in err and "no such folder" in err
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert run_cli(compare.main, [str(run_dir), str(not_a_run),
                                  "--data-dir", str(kaggle_dir_readonly)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "oof.csv.gz" in err
