"""--minutes: the planner on stand-in speeds, the budget on a stand-in clock, and the
command lines end to end on the fixture."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from src import (
    budget,
    calibrate,
    document,
    ensemble,
    plan,
    plan_files,
    report,
    search_plan,
    submit,
    tune,
    tuners,
)
from src.calibrate import Speed
from src.config import Config, run_cli
from src.data import load_kaggle
from src.errors import DataError
from src.members import Member
from src.model import DEFAULT_HPARAMS
from src.search_results import best_hparams_path

# About the default CNN in one process on the 2-core VM (README: a 20-epoch fold of
# 28,000 images trained alone in 4m45s); a GPU stands in as 20 times that.
CPU = Speed(train_images_per_second=2200, predict_images_per_second=10_000,
            startup_seconds=4.0)
GPU = Speed(44_000, 200_000, 4.0)
REAL = plan_files.Sizes(train=42_000, test=28_000)
CALIBRATED_AFTER = 15.0  # seconds of loading and timing before the plan
SHIPPED_TABLE = plan.PLAN_TABLE


@pytest.fixture(autouse=True)
def _table_with_a_pseudo_labelled_round(monkeypatch):
    """The planner's mechanics are tested on a table whose rows buy every stage: 20 epochs
    at most and no repeats, then a pseudo-labelled round (the shipped table has none: it
    did not pay)."""
    monkeypatch.setattr(plan, "PLAN_TABLE", tuple(
        dataclasses.replace(row, max_epochs=min(row.max_epochs, 20 if i == 0 else 45),
                            max_repeats=1, pseudo_threshold=0.99)
        for i, row in enumerate(SHIPPED_TABLE)))


def test_the_shipped_table_buys_repeats_not_a_second_round_or_network(monkeypatch):
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    row = SHIPPED_TABLE[0]
    quick = _plan(30, {"default": CPU, "rank1": CPU})
    assert quick.members == ["default"] and quick.pseudo_epochs == 0
    # On this CPU, 30 minutes buy a second draw of the folds at the fewest epochs a repeat
    # needs, before any epochs beyond them, and fill the budget
    assert (quick.repeats, quick.epochs) == (2, row.repeat_min_epochs)
    assert 0.9 * 30 * 60 <= quick.eta() <= 30 * 60
    faster = _plan(30, {"default": dataclasses.replace(CPU, train_images_per_second=4400)})
    assert faster.repeats > 1 and faster.epochs >= row.repeat_min_epochs
    assert 0.9 * 30 * 60 <= faster.eta() <= 30 * 60


def test_a_repeat_joins_only_at_its_fewest_epochs_else_the_epochs_grow(monkeypatch):
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    row = SHIPPED_TABLE[0]
    fast = {"default": dataclasses.replace(CPU, train_images_per_second=4400)}
    for minutes in (8, 12, 20, 30, 45):
        planned = _plan(minutes, fast)
        assert planned.repeats == 1 or planned.epochs >= row.repeat_min_epochs
        assert planned.eta() <= minutes * 60
        # repeats come first: one more at its fewest epochs would not have fitted
        if planned.repeats < row.max_repeats:
            with pytest.raises(DataError, match="--minutes"):
                _plan(minutes, fast, repeats=planned.repeats + 1, epochs=row.repeat_min_epochs)


def test_given_repeats_and_epochs_are_kept_and_priced(monkeypatch):
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    two = _plan(60, repeats=2, epochs=10)
    assert (two.repeats, two.epochs) == (2, 10)
    fold = plan.fold_seconds(CPU, REAL.train * (1 - 1 / two.folds), REAL.train / two.folds, 10)
    assert two.stages[f"train, {plan.FIRST}"] == pytest.approx(
        plan.training_seconds([fold] * two.folds * 2, jobs=2))
    assert "repeats" in two.given
    # A given --repeats is kept below the row's repeat_min_epochs: the epochs fit around it
    kept = _plan(12, {"default": dataclasses.replace(CPU, train_images_per_second=4400)},
                 repeats=3)
    assert kept.repeats == 3 and kept.epochs < SHIPPED_TABLE[0].repeat_min_epochs
    with pytest.raises(DataError, match="--minutes.*3 repeats"):
        _plan(5, repeats=3, epochs=20)


def _config(minutes: float, jobs: int = 2, **given) -> Config:
    return Config(minutes=minutes, jobs=jobs, flags_given=frozenset(given), **given)


def _plan(minutes: float, speeds=None, search_seconds: float = 0.0, **given) -> plan_files.Plan:
    return plan.plan_ensemble(_config(minutes, **given), speeds or {"default": CPU}, REAL,
                              CALIBRATED_AFTER, search_seconds)


def test_two_workers_train_a_pair_at_the_measured_speedup():
    # A pair at PARALLEL_SPEEDUP times one's speed (README, measured pairs); the odd fold
    # trains alone.
    seconds = plan.training_seconds([285.0] * 3, jobs=2)
    assert seconds == pytest.approx(plan.WORKER_START_SECONDS + 2 * 285 / 1.08 + 285)
    assert plan.training_seconds([285.0] * 3, jobs=1) == 3 * 285


def test_a_stall_during_the_timing_does_not_price_the_whole_run():
    # Batches of 128 images at 50 ms each, one of them stalled for 2 s halfway (another
    # process, a memory reclaim): the run is priced at the batches, not the stall.
    ends = np.cumsum([0.0] + [0.05] * 20 + [2.0] + [0.05] * 20)
    assert calibrate.images_per_second(ends, 128) == pytest.approx(128 / 0.05)
    assert calibrate.images_per_second(ends[:21], 128) == pytest.approx(128 / 0.05)


def test_calibration_times_whole_batches_at_any_batch_size(monkeypatch):
    # 4,096 images in batches of 3,000 made every other batch 1,096 images, timed as if
    # it held 3,000: the plan was priced fast.
    import keras

    passes = []
    make_dataset = calibrate.cnn.make_dataset

    def recording(x, y, batch_size, **options):
        passes.append((len(x), batch_size))
        return make_dataset(x, y, batch_size, **options)

    monkeypatch.setattr(calibrate.cnn, "make_dataset", recording)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.zeros((500, 28, 28, 1), np.uint8)
    y = np.arange(500) % 10
    for batch_size in (128, 3000):
        speed, _ = calibrate.training_speed(model, x, y, batch_size, seconds=0.01)
        assert speed > 0
    assert [images % batch_size for images, batch_size in passes] == [0, 0]
    assert all(images >= calibrate.CALIBRATION_IMAGES for images, _ in passes)


def test_include_default_trains_the_default_cnn_beside_the_first_pick(monkeypatch):
    # It replaced the search's pick where the row allows one network (below 60 minutes).
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    def members(minutes, speeds, required=()):
        return plan.plan_ensemble(_config(minutes), speeds, REAL, CALIBRATED_AFTER,
                                  required=required).members

    speeds = {"rank1": CPU, "default": CPU}
    assert members(30, speeds, required=["default"]) == ["rank1", "default"]
    assert members(30, speeds) == ["rank1"]
    # From 60 minutes (two networks): the default counts towards the row's cap, and the
    # members keep the candidates' order, the order the run trains them in.
    fast = dataclasses.replace(CPU, train_images_per_second=20 * CPU.train_images_per_second,
                               predict_images_per_second=20 * CPU.predict_images_per_second)
    three = {"rank1": fast, "rank2": fast, "default": fast}
    assert members(210, three) == ["rank1", "rank2"]
    assert members(210, three, required=["default"]) == ["rank1", "default"]


def test_the_pace_check_prices_each_network_at_its_own_speed():
    # The run's names came in another order than the plan's members: each network was
    # priced at another's speed (a cut for a model on time, or an overrun).
    slow = dataclasses.replace(CPU, train_images_per_second=CPU.train_images_per_second / 3)
    planned = plan.plan_ensemble(_config(210), {"rank1": CPU, "default": slow}, REAL,
                                 CALIBRATED_AFTER, required=["default"])
    run = budget.Budget(planned, 0.0, None, lambda: 0.0)
    pace = run.round_pace(False, _fold_jobs(planned), ["default", "rank1"], planned.epochs)
    assert pace.speeds == {"default": slow, "rank1": CPU}


def test_the_pace_check_prices_each_waiting_model_at_its_networks_speed():
    # Every model waiting was priced at the speed of the one about to start: a round that
    # began with the slow network's folds cut them at once, on a machine exactly on plan.
    slow = dataclasses.replace(CPU, train_images_per_second=CPU.train_images_per_second / 3)
    planned = plan.plan_ensemble(_config(80), {"rank1": CPU, "default": slow}, REAL,
                                 CALIBRATED_AFTER, required=["default"])
    assert sorted(planned.members) == ["default", "rank1"]
    assert planned.eta() > 0.9 * 80 * 60  # a plan the budget bounds, not the caps
    count = planned.folds * planned.repeats
    jobs = [ensemble.FoldJob(Member(name, {}, name, name), split, planned.folds,
                             Path(f"{name}-{split}.keras"), number, 2 * count, planned.repeats)
            for number, (name, split) in enumerate(
                [(name, split) for name in ("default", "rank1") for split in range(count)],
                start=1)]
    run = budget.Budget(planned, 0.0, None, lambda: 0.0)  # the round starts on plan
    pace = run.round_pace(False, jobs, ["default", "rank1"], planned.epochs)
    assert pace.epochs_for(jobs[0]) == planned.epochs


def test_a_threshold_given_gets_its_round_where_the_table_plans_none(monkeypatch):
    # The shipped rows plan no round: the first round's epochs took the whole budget, and
    # a given --pseudo-threshold was dropped without a word ("skipped (planned 0)").
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    row = SHIPPED_TABLE[0]
    assert _plan(30).pseudo_epochs == 0
    asked = _plan(30, pseudo_threshold=0.7)
    assert asked.pseudo_threshold == 0.7 and asked.pseudo_epochs >= row.pseudo_min_epochs
    assert asked.eta() <= 30 * 60
    with pytest.raises(DataError, match="--pseudo-epochs: expected --pseudo-threshold P with "
                                        "--pseudo-epochs"):
        _plan(30, pseudo_epochs=6)


def test_a_plan_saved_on_another_machine_is_made_again(kaggle_dir_readonly, tmp_path,
                                                     monkeypatch):
    """Its speeds were another machine's: reused, it planned too much or too little here."""
    from src import calibrate
    from src.data import load_digits

    timed = []
    monkeypatch.setattr(calibrate, "measure_speed", lambda *args: timed.append(1) or CPU)
    config = Config(minutes=30, jobs=1, artifacts_dir=str(tmp_path), data_dir=str(
        kaggle_dir_readonly), flags_given=frozenset({"minutes"}))
    digits = load_digits(config)
    for machine, times in (("cpu a", 1), ("cpu a", 1), ("cpu b", 2)):
        monkeypatch.setattr(calibrate, "machine_key", lambda m=machine: {"cpu": m})
        budget.plan_submit(digits, config, time.perf_counter())
        assert len(timed) == times  # timed on a new machine only


