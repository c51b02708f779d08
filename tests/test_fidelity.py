"""python -m src.fidelity: which configurations it picks, the rank correlation, and a
smoke run from a real search to its table, JSON and figure."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from src import fidelity, search_results, tune
from src.config import run_cli
from src.model import DEFAULT_HPARAMS


def _ranked(count: int, default_at: int) -> pd.DataFrame:
    rows = [{"trial_id": f"{i:02d}", "rank": i + 1, "status": "COMPLETED",
             "val_log_loss": 0.05 + i / 1000,
             **DEFAULT_HPARAMS, "dropout": round(0.3 + i / 100, 2) if i != default_at else 0.25}
            for i in range(count)]
    return pd.DataFrame(rows)


def test_picks_hold_the_default_the_top_three_and_the_last():
    picked = fidelity.pick_spread(_ranked(10, default_at=6), 6, DEFAULT_HPARAMS)
    assert list(picked.index) == sorted(picked.index) and len(picked) == 6
    assert {0, 1, 2, 6, 9} <= set(picked.index)
    assert len(fidelity.pick_spread(_ranked(4, default_at=0), 6, DEFAULT_HPARAMS)) == 4
    # --configs 4 with the default in the top three: the one left is the last, not rank 4
    assert list(fidelity.pick_spread(_ranked(10, default_at=0), 4, DEFAULT_HPARAMS).index) == [
        0, 1, 2, 9]


def test_too_few_configurations_is_an_error_naming_the_search_file():
    # It named --configs, which was not given and could not help.
    with pytest.raises(fidelity.DataError) as caught:
        fidelity.pick_spread(_ranked(2, default_at=0), 6, DEFAULT_HPARAMS, "tune/trials.csv")
    assert str(caught.value) == ("tune/trials.csv: expected at least 3 distinct completed "
                                 "configurations in the search, found 2 (search more trials "
                                 "(--max-trials))")


def test_rank_agreement_is_spearman_of_the_lowest_log_loss_against_the_best_oof():
    assert fidelity.rank_agreement([0.05, 0.06, 0.07], [0.99, 0.98, 0.97]) == pytest.approx(1)
    assert fidelity.rank_agreement([0.05, 0.06, 0.07], [0.97, 0.98, 0.99]) == pytest.approx(-1)
    assert fidelity.rank_agreement([4, 3, 2, 1], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_rank_agreement_is_undefined_when_every_oof_is_equal():
    """scipy's NaN went into the JSON as NaN, which JSON readers refuse."""
    rho = fidelity.rank_agreement([0.05, 0.06, 0.07], [0.98, 0.98, 0.98])
    assert rho is None
    assert fidelity.describe_agreement(rho) == "Spearman undefined (every OOF accuracy equal)"
    assert fidelity.describe_agreement(0.771) == "Spearman 0.77"


def test_best_trial_of_each_configuration_best_first(tmp_path):
    frame = _ranked(3, default_at=0)
    frame = pd.concat([frame, frame.iloc[[1]].assign(trial_id="09", rank=4, val_log_loss=0.5),
                       frame.iloc[[2]].assign(trial_id="10", rank=None, status="FAILED")])
    frame.to_csv(tmp_path / "trials.csv", index=False)
    ranked = fidelity.read_ranked_configs(tmp_path / "trials.csv",
                                          search_results.search_space_names())
    assert list(ranked["trial_id"]) == ["00", "01", "02"]  # as KerasTuner names them
    assert ranked["val_log_loss"].is_monotonic_increasing


def test_a_configuration_trained_in_two_trials_keeps_the_ranks_of_trials_csv(tmp_path):
    # Hyperband trains a configuration it promotes again: trials 00 and 02 are one network.
    frame = _ranked(3, default_at=0)
    frame.loc[2, "dropout"] = frame.loc[0, "dropout"]
    frame = frame.assign(val_log_loss=[0.06, 0.07, 0.05], rank=[2, 3, 1])
    frame.to_csv(tmp_path / "trials.csv", index=False)
    ranked = fidelity.read_ranked_configs(tmp_path / "trials.csv",
                                          search_results.search_space_names())
    assert list(ranked["trial_id"]) == ["02", "01"]
    assert list(ranked["rank"]) == [1, 3]  # as the leaderboard and the member rank3 say


