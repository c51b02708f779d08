"""The ensemble the search chooses: greedy forward selection on the hold-out (pure arrays),
and python -m src.submit taking it before the top ranks."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from src import search_ensemble, search_results
from src.config import Config
from src.errors import DataError
from src.members import load_members
from src.model import DEFAULT_HPARAMS, define_search_space

LABELS = np.arange(300) % 10


def _network(wrong: slice, confidence: float = 0.9) -> np.ndarray:
    """Probabilities sure of the true digit, except on `wrong`, where sure of the next one."""
    guess = LABELS.copy()
    guess[wrong] = (guess[wrong] + 1) % 10
    probs = np.full((len(LABELS), 10), (1 - confidence) / 9)
    probs[np.arange(len(LABELS)), guess] = confidence
    return probs


def test_greedy_selection_takes_a_network_with_other_errors_over_a_near_copy():
    best = _network(slice(0, 30))
    near_copy = 0.97 * best + 0.03 / 10  # the same errors, a little less sure
    other_errors = _network(slice(150, 180))
    chosen = search_ensemble.choose_ensemble([best, near_copy, other_errors], LABELS)
    assert [index for index, _ in chosen] == [0, 2]
    assert chosen[1][1] < (1 - search_ensemble.MIN_ENSEMBLE_GAIN) * chosen[0][1]
    assert chosen[0][1] == pytest.approx(search_ensemble.holdout_log_loss(best, LABELS))
    # Alone with the best, the near-copy lowers the log-loss by less than the minimum gain.
    assert [index for index, _ in search_ensemble.choose_ensemble([best, near_copy], LABELS)] == [0]
    chosen = search_ensemble.choose_ensemble([best, near_copy, other_errors], LABELS, most=1)
    assert len(chosen) == 1


def test_the_best_ties_a_network_with_as_many_other_errors_and_beats_one_with_more():
    best = _network(slice(0, 30))
    other_errors = _network(slice(150, 180))  # as many errors, on other images
    more_errors = _network(slice(100, 190))
    p_values = search_ensemble.tie_p_values([best, other_errors, more_errors], LABELS)
    assert p_values[0] == 1.0
    assert p_values[1] > 0.4  # the same mean log-loss: no evidence either way
    assert p_values[2] < 0.001
    losses = search_ensemble.per_image_log_loss(more_errors, LABELS)
    assert losses.mean() == pytest.approx(search_ensemble.holdout_log_loss(more_errors, LABELS))


@pytest.mark.parametrize("p_values, costs, first", [
    ([1.0, 0.3, 0.2], [10, 30, 20], 1),   # the costliest of the tied
    ([1.0, 0.3, 0.01], [10, 20, 30], 1),  # the costliest is beaten: it is not tied
    ([1.0, 0.01, 0.01], [10, 20, 30], 0),  # the best beats every other
    ([1.0, 0.3, 0.2], [30, 30, 30], 0),   # equal costs: the better ranked
    ([1.0, 0.3, 0.2], [10, 30, 30], 1),
])
def test_the_ensemble_starts_from_the_costliest_network_tied_with_the_best(p_values, costs,
                                                                           first):
    assert search_ensemble.first_member(p_values, costs) == first


def test_greedy_selection_starts_from_the_given_first_member():
    best = _network(slice(0, 30))
    tied = _network(slice(150, 180))
    chosen = search_ensemble.choose_ensemble([best, tied], LABELS, first=1)
    assert [index for index, _ in chosen] == [1, 0]  # the other errors still join


def test_multiply_adds_count_each_conv_and_dense_layer_once():
    from src.model import DEFAULT_HPARAMS
    # 3x3 convs: 28x28x(9x1x32), 14x14x(9x32x64 + 9x64x64), 7x7x(9x64x128 + 9x128x128);
    # dense: 3x3x128 -> 128 -> 10
    expected = (784 * 9 * 32 + 196 * 9 * (32 * 64 + 64 * 64) + 49 * 9 * (64 * 128 + 128 * 128)
                + 1152 * 128 + 128 * 10)
    assert search_ensemble.network_cost(DEFAULT_HPARAMS) == expected
    one_conv = {**DEFAULT_HPARAMS, "block_convs": 1}
    assert search_ensemble.network_cost(one_conv) < expected / 2


def _write_best_hparams(folder, with_ensemble: bool) -> None:
    top = [{"rank": rank, "trial_id": f"{rank:02d}", "val_accuracy": 0.99 - rank / 100,
            "params": 1, "epochs": 2, "hparams": {"dropout": rank / 10 + 0.1}}
           for rank in (1, 2, 3)]
    best = {"top": top}
    if with_ensemble:
        best["ensemble"] = [{**top[0], "holdout_log_loss": 0.05, "log_loss_gain": None},
                            {**top[2], "holdout_log_loss": 0.04, "log_loss_gain": 0.2}]
    (folder / "tune").mkdir(exist_ok=True)
    (folder / "tune" / "best_hparams.json").write_text(json.dumps(best))


@pytest.mark.parametrize("with_ensemble, names", [(True, ["rank1", "rank3"]),
                                                  (False, ["rank1", "rank2"])])
def test_members_come_from_the_chosen_ensemble_else_the_top_ranks(tmp_path, with_ensemble,
                                                                   names):
    _write_best_hparams(tmp_path, with_ensemble)
    members = load_members(Config(artifacts_dir=str(tmp_path), top_k=2))
    assert [member.name for member in members] == names
    assert members[1].hparams["dropout"] == pytest.approx(int(names[1][-1]) / 10 + 0.1)


def test_a_configuration_keeps_its_leaderboard_rank():
    # Hyperband trains a configuration in several trials (rungs); the best of each
    # configuration is named by its rank in trials.csv, so member rank3 is trials.csv's rank 3.
    def row(rank, dropout, status=search_results.COMPLETED):
        return {"rank": rank, "trial_id": f"trial-{rank}", "status": status,
                "hparams": {"dropout": dropout}}

    rows = [row(1, 0.2), row(2, 0.2), row(None, 0.5, "FAILED"), row(3, 0.4), row(4, 0.3)]
    top = search_results.top_configurations(rows, 2)
    assert [(entry["rank"], entry["hparams"]["dropout"]) for entry in top] == [(1, 0.2), (3, 0.4)]
    assert all("status" not in entry for entry in top) and rows[0]["status"] == "COMPLETED"


def test_one_network_is_one_configuration_whatever_its_absent_blocks_filters():
    # filters_2 is drawn for a two-block network too: Random and Hyperband search can train
    # the same network twice, and it took two of the top places.
    def row(rank, filters_2, blocks=2):
        return {"rank": rank, "trial_id": f"{rank:02d}", "status": search_results.COMPLETED,
                "hparams": {**DEFAULT_HPARAMS, "conv_blocks": blocks, "filters_2": filters_2}}

    rows = [row(1, 64), row(2, 128), row(3, 64, blocks=3), row(4, 128, blocks=3)]
    top = search_results.top_configurations(rows, 3)
    assert [entry["rank"] for entry in top] == [1, 3, 4]


def test_hyperband_ranks_its_last_rung_before_shorter_ones():
    """Trials of 2 epochs scored beside trials of 6 took top places on a lower log-loss
    only a shorter trial's noise could give."""
    import keras_tuner as kt

    def trial(trial_id, rung, log_loss, dropout):
        hp = kt.HyperParameters()
        define_search_space(hp)
        hp.values.update({"dropout": dropout, "tuner/epochs": rung})
        done = kt.engine.trial.Trial(hp, trial_id=trial_id, status=search_results.COMPLETED)
        done.score = log_loss
        for name, value in (("params", 1000), ("epochs", rung)):
            done.metrics.update(name, value)
        return done

    trials = [trial("00", 2, 0.05, 0.2), trial("01", 6, 0.08, 0.3), trial("02", 6, 0.07, 0.4),
              trial("03", 2, 0.09, 0.5)]
    oracle = types.SimpleNamespace(trials={t.trial_id: t for t in trials})
    rows = search_results.rank_trials(oracle, search_results.search_space_names())
    assert [(row["trial_id"], row["rank"]) for row in rows] == [
        ("02", 1), ("01", 2), ("00", 3), ("03", 4)]