def test_eight_minutes_buys_fewer_epochs_and_no_second_round():
    short = _plan(8)
    row = plan.PLAN_TABLE[0]
    assert short.folds == row.folds == 3 and short.members == ["default"]
    assert row.min_epochs <= short.epochs < row.max_epochs
    assert short.pseudo_epochs == 0
    assert 0.9 * 8 * 60 <= short.eta() <= 8 * 60


def test_half_an_hour_buys_the_quick_recipe_then_a_pseudo_labelled_round():
    quick = _plan(30)
    row = plan.PLAN_TABLE[0]
    assert (quick.folds, quick.epochs, quick.tta) == (3, row.max_epochs, True)
    assert row.pseudo_min_epochs <= quick.pseudo_epochs <= row.pseudo_max_epochs
    assert quick.pseudo_threshold == row.pseudo_threshold
    assert 0.9 * 30 * 60 <= quick.eta() <= 30 * 60
    # Minutes the search spent come off the budget: the second round gets fewer epochs.
    after_search = _plan(30, search_seconds=300)
    assert after_search.seconds == 30 * 60 - 300
    assert after_search.epochs == quick.epochs and after_search.pseudo_epochs < quick.pseudo_epochs


def test_a_faster_machine_buys_every_cap_and_says_it_ends_early():
    candidates = {"default": GPU, "rank1": GPU, "rank2": GPU}
    half_hour = _plan(30, candidates)
    row = plan.PLAN_TABLE[0]
    assert (half_hour.epochs, half_hour.pseudo_epochs) == (row.max_epochs, row.pseudo_max_epochs)
    assert half_hour.members == ["default"]  # the row's max_members: a 2nd network did not pay
    assert any("ends early" in line for line in plan.describe(half_hour, reused=False))
    two_hours = _plan(120, candidates)
    long_row = plan.table_row(120)
    assert long_row is plan.PLAN_TABLE[1]
    assert (two_hours.folds, two_hours.epochs) == (long_row.folds, long_row.max_epochs)
    assert two_hours.members == ["default", "rank1", "rank2"][:long_row.max_members]


def test_flags_given_are_kept_and_the_plan_works_around_them():
    kept = _plan(30, {"rank1": CPU, "default": CPU}, epochs=7, folds=4, tta=False,
                 pseudo_threshold=0.0, top_k=2)
    assert (kept.epochs, kept.folds, kept.tta, kept.pseudo_epochs) == (7, 4, False, 0)
    assert kept.members == ["rank1", "default"]  # --top-k given: every loaded member
    assert kept.given == ["epochs", "folds", "pseudo_threshold", "top_k", "tta"]
    forced = _plan(8, pseudo_epochs=2)
    assert forced.pseudo_epochs == 2 and forced.epochs < _plan(8).epochs


def _shortest(error: DataError) -> float:
    return float(re.search(r"at least ([\d.]+) minutes", str(error)).group(1))


@pytest.mark.parametrize("minutes", [1, 0, -3])
def test_a_budget_too_short_names_the_shortest_workable_one(minutes):
    with pytest.raises(DataError) as caught:
        _plan(minutes)
    message = str(caught.value)
    assert message.startswith("--minutes: expected a budget of at least ")
    assert f"on this machine, found {minutes}" in message
    assert "1 network(s) x 3 folds x 5 epochs" in message
    # The shortest is workable: the smallest plan, no TTA and no second round.
    smallest = _plan(_shortest(caught.value))
    assert (smallest.epochs, smallest.tta, smallest.pseudo_epochs) == (5, False, 0)