def test_configurations_that_differ_only_in_filters_of_absent_blocks_are_one(tmp_path):
    # filters_2 is drawn for a two-block network too: the same network was measured twice.
    frame = _ranked(3, default_at=0).assign(conv_blocks=2)
    frame.loc[1, "filters_2"] = 64 if frame.loc[0, "filters_2"] != 64 else 128
    frame.loc[1, "dropout"] = frame.loc[0, "dropout"]
    frame.to_csv(tmp_path / "trials.csv", index=False)
    ranked = fidelity.read_ranked_configs(tmp_path / "trials.csv",
                                          search_results.search_space_names())
    assert list(ranked["trial_id"]) == ["00", "02"]


@pytest.mark.parametrize("damage, message", [
    # a hand-edited network or score: its line and column, before anything trains
    (lambda f: f.assign(filters_0=f["filters_0"].astype(object).where(f.index != 2, "abc")),
     "trials.csv:4: filters_0: expected one of 16, 32, 48, found 'abc'"),
    (lambda f: f.assign(dense_units=f["dense_units"].where(f.index != 1, 100)),
     "trials.csv:3: dense_units: expected one of 64, 128, 256, 512, found 100"),
    (lambda f: f.assign(batch_norm=f["batch_norm"].astype(object).where(f.index != 3, "maybe")),
     "trials.csv:5: batch_norm: expected one of True, False, found 'maybe'"),
    (lambda f: f.assign(val_log_loss=f["val_log_loss"].astype(object).where(f.index != 4, "x")),
     "trials.csv:6: val_log_loss: expected a log-loss >= 0, found 'x'"),
    # a score no search writes: it was ranked and trained on
    (lambda f: f.assign(val_log_loss=f["val_log_loss"].where(f.index != 4, -5)),
     "trials.csv:6: val_log_loss: expected a log-loss >= 0, found '-5.0'"),
    # trained to the end, then saved as -9223372036854775808 beside 1e300 in the report
    (lambda f: f.assign(rank=f["rank"].astype(object).where(f.index != 2, "1e300")),
     "trials.csv:4: rank: expected a rank, an integer 1..6 (the trials listed), found '1e300'"),
    # digits all, but past a file name's length: a traceback after the first configuration
    (lambda f: f.assign(trial_id=f["trial_id"].astype(object).where(f.index != 3, "9" * 5000)),
     f"trials.csv:5: trial_id: expected a trial id of 1 to 10 digits, found '{'9' * 40}'..."),
    # a float or an empty cell in a column of whole numbers: the line it is on
    (lambda f: f.assign(filters_0=f["filters_0"].astype(object).where(f.index != 3, "48.5")),
     "trials.csv:5: filters_0: expected one of 16, 32, 48, found 48.5"),
    (lambda f: f.assign(conv_blocks=f["conv_blocks"].astype(object).where(f.index != 2, "")),
     "trials.csv:4: conv_blocks: expected an integer from 2 to 3, found ''"),
])
def test_a_damaged_trials_csv_names_line_and_column(tmp_path, damage, message):
    path = tmp_path / "trials.csv"
    damage(_ranked(6, default_at=0)).to_csv(path, index=False)
    with pytest.raises(fidelity.DataError) as caught:
        fidelity.read_ranked_configs(path, search_results.search_space_names())
    assert str(caught.value) == f"{tmp_path}/{message}"


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "trials.csv"
    lines = _ranked(6, default_at=0).to_csv(index=False).splitlines()
    lines[4] = lines[4].replace(",32,", ",abc,", 1)  # data row 3's filters_0
    path.write_text("\n".join([*lines[:2], "", *lines[2:]]) + "\n")  # a blank line 3
    with pytest.raises(fidelity.DataError) as caught:
        fidelity.read_ranked_configs(path, search_results.search_space_names())
    assert str(caught.value).startswith(f"{path}:6: filters_0: ")


@pytest.mark.parametrize("with_rank", [False, True], ids=["trial_ids_first", "rank_first"])
def test_a_shifted_first_row_is_refused(tmp_path, with_rank):
    """One value too many on the first row: pandas would read every row shifted. With
    trials.csv's rank 1, 2, ... first, pandas' index of a shifted read counts rows too."""
    path = tmp_path / "trials.csv"
    frame = _ranked(6, default_at=0)
    if with_rank:
        frame.insert(0, "rank", frame.pop("rank"))
    lines = frame.to_csv(index=False).splitlines()
    path.write_text("\n".join([lines[0], lines[1] + ",0", *lines[2:]]) + "\n")
    with pytest.raises(fidelity.DataError) as caught:
        fidelity.read_ranked_configs(path, search_results.search_space_names())
    width = len(lines[0].split(","))
    assert str(caught.value) == f"{path}:2: expected {width} values, found {width + 1}"