@pytest.mark.parametrize("values, found", [
    (np.full((4, 10), np.nan), "an array of float64 holding other values"),  # sklearn's
    (np.zeros((4, 10)), "an array of float64 holding other values"),  # rows renormalised by 0
    (np.full((4, 10), -1.0), "an array of float64 holding other values"),  # scored as 2.30
    (np.full((4, 10), "x"), "an array of <U1 holding other values"),
])
def test_saved_hold_out_probabilities_must_be_probabilities(tmp_path, values, found):
    path = tmp_path / search_ensemble.HOLDOUT_PROBS
    np.save(path, values)
    with pytest.raises(DataError) as caught:
        search_ensemble.read_holdout_probs(path, 4)
    assert str(caught.value) == (f"{path}: expected class probabilities: finite numbers >= 0, "
                                 f"every row above 0, found {found} (rerun with --overwrite)")
    np.save(path, np.full((4, 10), 0.1, dtype=np.float32))
    assert search_ensemble.read_holdout_probs(path, 4).shape == (4, 10)


@pytest.mark.parametrize("rows, found", [
    ([1.5, 2], "[1.5, 2]"),  # cut to 1 and 2: the hold-out-free score counted other images
    ([-3, 2], "[-3, 2]"), ("0-99", '"0-99"'), ([], "[]")])
def test_hand_edited_hold_out_rows_are_one_line(tmp_path, rows, found):
    config = Config(artifacts_dir=str(tmp_path))
    path = tmp_path / "tune" / "best_hparams.json"
    path.parent.mkdir()
    saved = {"data": {"labelled_fingerprint": "abc"}, search_results.HOLDOUT_ROWS: rows}
    path.write_text(json.dumps(saved))
    with pytest.raises(DataError) as caught:
        search_results.read_holdout_rows(config, "abc")
    assert str(caught.value) == (f"{path}: holdout_rows: expected a list of row numbers "
                                 f"(integers >= 0), found {found} (rerun python -m src.tune)")
    assert search_results.read_holdout_rows(config, "other data") is None
    path.write_text(json.dumps({**saved, search_results.HOLDOUT_ROWS: [3, 1]}))
    assert search_results.read_holdout_rows(config, "abc").tolist() == [3, 1]