def test_the_shortest_budget_counts_what_the_search_spent():
    with pytest.raises(DataError) as caught:
        _plan(3, search_seconds=150)
    # submit alone at another --minutes counts none of the search's 2m30s
    assert str(caught.value).endswith("the search already spent 2m30s of it, which submit "
                                      "counts only at the --minutes the search ran to)")
    assert _plan(_shortest(caught.value), search_seconds=150).epochs == 5


@pytest.mark.parametrize("record, spent", [
    ({"budget": {"minutes": 30, "spent_seconds": 150}}, 150.0),
    ({"budget": {"minutes": 60, "spent_seconds": 150}}, 0.0),  # another budget's search
    ({"budget": "soon"}, 0.0), ({"budget": {"minutes": 30, "spent_seconds": "x"}}, 0.0),
    (["budget"], 0.0),
    # a negative one planned 9m20s for a 1-minute budget, and NaN crashed the planner
    ({"budget": {"minutes": 30, "spent_seconds": -500}}, 0.0),
    ({"budget": {"minutes": 30, "spent_seconds": float("nan")}}, 0.0)])
def test_what_the_search_spent_comes_from_its_own_budget_only(tmp_path, record, spent):
    config = Config(minutes=30, artifacts_dir=str(tmp_path))
    assert budget.search_spent(config) == 0.0  # no search yet
    best_hparams_path(config).parent.mkdir(parents=True)
    best_hparams_path(config).write_text(json.dumps(record))
    assert budget.search_spent(config) == spent


def test_the_plan_survives_its_file(tmp_path):
    quick = _plan(30)
    quick.decisions["pseudo_epochs"] = 7
    plan_files.save_plan(tmp_path / "plans" / "submit-0.json", quick.to_json())
    assert plan_files.load_plan(tmp_path / "plans" / "submit-0.json") == quick


class Clock:
    """A stand-in for time.perf_counter that a test moves by hand."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _through(planned: plan_files.Plan, stage: str) -> float:
    """Planned seconds from the start to the end of stage."""
    names = list(planned.stages)
    return sum(list(planned.stages.values())[:names.index(stage) + 1])


def test_tta_stays_on_when_on_time_and_goes_when_behind(capsys):
    quick = _plan(30)
    clock = Clock(CALIBRATED_AFTER)
    on_time = budget.Budget(quick, started=0.0, clock=clock)
    clock.now = _through(quick, "train, first round")
    on_time.training_done(pseudo_round=False)
    assert on_time.use_tta(pseudo_round=False) is True
    late = budget.Budget(_plan(30), started=0.0, clock=Clock(CALIBRATED_AFTER))
    late.clock.now = 30 * 60 - 60  # a minute left: five passes would not fit
    late.training_done(pseudo_round=False)
    assert late.use_tta(pseudo_round=False) is False
    assert "test-time augmentation for the first round: off" in capsys.readouterr().out
    assert late.settings_used()["tta"] is False


@pytest.mark.parametrize("lead, expected", [(0, "as planned"), (300, "more"), (-120, "fewer"),
                                            (-900, "none")])
def test_the_pseudo_labelled_round_gets_what_the_time_left_buys(lead, expected):
    quick = _plan(30, search_seconds=300)  # a second round below its cap, to grow or shrink
    clock = Clock(CALIBRATED_AFTER)
    run = budget.Budget(quick, started=0.0, clock=clock)
    clock.now = _through(quick, "predict, first round") - lead
    epochs = run.pseudo_epochs([27_000] * quick.folds)
    if expected == "as planned":
        assert epochs == quick.pseudo_epochs
    elif expected == "more":
        assert quick.pseudo_epochs < epochs <= plan.PLAN_TABLE[0].pseudo_max_epochs
    elif expected == "fewer":
        assert plan.PLAN_TABLE[0].pseudo_min_epochs <= epochs < quick.pseudo_epochs
    else:
        assert epochs == 0


def test_a_rerun_keeps_the_decisions_of_the_first_run(tmp_path):
    path = tmp_path / "plan.json"
    clock = Clock(CALIBRATED_AFTER)
    first = budget.Budget(_plan(30), started=0.0, path=path, clock=clock)
    clock.now = _through(first.plan, "train, first round")
    first.training_done(pseudo_round=False)
    assert first.use_tta(pseudo_round=False) is True
    planned_epochs = first.pseudo_epochs([27_000] * 3)
    # The rerun reuses the fold models and is far behind its own clock: it decides nothing.
    saved = plan_files.load_plan(path)
    rerun = budget.Budget(saved, started=0.0, clock=Clock(30 * 60 - 30), reused=True)
    rerun.training_done(pseudo_round=False)
    assert rerun.use_tta(pseudo_round=False) is True
    assert rerun.pseudo_epochs([0] * 3) == planned_epochs


def test_a_rerun_with_other_jobs_plans_afresh(kaggle_dir_readonly, tmp_path, monkeypatch,
                                              capsys):
    """A plan priced for one fold model at a time would pace two wrongly: not reused."""
    timed = _stand_in_speed(monkeypatch)
    digits = load_kaggle(kaggle_dir_readonly)

    def planned(jobs):
        config = Config(minutes=30, jobs=jobs, artifacts_dir=str(tmp_path))
        return budget.plan_submit(digits, config, started=0.0, clock=Clock(10.0))[2].plan

    with pytest.warns(UserWarning):  # no search: the default CNN
        one, two, two_again = planned(1), planned(2), planned(2)
    assert (one.jobs, two.jobs, two_again.jobs) == (1, 2, 2) and len(timed) == 2
    assert "reused from an earlier run" in capsys.readouterr().out  # the third only
    assert len(list((tmp_path / "plans").glob("submit-*.json"))) == 2


def test_a_search_after_a_run_plans_afresh(kaggle_dir_readonly, tmp_path, monkeypatch):
    """submit; tune picking the default CNN (rank1); submit; the same search's seconds of
    this budget recorded; submit: each submit after a change gets a plan of its own, which
    names the search's rank1 and counts its seconds."""
    _stand_in_speed(monkeypatch)
    digits = load_kaggle(kaggle_dir_readonly)
    config = Config(minutes=30, jobs=1, artifacts_dir=str(tmp_path))
    best = tmp_path / "tune" / "best_hparams.json"

    def submit_plan():
        _, members, run = budget.plan_submit(digits, config, started=0.0, clock=Clock(10.0))
        return [m.name for m in members], run

    with pytest.warns(UserWarning):  # no search yet: the default CNN
        assert submit_plan()[0] == ["default"]
    best.parent.mkdir()
    search = {"ensemble": [{"rank": 1, "hparams": DEFAULT_HPARAMS, "val_accuracy": 0.99}]}
    best.write_text(json.dumps(search))  # the same network, named rank1; no budget spent
    names, run = submit_plan()
    assert names == ["rank1"] and not run.reused and run.plan.search_seconds == 0
    best.write_text(json.dumps({**search, "budget": {"minutes": 30, "spent_seconds": 270}}))
    names, run = submit_plan()
    assert names == ["rank1"] and not run.reused and run.plan.search_seconds == 270
    assert submit_plan()[1].reused  # and the same again reuses it
    assert len(list((tmp_path / "plans").glob("submit-*.json"))) == 3