def test_a_trial_id_of_other_than_digits_is_refused(tmp_path):
    """A trial id names its fold models' folder: '../x' would write outside the artifacts."""
    path = tmp_path / "trials.csv"
    _ranked(6, default_at=0).assign(trial_id=["00", "01", "../../x", "03", "04", "05"]).to_csv(
        path, index=False)
    with pytest.raises(fidelity.DataError) as caught:
        fidelity.read_ranked_configs(path, search_results.search_space_names())
    assert str(caught.value) == (f"{path}:4: trial_id: expected a trial id of 1 to 10 "
                                 "digits, found '../../x'")


def test_a_trials_csv_without_trial_ids_is_refused(tmp_path):
    path = tmp_path / "trials.csv"
    _ranked(6, default_at=0).drop(columns="trial_id").to_csv(path, index=False)
    with pytest.raises(fidelity.DataError) as caught:
        fidelity.read_ranked_configs(path, search_results.search_space_names())
    assert str(caught.value) == (f"{path}: expected a trials.csv written by python -m "
                                 "src.tune, found no column 'trial_id'")


@pytest.mark.parametrize("text, message", [
    ("trial_id,status\n01,COMPLETED\n02,COMPLETED,extra\n",
     "trials.csv:3: expected 2 values, found 3"),
    ("", "trials.csv:1: expected a trials.csv written by python -m src.tune, found an empty "
         "file"),
])
def test_an_unreadable_trials_csv_is_one_line_exit_2(tmp_path, capsys, text, message):
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / "trials.csv").write_text(text)
    code = run_cli(fidelity.main, ["--artifacts-dir", str(tmp_path), "--profile", "smoke"])
    assert code == 2 and capsys.readouterr().err == f"error: {tmp_path}/tune/{message}\n"


def test_fewer_configs_than_the_default_and_the_top_three_is_refused(tmp_path, capsys):
    code = run_cli(fidelity.main, ["--artifacts-dir", str(tmp_path), "--configs", "3"])
    assert code == 2
    assert capsys.readouterr().err == ("error: --configs: expected an integer 4..2147483647, "
                                       "found 3\n")


def test_a_search_scored_before_the_log_loss_objective_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "tune").mkdir()
    _ranked(3, default_at=0).rename(columns={"val_log_loss": "val_accuracy"}).to_csv(
        tmp_path / "tune" / "trials.csv", index=False)
    code = run_cli(fidelity.main, ["--artifacts-dir", str(tmp_path), "--profile", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no column 'val_log_loss'" in err


def test_a_search_that_scored_every_pick_the_same_is_refused_before_training(tmp_path,
                                                                           capsys):
    (tmp_path / "tune").mkdir()
    _ranked(6, default_at=0).assign(val_log_loss=2.0).to_csv(tmp_path / "tune" / "trials.csv",
                                                              index=False)
    code = run_cli(fidelity.main, ["--artifacts-dir", str(tmp_path), "--profile", "smoke"])
    assert code == 2 and capsys.readouterr().err == (
        f"error: {tmp_path}/tune/trials.csv: val_log_loss: expected search scores that "
        "differ, to rank the configurations by, found 2 for all 6 picked\n")
    assert not (tmp_path / "fidelity").exists()


def test_no_search_is_one_line_exit_2(tmp_path, capsys):
    code = run_cli(fidelity.main, ["--artifacts-dir", str(tmp_path), "--profile", "smoke"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "trials.csv" in err
    assert not (tmp_path / "fidelity").exists()


@pytest.mark.slow
def test_smoke_fidelity_trains_each_pick_and_writes_new_files(kaggle_dir_readonly, tmp_path,
                                                              capsys):
    common = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(tmp_path),
              "--profile", "smoke"]
    assert tune.main([*common, "--tuner", "random", "--max-trials", "3", "--tune-epochs", "1",
                      "--tune-samples", "300"]) == 0
    args = [*common, "--configs", "4", "--epochs", "1", "--folds", "2", "--train-samples", "300"]
    assert run_cli(fidelity.main, args) == 0
    assert "Spearman" in capsys.readouterr().out
    assert run_cli(fidelity.main, args) == 0  # fold models reused, files new
    out = capsys.readouterr().out
    assert "Spearman" in out and "reusing" in out  # the second run's own output
    first, second = sorted((tmp_path / "fidelity").glob("fidelity-*.json"))
    record = json.loads(first.read_text())
    assert len(record["rows"]) == 3 and -1 <= record["spearman"] <= 1
    assert [row["search_rank"] for row in record["rows"]] == [1, 2, 3]
    assert all(0 <= row["oof_accuracy"] <= 1 for row in record["rows"])
    for path in (first, second):
        assert path.with_suffix(".md").is_file() and path.with_suffix(".png").is_file()