def test_a_saved_plan_naming_networks_not_to_train_is_one_line(kaggle_dir_readonly, tmp_path,
                                                               monkeypatch):
    """Edited to name a network of its own speeds: the run trained nothing, then crashed."""
    _stand_in_speed(monkeypatch)
    digits = load_kaggle(kaggle_dir_readonly)
    config = Config(minutes=30, jobs=1, artifacts_dir=str(tmp_path))
    with pytest.warns(UserWarning):  # no search: the default CNN
        budget.plan_submit(digits, config, started=0.0, clock=Clock(10.0))
        [path] = (tmp_path / "plans").glob("submit-*.json")
        saved = json.loads(path.read_text())
        saved["speeds"]["x"], saved["members"] = saved["speeds"]["default"], ["x"]
        path.write_text(json.dumps(saved))
        with pytest.raises(DataError) as caught:
            budget.plan_submit(digits, config, started=0.0, clock=Clock(10.0))
    assert str(caught.value) == (f"{path}: expected a plan written by python -m src.submit, its "
                                 "members among the networks to train (default), found x "
                                 "(delete it or rerun with --fresh)")


def _fold_jobs(planned: plan_files.Plan) -> list[ensemble.FoldJob]:
    member = Member("default", {}, "default", "default")
    count = planned.folds * planned.repeats
    return [ensemble.FoldJob(member, split, planned.folds, Path(f"fold-{split}.keras"),
                             split + 1, count, planned.repeats) for split in range(count)]


def _train_round(run: budget.Budget, slower_from: int = 0, slowdown: float = 1.0,
                 cut: bool = True) -> dict[int, int]:
    """Train a first round on the stand-in clock as --jobs workers would: a model trains
    at its planned speed alone, at PARALLEL_SPEEDUP / workers of it beside others, and
    `slowdown` times slower from model number slower_from on; without cut, every model
    trains the planned epochs. Returns each model's epochs."""
    planned, jobs = run.plan, _fold_jobs(run.plan)
    pace = run.round_pace(False, jobs, planned.members, planned.epochs)
    pace.may_cut = pace.may_cut and cut
    waiting, epochs = list(jobs), {}
    running: dict = {}  # number: [job, seconds of work left alone, started]
    while waiting or running:
        while waiting and len(running) < max(planned.jobs, 1):
            job = waiting.pop(0)
            epochs[job.number] = pace.epochs_for(job)
            work = pace.seconds_alone(job, epochs[job.number])
            work *= slowdown if slower_from and job.number >= slower_from else 1.0
            running[job.number] = [job, work, run.clock.now]
        speed = plan.PARALLEL_SPEEDUP / len(running) if len(running) > 1 else 1.0
        number = min(running, key=lambda n: running[n][1])
        step = running[number][1] / speed
        for model in running.values():
            model[1] -= step * speed
        run.clock.now += step
        job, _, started = running.pop(number)
        pace.finished(job, run.clock.now - started)
    return epochs


def _cuts(planned: plan_files.Plan) -> dict:
    return {key: value for key, value in planned.decisions.items()
            if key.startswith("epochs, ")}


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_round_on_its_pace_trains_every_planned_epoch(jobs):
    quick = _plan(30, jobs=jobs)
    # A killed run had cut model 2, which never finished: this run decides it again.
    quick.decisions["epochs, first round, default, split 2"] = 9
    run = budget.Budget(quick, started=0.0, clock=Clock(CALIBRATED_AFTER))
    assert set(_train_round(run).values()) == {quick.epochs}
    assert _cuts(quick) == {}
    run.training_done(pseudo_round=False)
    assert run.use_tta(pseudo_round=False) is True  # TTA still fits


def test_a_round_a_hair_slower_than_timed_keeps_its_epochs(monkeypatch):
    """The planner packs a plan up to its budget: a round 0.2% slower than timed (the
    timing's noise) must not be cut as if it ran late by the 1% a late round keeps spare.
    Here the plan leaves 9 s of 1,530; a spare of 1% (15 s) had cut model 3."""
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    quick = _plan(30, search_seconds=270)
    run = budget.Budget(quick, started=0.0, clock=Clock(CALIBRATED_AFTER))
    slack = 30 * 60 - 270 - sum(quick.stages.values())
    assert 0 < slack < 0.01 * quick.seconds  # the case: less slack than the 1% spare
    assert set(_train_round(run, slower_from=1, slowdown=1.002).values()) == {quick.epochs}
    assert _cuts(quick) == {}


def test_a_round_that_slows_cuts_the_epochs_of_models_not_yet_started(monkeypatch, tmp_path):
    """Like the seed-7 quick run (README): 3 repeats of 3 folds, two at a time, the
    machine a third slower partway through (from the 5th model on). Unpaced, the round
    ends past what the budget leaves for prediction without TTA; paced, the models that
    start after the slowdown is seen train fewer epochs and it ends in time (within 1% of
    the budget: the pace is an estimate)."""
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    fast = {"default": dataclasses.replace(CPU, train_images_per_second=5500)}
    after_prediction = plan.TAIL_SECONDS + plan.prediction_seconds(
        [fast["default"]], REAL, 3, False, 3)

    def round_end(cut: bool) -> tuple[float, budget.Budget, dict]:
        quick = _plan(30, fast, search_seconds=270)
        assert (quick.repeats, quick.jobs) == (3, 2)
        run = budget.Budget(quick, started=0.0, path=tmp_path / "plan.json",
                            clock=Clock(CALIBRATED_AFTER))
        epochs = _train_round(run, slower_from=5, slowdown=1.35, cut=cut)
        return run.clock.now, run, epochs

    deadline = 30 * 60 - 270 - after_prediction
    unpaced_end, _, _ = round_end(cut=False)
    assert unpaced_end > deadline + 0.01 * 30 * 60
    paced_end, run, epochs = round_end(cut=True)
    assert paced_end <= deadline + 0.01 * 30 * 60
    planned = run.plan.epochs
    assert [epochs[n] for n in range(1, 7)] == [planned] * 6  # the pace seen at model 5's end
    assert plan.PLAN_TABLE[0].min_epochs <= min(epochs.values()) < planned
    # Each cut is saved: a rerun from the plan file finds the same epochs for each model.
    saved = plan_files.load_plan(tmp_path / "plan.json")
    rerun = budget.Budget(saved, started=0.0, clock=Clock(0.0), reused=True)
    assert {n: rerun.fold_epochs(False, "default", n - 1, planned) for n in epochs} == epochs
    assert len(_cuts(saved)) == sum(e < planned for e in epochs.values()) > 0


@pytest.mark.parametrize("damage, found", [
    (lambda values: {**values, "speeds": []},
     "TypeError: a plan's sizes, speeds, stages, decisions are JSON objects"),
    (lambda values: {**values, "decisions": []},
     "TypeError: a plan's sizes, speeds, stages, decisions are JSON objects"),
    (lambda values: [values],
     "TypeError: a plan's sizes, speeds, stages, decisions are JSON objects"),
    (lambda values: {**values, "sizes": None},
     "TypeError: a plan's sizes, speeds, stages, decisions are JSON objects"),
    # shapes that hold, values that do not: each failed later, inside the run
    (lambda values: {**values, "members": 5}, "TypeError: members: names of speeds, each once"),
    (lambda values: {**values, "members": ["nobody"]},
     "TypeError: members: names of speeds, each once"),
    (lambda values: {**values, "members": ["default", "default"]},  # zip() of unequal lengths
     "TypeError: members: names of speeds, each once"),
    (lambda values: {**values, "folds": "2"}, "TypeError: folds: an integer >= 2"),
    (lambda values: {**values, "folds": 1}, "TypeError: folds: an integer >= 2"),  # sklearn's
    (lambda values: {**values, "pseudo_threshold": 5.0},  # a round on no test image at all
     "TypeError: pseudo_threshold: a confidence 0 <= p < 1"),
    (lambda values: {**values, "seconds": None}, "TypeError: seconds: a number >= 0"),
    (lambda values: {**values, "seconds": 10**400}, "ValueError: an integer of 401 digits"),
    (lambda values: {**values, "stages": {"report": "x"}},
     "TypeError: stages.report: seconds >= 0"),
    (lambda values: {**values, "decisions": {"tta, first round": "false"}},  # bool() says True
     "TypeError: decisions.tta, first round: true or false"),
    (lambda values: {**values, "decisions": {"pseudo_epochs": "x"}},
     "TypeError: decisions.pseudo_epochs: an integer >= 0"),
    (lambda values: {**values, "speeds": {name: {**speed, "train_images_per_second": "x"}
                                          for name, speed in values["speeds"].items()}},
     "TypeError: speeds.default: images per second > 0"),
])
def test_a_plan_file_of_other_shapes_or_values_is_one_line(tmp_path, damage, found):
    path = tmp_path / "submit-0.json"
    path.write_text(json.dumps(damage(json.loads(_plan(30).to_json()))))
    with pytest.raises(DataError) as caught:
        plan_files.load_plan(path)
    assert str(caught.value) == (f"{path}: expected a plan written by python -m src.submit, "
                                 f"found {found} (delete it or rerun with --fresh)")
    path.write_text(_plan(30).to_json())
    assert plan_files.load_plan(path) == _plan(30)


def test_one_job_at_a_time_counts_no_worker_start_up_as_time_in_hand(monkeypatch):
    """One job starts no worker process: the pace may not count its start-up as spare
    (made huge here, so that counting it would leave every late model uncut)."""
    monkeypatch.setattr(budget, "WORKER_START_SECONDS", 1e6)
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    fast = {"default": dataclasses.replace(CPU, train_images_per_second=5500)}
    quick = _plan(30, fast, search_seconds=270, jobs=1)
    assert quick.jobs == 1 and quick.folds * quick.repeats >= 3
    run = budget.Budget(quick, started=0.0, clock=Clock(CALIBRATED_AFTER))
    epochs = _train_round(run, slower_from=2, slowdown=1.35)
    assert min(epochs.values()) < quick.epochs and _cuts(quick)


@pytest.mark.parametrize("slowdown, keeps_tta", [(1.1, True), (1.35, False)])
def test_a_round_a_little_late_cuts_a_quarter_of_the_epochs_at_most_to_keep_tta(
        monkeypatch, capsys, slowdown, keeps_tta):
    """TTA was worth more OOF errors than a quarter of a model's epochs (README). A round
    a tenth slower from its 5th model on would end too late for TTA's passes: it trains
    its last models up to a quarter fewer epochs and predicts with TTA. A third slower,
    a quarter is not enough: TTA goes, and the epochs are cut only as far as the
    prediction without it needs."""
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    fast = {"default": dataclasses.replace(CPU, train_images_per_second=5500)}

    def trained(cut: bool) -> tuple[budget.Budget, dict]:
        run = budget.Budget(_plan(30, fast, search_seconds=270), started=0.0,
                            clock=Clock(CALIBRATED_AFTER))
        return run, _train_round(run, slower_from=5, slowdown=slowdown, cut=cut)

    unpaced, _ = trained(cut=False)
    unpaced.training_done(pseudo_round=False)
    assert unpaced.use_tta(pseudo_round=False) is False
    paced, epochs = trained(cut=True)
    planned = paced.plan.epochs
    paced.training_done(pseudo_round=False)
    assert paced.use_tta(pseudo_round=False) is keeps_tta
    assert min(epochs.values()) < planned
    if keeps_tta:
        assert min(epochs.values()) >= math.ceil((1 - budget.TTA_KEEPING_CUT) * planned)
    assert ("to keep TTA" in capsys.readouterr().out) is keeps_tta


def test_a_late_round_with_a_given_tta_cuts_epochs_for_its_passes(monkeypatch):
    """--tta given keeps TTA however late the round: a round a third slower from its 5th
    model on cuts its last models' epochs so that the prediction's TTA passes, which run
    whatever the plan says, still end within the budget (within 1%: a pace is an
    estimate), not only the prediction without them."""
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    fast = {"default": dataclasses.replace(CPU, train_images_per_second=5500)}
    given = _plan(30, fast, search_seconds=270, tta=True)
    run = budget.Budget(given, started=0.0, clock=Clock(CALIBRATED_AFTER))
    epochs = _train_round(run, slower_from=5, slowdown=1.35)
    assert min(epochs.values()) < given.epochs
    run.training_done(pseudo_round=False)
    assert run.use_tta(pseudo_round=False) is True
    with_tta = plan.TAIL_SECONDS + plan.prediction_seconds(
        [fast["default"]], REAL, given.folds, True, given.repeats)
    assert run.clock.now + with_tta <= 30 * 60 - 270 + 0.01 * 30 * 60


def test_given_epochs_are_never_cut_and_the_fewest_is_the_floor(capsys):
    given = _plan(30, epochs=12)
    run = budget.Budget(given, started=0.0, clock=Clock(30 * 60 - 60))  # a minute left
    assert set(_train_round(run).values()) == {12}
    late = budget.Budget(_plan(30), started=0.0, clock=Clock(30 * 60 - 60))
    assert set(_train_round(late).values()) == {plan.PLAN_TABLE[0].min_epochs}
    assert f"{plan.PLAN_TABLE[0].min_epochs} epochs, not {late.plan.epochs}" in \
        capsys.readouterr().out


@pytest.mark.parametrize("given, cut_to", [({}, "pseudo_min_epochs"),
                                           ({"epochs": 12}, "pseudo_min_epochs"),
                                           ({"pseudo_epochs": 9}, None)])
def test_the_pseudo_labelled_round_is_cut_by_its_own_flag_and_floor(given, cut_to):
    """A late second round: cut to the row's fewest pseudo-labelled epochs, unless
    --pseudo-epochs was given (a given --epochs is the first round's, not this one's)."""
    planned = _plan(30, **given)
    run = budget.Budget(planned, started=0.0, clock=Clock(30 * 60 - 60))  # a minute left
    pace = run.round_pace(True, _fold_jobs(planned), planned.members, 9)
    epochs = pace.epochs_for(_fold_jobs(planned)[0])
    assert epochs == (getattr(plan.PLAN_TABLE[0], cut_to) if cut_to else 9)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [1, 2], ids=["in-process", "workers"])
def test_a_cut_fold_model_is_saved_as_such_and_a_rerun_reuses_it(kaggle_dir_readonly,
                                                                   tmp_path, jobs):
    """A round with no time left: the fold models train their fewest epochs, each under a
    name that says so, and the rerun (the same plan file) finds every one of them."""
    digits = load_kaggle(kaggle_dir_readonly)
    digits = dataclasses.replace(digits, x_train=digits.x_train[:600],
                                 y_train=digits.y_train[:600])
    sizes = plan_files.Sizes(len(digits.y_train), len(digits.x_test))
    planned = plan.plan_ensemble(_config(30, jobs=jobs), {"default": CPU}, sizes, 0.0)
    config = Config(profile="smoke", folds=planned.folds, epochs=planned.epochs, jobs=jobs,
                    artifacts_dir=str(tmp_path / "artifacts"))
    members = [Member("default", dict(DEFAULT_HPARAMS), "default", "default")]
    path = tmp_path / "plan.json"
    late = budget.Budget(planned, started=0.0, path=path, clock=Clock(planned.seconds))
    first = ensemble.run_kfold(digits, members, config, verbose=0, budget=late)
    fewest = plan.PLAN_TABLE[0].min_epochs
    assert first.trained == planned.folds and fewest < planned.epochs
    assert {len(h["history"]["accuracy"]) for h in first.histories} == {fewest}
    assert first.epochs == {"default": [fewest] * planned.folds}
    [folder] = (tmp_path / "artifacts" / "models").iterdir()
    assert sorted(p.name for p in folder.glob("*.keras")) == [
        f"fold-{split}-{fewest}-epochs.keras" for split in range(planned.folds)]
    saved = plan_files.load_plan(path)
    rerun = budget.Budget(saved, started=0.0, clock=Clock(0.0), reused=True)
    again = ensemble.run_kfold(digits, members, config, verbose=0, budget=rerun)
    assert (again.trained, again.reused) == (0, planned.folds)
    np.testing.assert_array_equal(again.oof_probs["default"], first.oof_probs["default"])


def test_the_record_holds_planned_and_actual_seconds_per_stage():
    quick = _plan(30)
    clock = Clock(CALIBRATED_AFTER)
    run = budget.Budget(quick, started=0.0, clock=clock)
    clock.now += 700
    run.training_done(pseudo_round=False)
    assert run.use_tta(pseudo_round=False) is True
    clock.now += 60
    run.prediction_done(pseudo_round=False)
    record = run.record()
    stages = {row["stage"]: row for row in record["stages"]}
    assert stages["train, first round"]["actual_seconds"] == 700
    assert stages["predict, first round"]["actual_seconds"] == 60
    assert stages["load and calibrate"]["actual_seconds"] == CALIBRATED_AFTER
    assert stages["report"]["actual_seconds"] is None
    assert record["decisions"] == {"tta, first round": True}
    assert record["speeds"]["default"]["train_images_per_second"] == 2200
    json.dumps(record)  # goes into metrics.json as it is


def test_the_search_takes_its_share_and_a_rerun_keeps_its_epochs(tmp_path, monkeypatch):
    _stand_in_speed(monkeypatch)
    x, y = np.zeros((9600, 28, 28, 1), np.uint8), np.arange(9600) % 10
    train, validation = (x, y), (x[:2400], y[:2400])

    def ten_trials(config):  # as a Hyperband of 10 trials would, each of --tune-epochs
        return [config.tune_epochs] * 10

    def search(minutes, now):
        config = Config(minutes=minutes, artifacts_dir=str(tmp_path), tune_samples=12_000)
        return search_plan.plan_search(config, train, validation, REAL, 0.0, ten_trials,
                                       Clock(now))

    # 15% of 30 minutes is 270 s; a trial costs 4 s + 4.6 s an epoch at the stand-in speed
    config, record = search(30, now=10)
    assert config.tune_epochs == 4 < plan.PLAN_TABLE[0].search_max_epochs
    assert record["share_seconds"] == 270 and record["planned_seconds"] <= 270
    assert search(30, now=200)[0].tune_epochs == 4  # the rerun resumes the same search
    with pytest.raises(DataError) as caught:
        search(8, now=10)
    assert str(caught.value) == (
        "--minutes: expected a budget of at least 15.8 minutes on this machine, found 8 "
        "(the smallest plan: a search of 2 epochs a trial, 15% of the budget)")


def test_the_profiles_budget_and_the_same_minutes_given_share_a_plan(tmp_path):
    profile = Config(minutes=30, artifacts_dir=str(tmp_path))
    given = Config(minutes=30.0, artifacts_dir=str(tmp_path), flags_given=frozenset({"minutes"}))
    assert plan_files.plan_path(profile, "submit", {}) == plan_files.plan_path(given, "submit", {})
    assert plan_files.plan_path(profile, "submit", {}) != plan_files.plan_path(
        Config(minutes=31.0, artifacts_dir=str(tmp_path)), "submit", {})


def test_a_profile_with_more_trials_gets_its_own_search_plan(tmp_path, monkeypatch):
    _stand_in_speed(monkeypatch)
    x, y = np.zeros((9600, 28, 28, 1), np.uint8), np.arange(9600) % 10

    def search(trials):  # one artifacts folder: the quick profile's 8, then the full's 24
        config = Config(minutes=60, artifacts_dir=str(tmp_path), tune_samples=12_000,
                        tuner="bayesian", max_trials=trials)
        return search_plan.plan_search(config, (x, y), (x[:2400], y[:2400]), REAL, 0.0,
                                       lambda config: [config.tune_epochs] * trials,
                                       Clock(10))[0]

    eight, many = search(8), search(24)
    assert many.tune_epochs < eight.tune_epochs  # 24 trials share what 8 did, not 3x over
    assert len(list((tmp_path / "plans").glob("tune-*.json"))) == 2


def test_a_time_based_search_splits_its_share_into_equal_trials(tmp_path, monkeypatch):
    _stand_in_speed(monkeypatch)
    x, y = np.zeros((9600, 28, 28, 1), np.uint8), np.arange(9600) % 10
    train, validation = (x, y), (x[:2400], y[:2400])

    def search(minutes, now, trials=8, **given):  # trials: the profile's --max-trials
        settings = {"max_trials": trials, "trial_seconds": 25.0, **given}
        config = Config(minutes=minutes, artifacts_dir=str(tmp_path / str(trials)),
                        tune_samples=12_000, tuner="bayesian", **settings,
                        flags_given=frozenset(given))
        return search_plan.plan_search(config, train, validation, REAL, 0.0,
                                       tuners.planned_epochs, Clock(now))

    def seconds_of(epochs):  # the default CNN's training for that many, at the stand-in speed
        return epochs * 9600 / CPU.train_images_per_second

    # 15% of 30 minutes is 270 s: 4 trials, each as long as its share allows
    config, record = search(30, now=10, trials=4)
    assert (config.max_trials, config.trial_seconds) == (4, record["trial_seconds"])
    assert 0.97 * 270 <= record["planned_seconds"] <= 270
    assert seconds_of(plan.TIMED_TRIAL_EPOCHS) < config.trial_seconds < (270 - 10) / 4
    rerun = search(30, now=200, trials=4)[0]
    assert rerun.trial_seconds == config.trial_seconds  # the rerun resumes the same search
    [saved] = (tmp_path / "4" / "plans").glob("tune-*.json")
    for damage, found in (({"planned_seconds": "soon"}, "planned_seconds: a number of "
                                                        "seconds >= 0"),
                          ({"tune_epochs": "2"}, "tune_epochs: an integer >= 1"),
                          ({"tune_epochs": 0}, "tune_epochs: an integer >= 1"),
                          ({"max_trials": None}, "max_trials: an integer >= 1"),
                          ({"trial_seconds": "x"}, "trial_seconds: a number of seconds >= 0"),
                          ({"share_seconds": -5}, "share_seconds: a number of seconds >= 0")):
        saved.write_text(json.dumps({**record, **damage}))
        with pytest.raises(DataError, match=re.escape(
                f"{saved}: expected a search plan written by python -m src.tune, found "
                f"TypeError: {found} (delete it or rerun with --overwrite)")):
            search(30, now=200, trials=4)
    # This table's member trains 3 folds x 20 epochs, which the default CNN at CPU speed
    # buys: a trial trains no more epochs than the default's seconds buy
    assert config.tune_epochs == math.floor(config.trial_seconds * 2200 / 9600)
    # 8 trials would buy the default CNN fewer than TIMED_TRIAL_EPOCHS: as many as buy that
    eight = search(30, now=10)[0]
    assert 4 < eight.max_trials < 8 and eight.trial_seconds >= seconds_of(plan.TIMED_TRIAL_EPOCHS)
    one_more = search(30, now=10, max_trials=eight.max_trials + 1)[0]
    assert one_more.max_trials == eight.max_trials + 1  # given: they run, each shorter
    assert one_more.trial_seconds < seconds_of(plan.TIMED_TRIAL_EPOCHS)
    # 10 minutes: no number of trials buys that many: the fewest, if they buy MIN_SEARCH_EPOCHS
    shorter = search(10, now=10)[0]
    assert shorter.max_trials == plan.MIN_SEARCH_TRIALS
    assert seconds_of(plan.MIN_SEARCH_EPOCHS) <= shorter.trial_seconds
    assert shorter.trial_seconds < seconds_of(plan.TIMED_TRIAL_EPOCHS)
    # A profile of fewer trials than that (the smoke profile's 2) runs them all
    two = search(10, now=10, trials=plan.MIN_SEARCH_TRIALS - 1)[0]
    assert two.max_trials == plan.MIN_SEARCH_TRIALS - 1
    assert two.trial_seconds > shorter.trial_seconds
    # A --trial-seconds given is kept; the trials that fit it run.
    given = search(10, now=10, trial_seconds=8.0, tune_epochs=50)[0]
    assert given.trial_seconds == 8 and given.max_trials > shorter.max_trials
    assert given.tune_epochs == 50
    with pytest.raises(DataError) as caught:
        search(3, now=10)
    fewest = seconds_of(plan.MIN_SEARCH_EPOCHS)
    assert str(caught.value).startswith("--minutes: expected a budget of at least ")
    assert str(caught.value).endswith(
        f"found 3 (the smallest plan: a search of 3 trials of {math.ceil(fewest * 10) / 10:g}s "
        "each, 15% of the budget)")


def test_a_trial_trains_no_more_epochs_than_its_member_could_use(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "PLAN_TABLE", SHIPPED_TABLE)
    full = SHIPPED_TABLE[-1]
    # One network's part of a 2-hour plan that spent 20 minutes on the search: 50 minutes
    factor = plan.speed_at_the_caps(full, CPU, REAL, 100 * 60, jobs=2)
    assert 1 < factor < 3

    def alone(times: float) -> plan_files.Plan:  # one network of CPU x times, in its 50 minutes
        faster = dataclasses.replace(CPU, train_images_per_second=2200 * times,
                                     predict_images_per_second=10_000 * times)
        return _plan(120, {"net": faster}, search_seconds=70 * 60)

    assert (alone(1.03 * factor).repeats, alone(1.03 * factor).epochs) == (5, 40)
    assert (alone(0.95 * factor).repeats, alone(0.95 * factor).epochs) != (5, 40)
    # A time-based search for that budget: the default CNN buys 2200 x s / 9600 epochs in
    # a trial of s seconds, a network past `factor` times its speed no more than that factor
    _stand_in_speed(monkeypatch)
    x, y = np.zeros((9600, 28, 28, 1), np.uint8), np.arange(9600) % 10
    config = Config(minutes=120, artifacts_dir=str(tmp_path), tune_samples=12_000,
                    tuner="bayesian", max_trials=40, trial_seconds=20.0, jobs=2)
    config, record = search_plan.plan_search(config, (x, y), (x[:2400], y[:2400]), REAL,
                                             0.0, tuners.planned_epochs, Clock(10))
    factor = plan.speed_at_the_caps(full, CPU, REAL, 120 * 60 - record["share_seconds"], 2)
    assert config.tune_epochs == math.floor(config.trial_seconds * 2200 * factor / 9600)
    assert config.tune_epochs > config.trial_seconds * 2200 / 9600
    # A plan saved before the cap existed resumes its search with the cap it had
    saved = json.loads(Path(record["plan_file"]).read_text())
    del saved["tune_epochs"]
    Path(record["plan_file"]).write_text(json.dumps(saved))
    resumed = dataclasses.replace(config, tune_epochs=30, max_trials=40)  # as given again
    assert search_plan.plan_search(resumed, (x, y), (x[:2400], y[:2400]), REAL, 0.0,
                                   tuners.planned_epochs, Clock(10))[0].tune_epochs == 300


# ---------------------------------------------------------------- the command lines


def _stand_in_speed(monkeypatch, speed: Speed = CPU) -> list[dict]:
    """Replace the calibration by a fixed speed; return the networks it was asked to time."""
    timed = []

    def measure(hparams, *args, **kwargs):
        timed.append(hparams)
        return speed

    monkeypatch.setattr(calibrate, "measure_speed", measure)
    return timed


def _submit_args(data_dir, tmp_path, *extra):
    return ["--data-dir", str(data_dir), "--profile", "smoke", "--jobs", "1",
            "--artifacts-dir", str(tmp_path / "artifacts"),
            "--submissions-dir", str(tmp_path / "submissions"), *extra]


def test_plan_only_without_a_budget_is_one_line_exit_2(kaggle_dir_readonly, tmp_path, capsys):
    assert run_cli(submit.main, _submit_args(kaggle_dir_readonly, tmp_path, "--plan-only")) == 2
    assert capsys.readouterr().err == (
        "error: --plan-only: expected a budget to plan (--minutes N, or the quick or full "
        "profile), found --profile smoke without --minutes\n")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "submissions").exists()


@pytest.mark.parametrize("main", [submit.main, tune.main], ids=["submit", "tune"])
def test_a_budget_that_is_no_number_is_one_line_exit_2(main, kaggle_dir_readonly, tmp_path,
                                                      capsys):
    argv = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(tmp_path / "a"),
            "--minutes", "thirty"]
    assert run_cli(main, argv) == 2
    assert capsys.readouterr().err == (
        "error: --minutes: expected a number of minutes, such as 30, found 'thirty'\n")
    assert not (tmp_path / "a").exists()


def test_a_too_short_budget_is_one_line_exit_2_and_writes_nothing(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch):
    _stand_in_speed(monkeypatch)
    with pytest.warns(UserWarning):  # no search: the default CNN
        code = run_cli(submit.main,
                       _submit_args(kaggle_dir_readonly, tmp_path, "--minutes", "0.05"))
    assert code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("error: --minutes: expected a budget of at least ")
    assert err.endswith("found 0.05 (the smallest plan: 1 network(s) x 3 folds x 5 epochs)")
    assert not (tmp_path / "submissions").exists() and not (tmp_path / "artifacts").exists()


def test_plan_only_prints_the_plan_and_trains_nothing(kaggle_dir_readonly, tmp_path, capsys,
                                                      monkeypatch):
    timed = _stand_in_speed(monkeypatch)
    with pytest.warns(UserWarning):
        assert run_cli(submit.main, _submit_args(kaggle_dir_readonly, tmp_path, "--minutes", "3",
                                                 "--plan-only")) == 0
    out = capsys.readouterr().out
    assert "plan for 3 minutes on this machine (PLAN_TABLE row from 0 minutes):" in out
    assert "default x 3 folds x 20 epochs, TTA" in out and "ETA " in out
    assert len(timed) == 1
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "submissions").exists()


@pytest.mark.slow
def test_tune_records_its_minutes_and_submit_plans_the_rest(kaggle_dir_readonly, tmp_path,
                                                            capsys, monkeypatch):
    _stand_in_speed(monkeypatch)
    artifacts = tmp_path / "artifacts"
    args = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(artifacts),
            "--profile", "smoke", "--tune-samples", "300", "--tuner", "random",
            "--max-trials", "2", "--minutes", "3"]
    assert tune.main(args) == 0
    out = capsys.readouterr().out
    assert "the search's share 27s: up to " in out  # 15% of 3 minutes
    assert " on 300 images, ETA " in out  # the images searched (not --tune-samples as given)
    best = json.loads((artifacts / "tune" / "best_hparams.json").read_text())
    record = best["budget"]
    assert record["minutes"] == 3 and 0 < record["spent_seconds"]
    assert plan.MIN_SEARCH_EPOCHS <= record["tune_epochs"] <= plan.PLAN_TABLE[0].search_max_epochs
    assert best["top"][0]["epochs"] <= record["tune_epochs"]
    # The same command again resumes the same search: the saved plan, not a new one, and
    # the seconds it records count the first run's too.
    assert tune.main(args) == 0
    out = capsys.readouterr().out
    assert "Reloading Tuner" in out and "(its earlier runs included)" in out
    again = json.loads((artifacts / "tune" / "best_hparams.json").read_text())["budget"]
    # No trial was left to run: the seconds are the first run's, so submit's plan stands.
    assert again["spent_seconds"] == record["spent_seconds"]
    # submit with the same budget plans what the search left.
    assert run_cli(submit.main, _submit_args(kaggle_dir_readonly, tmp_path, "--minutes", "3",
                                             "--plan-only")) == 0
    assert "the search spent " in capsys.readouterr().out


@pytest.mark.slow
def test_minutes_end_to_end_on_the_fixture_and_a_rerun_keeps_the_plan(
        kaggle_dir_readonly, tmp_path, capsys):
    """The real calibration and a real run, its size fixed by flags (the plan works around
    them): what is asserted is the plan and its record, never the clock."""
    args = _submit_args(kaggle_dir_readonly, tmp_path, "--minutes", "5", "--train-samples",
                        "300", "--folds", "2", "--epochs", "2", "--pseudo-epochs", "1")
    with pytest.warns(UserWarning):
        assert run_cli(submit.main, args) == 0
    out = capsys.readouterr().out
    assert "plan: timing 1 network(s) on this machine" in out
    assert "default x 2 folds x 2 epochs, TTA" in out
    assert "plan: train, first round took " in out and "plan: ended in " in out
    [run_dir] = [p for p in (tmp_path / "submissions").iterdir()
                 if p.is_dir() and not p.is_symlink()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = metrics["plan"]
    assert (record["minutes"], record["folds"], record["epochs"]) == (5, 2, 2)
    assert record["reused_plan"] is False and record["speeds"]["default"]["startup_seconds"] >= 0
    assert set(record["decisions"]) == {"tta, first round", "pseudo_epochs",
                                        "tta, pseudo-labelled round"}
    assert all(row["actual_seconds"] is not None for row in record["stages"]
               if row["stage"] != "report")
    text = (run_dir / "report.md").read_text()
    assert "## Plan for 5 minutes" in text and "1 epochs" not in text
    assert "pseudo-labelled round planned at 1 epoch" in text
    without = document.render_markdown(report._plan_section({**record, "pseudo_epochs": 0}))
    assert "Planned: default x 2 folds x 2 epochs, TTA" in without  # run_info: what ran
    assert "round planned at" not in without  # no second round: not one of 0 epochs
    [saved] = (tmp_path / "artifacts" / "plans").glob("submit-*.json")
    # The rerun takes the saved plan and its decisions, and with them every fold model.
    with pytest.warns(UserWarning):
        assert run_cli(submit.main, args) == 0
    out = capsys.readouterr().out
    assert "reused from an earlier run" in out and "plan: timing" not in out
    assert "trained 0, reused 4" in out
    # worded as when it was made, not as the saved key and value ("tta, first round: False")
    assert re.search(r"plan: test-time augmentation for the first round: (on|off), as an "
                     r"earlier run decided", out), out
    assert list((tmp_path / "artifacts" / "plans").glob("submit-*.json")) == [saved]


def test_the_search_clock_counts_a_killed_run_up_to_its_last_trial(tmp_path):
    path = tmp_path / search_plan.SEARCH_CLOCK  # in the tuner's folder, which the tuner made
    now = [100.0]
    killed = search_plan.SearchClock(path, started=90.0, fresh=False, clock=lambda: now[0])
    assert killed.before == 0 and killed.seconds() == 10
    killed.save()  # its first trial ended 10 s in; then it was killed
    now[0] = 500.0
    resumed = search_plan.SearchClock(path, started=480.0, fresh=False, clock=lambda: now[0])
    assert resumed.seconds() == 30  # 10 s before the kill, 20 s of this run
    assert search_plan.SearchClock(path, 480.0, fresh=True, clock=lambda: now[0]).seconds() == 20
    # Run again over a finished search, no trial ends: it records what the runs before did
    # (it had added its own load and reload, so submit's plan, keyed on them, was remade).
    resumed.trial_ended()
    assert resumed.finish() == 30
    rerun = search_plan.SearchClock(path, started=600.0, fresh=False, clock=lambda: 612.0)
    assert rerun.finish() == 30 and rerun.before == 30
    # A clock that moves on between the record and the return (the write took a while):
    # finish returns what it recorded, which a rerun then reads, not a second reading.
    ticks = iter([700.04, 700.04, 700.06])
    moving = search_plan.SearchClock(path, started=700.0, fresh=False, clock=lambda: next(ticks))
    moving.trial_ended()
    assert moving.finish() == search_plan.SearchClock(path, 800.0, fresh=False).before

@pytest.mark.parametrize("damaged, found", [
    ("{not json", "JSONDecodeError: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)"),
    ('{"seconds": NaN}', "seconds nan"),  # NaN crashed tune
    ('{"seconds": -1000}', "seconds -1000"), ('{"secs": 3}', "KeyError: 'seconds'"),
    ('[3]', "TypeError: list indices must be integers or slices, not str")])
def test_a_damaged_search_clock_is_one_line_not_a_search_that_took_no_time(tmp_path, damaged,
                                                                            found):
    path = tmp_path / search_plan.SEARCH_CLOCK
    path.write_text(damaged)
    with pytest.raises(DataError) as caught:  # counted as 0, submit planned the whole budget
        search_plan.SearchClock(path, 480.0, fresh=False, clock=lambda: 500.0)
    assert str(caught.value) == (
        f'{path}: expected the seconds python -m src.tune recorded ({{"seconds": N}}), found '
        f"{found} (delete it to count this run's alone, or rerun with --overwrite to start over)")
    assert search_plan.SearchClock(path, 480.0, fresh=True, clock=lambda: 500.0).seconds() == 20
