"""Keeping a run to its budget: ``--minutes N`` as python -m src.submit and src.tune use it.

src.plan computes plans; this module runs them: it times the candidate
networks (src.calibrate), makes or reloads the plan, saves it under
``<artifacts>/plans/`` keyed by the run's settings (a rerun keeps the plan, its
decisions, and so the fold models' cache keys), and holds the Budget that
re-plans at stage boundaries against the clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from src import ensemble, workers
from src.calibrate import TRIAL_CALIBRATION_SECONDS, WARMUP_BATCHES, Speed
from src.config import Config
from src.errors import DataError
from src.plan import (
    FIRST,
    MIN_SEARCH_EPOCHS,
    MIN_SEARCH_TRIALS,
    PARALLEL_SPEEDUP,
    PLANNED_FLAGS,
    PSEUDO_SHARE_ESTIMATE,
    SECOND,
    TAIL_SECONDS,
    Plan,
    PlanRow,
    Sizes,
    describe,
    flag_choices,
    fold_seconds,
    plan_ensemble,
    prediction_seconds,
    round_seconds,
    speed_at_the_caps,
    table_row,
    too_short,
)
from src.util import format_duration, write_atomically


class Budget:
    """A planned run against its clock.

    It records when each stage ends and, at the boundaries, re-plans: TTA stays
    on for a round's prediction while the time left still covers the rest, and
    the pseudo-labelled round gets as many epochs as the time left buys once the
    first round is done (none below its fewest). Each decision is saved in the
    plan file; a rerun takes it from there instead of deciding again, so that it
    keeps the fold models' cache keys.
    """

    def __init__(self, plan: Plan, started: float, path: Path | None = None,
                 clock: Callable[[], float] = time.perf_counter, reused: bool = False):
        self.plan = plan
        self.started = started
        self.path = path
        self.clock = clock
        self.reused = reused
        self.last = clock()
        self.actual = {"load and calibrate": self.last - started}

    def left(self) -> float:
        """Seconds left of this command's budget."""
        return self.plan.seconds - (self.clock() - self.started)

    def training_done(self, pseudo_round: bool) -> bool:
        """Record the end of a round's training; whether its prediction uses TTA."""
        name = SECOND if pseudo_round else FIRST
        self._stage_ended(f"train, {name}")
        return bool(self._decide(f"tta, {name}", lambda: self._tta_fits(pseudo_round)))

    def prediction_done(self, pseudo_round: bool) -> None:
        """Record the end of a round's prediction."""
        self._stage_ended(f"predict, {SECOND if pseudo_round else FIRST}")

    def pseudo_epochs(self, counts: Sequence[int]) -> int:
        """The pseudo-labelled round's epochs (0: no such round), given its pseudo-labels
        per fold."""
        return int(self._decide("pseudo_epochs", lambda: self._pseudo_epochs_that_fit(counts)))

    def _stage_ended(self, stage: str) -> None:
        now = self.clock()
        self.actual[stage] = now - self.last
        self.last = now
        line = f"plan: {stage} took {format_duration(self.actual[stage])}"
        stages = list(self.plan.stages)
        if stage in stages:  # a round the plan left out has no schedule to be ahead of
            planned = sum(list(self.plan.stages.values())[:stages.index(stage) + 1])
            lead = planned - (now - self.started)
            line += (f"; {format_duration(abs(lead))} "
                     f"{'ahead of' if lead >= 0 else 'behind'} plan")
        print(f"{line}, {format_duration(max(self.left(), 0))} left", flush=True)

    def _decide(self, key: str, choose: Callable[[], object]) -> object:
        decisions = self.plan.decisions
        if key in decisions:
            print(f"plan: {key}: {decisions[key]}, as an earlier run decided", flush=True)
        else:
            decisions[key] = choose()
            if self.path is not None:
                write_atomically(self.path, self.plan.to_json())
        return decisions[key]

    def _tta_fits(self, pseudo_round: bool) -> bool:
        plan = self.plan
        if not plan.tta or "tta" in plan.given:
            return plan.tta
        speeds = plan.member_speeds()
        after = TAIL_SECONDS
        if not pseudo_round and plan.pseudo_epochs:  # keep the fewest epochs of round two
            fewest = (plan.pseudo_epochs if "pseudo_epochs" in plan.given
                      else table_row(plan.minutes).pseudo_min_epochs)
            estimate = [plan.sizes.test * PSEUDO_SHARE_ESTIMATE] * plan.folds * plan.repeats
            after += (round_seconds(speeds, plan.sizes, plan.folds, fewest, plan.jobs, estimate,
                                    plan.repeats)
                      + prediction_seconds(speeds, plan.sizes, plan.folds, False, plan.repeats))
        cost = prediction_seconds(speeds, plan.sizes, plan.folds, True, plan.repeats)
        fits = self.left() - cost >= after
        print(f"plan: test-time augmentation for the {SECOND if pseudo_round else FIRST}: "
              f"{'on' if fits else 'off, its ' + format_duration(cost) + ' would not fit'}",
              flush=True)
        return fits

    def _pseudo_epochs_that_fit(self, counts: Sequence[int]) -> int:
        plan = self.plan
        if "pseudo_epochs" in plan.given:
            return plan.pseudo_epochs
        row, speeds = table_row(plan.minutes), plan.member_speeds()
        tta = bool(plan.decisions.get(f"tta, {FIRST}", plan.tta))  # as the first round did
        room = (self.left() - prediction_seconds(speeds, plan.sizes, plan.folds, tta,
                                                 plan.repeats) - TAIL_SECONDS)
        epochs = next((e for e in range(row.pseudo_max_epochs, row.pseudo_min_epochs - 1, -1)
                       if round_seconds(speeds, plan.sizes, plan.folds, e, plan.jobs, counts,
                                        plan.repeats) <= room), 0)
        print(f"plan: pseudo-labelled round: {f'{epochs} epochs' if epochs else 'skipped'} "
              f"(planned {plan.pseudo_epochs}), {format_duration(max(room, 0))} to train it",
              flush=True)
        return epochs

    def settings_used(self) -> dict:
        """TTA and the pseudo-labelled round's epochs as the first round's boundaries decided
        them (the plan's where no decision was taken)."""
        decisions = self.plan.decisions
        return {"tta": bool(decisions.get(f"tta, {FIRST}", self.plan.tta)),
                "pseudo_epochs": int(decisions.get("pseudo_epochs", self.plan.pseudo_epochs))}

    def record(self) -> dict:
        """The plan, the measured speeds and each stage's planned and actual seconds:
        for metrics.json and the report."""
        plan = self.plan
        stages = list(dict.fromkeys([*plan.stages, *self.actual]))
        return {"minutes": plan.minutes, "seconds": plan.seconds,
                "search_seconds": plan.search_seconds, "table_row": plan.row,
                "reused_plan": self.reused, "members": plan.members, "folds": plan.folds,
                "repeats": plan.repeats, "epochs": plan.epochs, "tta": plan.tta,
                "pseudo_threshold": plan.pseudo_threshold, "pseudo_epochs": plan.pseudo_epochs,
                "flags_given": plan.given, "decisions": dict(plan.decisions), "jobs": plan.jobs,
                "parallel_speedup": PARALLEL_SPEEDUP,
                "speeds": {name: speed.as_dict() for name, speed in plan.speeds.items()},
                "stages": [{"stage": stage, "planned_seconds": plan.stages.get(stage),
                            "actual_seconds": self.actual.get(stage)} for stage in stages],
                "eta_seconds": plan.eta()}


# ---------------------------------------------------------------- the commands


def plan_path(config: Config, command: str, settings: dict) -> Path:
    """Where a command's plan for these settings is saved: <artifacts>/plans/<command>-<key>."""
    keyed = {"minutes": config.minutes, "seed": config.seed, "source": config.source,
             "train_samples": config.train_samples, "batch_size": config.batch_size,
             "precision": config.precision, **settings,
             "given": {name: getattr(config, name)
                       for name in sorted(config.flags_given & set(PLANNED_FLAGS))}}
    digest = hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()
    return Path(config.artifacts_dir) / "plans" / f"{command}-{digest[:12]}.json"


def _save(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)


def search_spent(config: Config) -> float:
    """Seconds the search spent of this budget: what python -m src.tune recorded in
    best_hparams.json when it ran with the same --minutes; else 0."""
    try:
        budget = json.loads(ensemble.best_hparams_path(config).read_text()).get("budget") or {}
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(budget.get("spent_seconds", 0)) if budget.get("minutes") == config.minutes else 0


def candidate_members(config: Config) -> list[ensemble.Member]:
    """The networks a plan may ensemble, best first: with --top-k given, load_members'
    own; else up to the row's max_members, the default CNN first with --include-default
    (off in every profile: the search's first trial, it joins on its score)."""
    if "top_k" in config.flags_given:
        return ensemble.load_members(config)
    most = table_row(config.minutes).max_members
    members = ensemble.load_members(dataclasses.replace(config, top_k=most))
    first = [m for m in members if config.include_default and m.origin.startswith("default")]
    return (first + [m for m in members if m not in first])[:most]


def plan_submit(digits, config: Config, started: float, save: bool = True,
                clock: Callable[[], float] = time.perf_counter
                ) -> tuple[Config, list[ensemble.Member], Budget]:
    """This run's plan: an earlier run's with the same settings (whose fold models are this
    run's), else a new one from timing each candidate network; printed. Returns the config
    and members it sets and the Budget that keeps the run to it."""
    from src.calibrate import measure_speed

    candidates = candidate_members(config)
    sizes = Sizes(len(digits.y_train), len(digits.x_test))
    path = plan_path(config, "submit", {
        "data": ensemble.data_fingerprint(digits.x_train, digits.y_train), "test": sizes.test,
        "candidates": [member.hparams for member in candidates]})
    plan = None if config.fresh or not path.is_file() else _load_plan(path)
    reused = plan is not None
    if plan is None:
        print(f"plan: timing {len(candidates)} network(s) on this machine", flush=True)
        speeds = {member.name: measure_speed(member.hparams, digits.x_train, digits.y_train,
                                             digits.x_test, config.batch_size, config.precision,
                                             config.seed) for member in candidates}
        plan = plan_ensemble(config, speeds, sizes, clock() - started, search_spent(config))
        if save:
            _save(path, plan.to_json())
    print("\n".join(describe(plan, reused)), flush=True)
    members = [member for member in candidates if member.name in plan.members]
    config = dataclasses.replace(config, folds=plan.folds, repeats=plan.repeats,
                                 epochs=plan.epochs, tta=plan.tta,
                                 pseudo_threshold=plan.pseudo_threshold,
                                 pseudo_epochs=plan.pseudo_epochs or config.pseudo_epochs)
    return config, members, Budget(plan, started, path if save else None, clock, reused)


def _load_plan(path: Path) -> Plan:
    try:
        return Plan.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as error:
        raise DataError("a plan written by python -m src.submit", type(error).__name__,
                        file=path, hint="delete it or rerun with --fresh") from None


def search_table_settings(config: Config) -> Config:
    """--tune-samples from the budget's PLAN_TABLE row, unless given."""
    if "tune_samples" in config.flags_given:
        return config
    return dataclasses.replace(config, tune_samples=table_row(config.minutes).search_samples)


def plan_search(config: Config, train: tuple, validation: tuple, sizes: Sizes,
                started: float, trial_epochs: Callable[[Config], list[int]],
                clock: Callable[[], float] = time.perf_counter) -> tuple[Config, dict]:
    """The search's share of the budget (PLAN_TABLE), spent on epoch-count trials as the
    most epochs a trial may train that fit it, given the epochs of each trial
    (src.tune.planned_epochs), or on time-based trials (--trial-seconds) as the seconds
    each trains and the most epochs a member of the submit that follows (whose data
    has `sizes`) could use; an earlier run's choice with the same settings, so that it
    resumes the same search. Returns the config with what the plan chose and the record
    for best_hparams.json."""
    from src.calibrate import measure_speed
    from src.model import DEFAULT_HPARAMS

    (x_train, y_train), (x_val, _) = train, validation
    row = table_row(config.minutes)
    path = plan_path(config, "tune", {"data": ensemble.data_fingerprint(x_train, y_train),
                                      "tune_samples": config.tune_samples,
                                      "tuner": config.tuner,
                                      "timed": bool(config.trial_seconds)})
    if config.overwrite or not path.is_file():
        speed = measure_speed(DEFAULT_HPARAMS, x_train, y_train, x_val, config.batch_size,
                              config.precision, config.seed)
        elapsed, share = clock() - started, config.minutes * 60 * row.search_share
        images = (len(x_train), len(x_val))
        if config.trial_seconds:
            chosen = _timed_trials(config, row, speed, images, elapsed, share)
            chosen["tune_epochs"] = _timed_trial_epochs(config, row, speed, sizes, len(x_train),
                                                        share, chosen["trial_seconds"])
        else:
            chosen = _trial_epochs(config, row, speed, images, elapsed, share, trial_epochs)
        _save(path, json.dumps({
            "minutes": config.minutes, "share_seconds": share, **chosen,
            "tune_samples": config.tune_samples, "speed": speed.as_dict(),
            "plan_file": str(path)}, indent=2) + "\n")
    record = json.loads(path.read_text())
    if "trial_seconds" in record and "tune_epochs" not in record:
        # A plan saved before trials stopped at their member's epochs: the search it began
        # resumes with the cap it had, 10 x the profile's --tune-epochs.
        record["tune_epochs"] = 10 * config.tune_epochs
    if "trial_seconds" in record:
        what = (f"{record['max_trials']} trials of {record['trial_seconds']:g}s of training "
                f"each, at most {record['tune_epochs']} epochs")
        settings = {name: record[name] for name in ("max_trials", "trial_seconds", "tune_epochs")}
    else:
        what = f"up to {record['tune_epochs']} epochs a trial"
        settings = {"tune_epochs": record["tune_epochs"]}
    print(f"plan for {config.minutes:g} minutes, the search's share "
          f"{format_duration(record['share_seconds'])}: {what} on "
          f"{config.tune_samples or 'every'} image(s), ETA "
          f"{format_duration(record['planned_seconds'])}", flush=True)
    return dataclasses.replace(config, **settings), record


def _trial_epochs(config: Config, row: PlanRow, speed: Speed, images: tuple[int, int],
                  elapsed: float, share: float,
                  trial_epochs: Callable[[Config], list[int]]) -> dict:
    """Epoch-count trials: the most --tune-epochs, up to the row's cap, whose trials fit."""
    def cost(epochs: int) -> float:
        trials = trial_epochs(dataclasses.replace(config, tune_epochs=epochs))
        return sum(fold_seconds(speed, *images, e) for e in trials)

    tries = flag_choices(config, "tune_epochs", row.search_max_epochs, MIN_SEARCH_EPOCHS)
    epochs = next((e for e in tries if elapsed + cost(e) <= share), 0)
    if not epochs:
        raise too_short(config, (elapsed + cost(tries[-1])) / row.search_share, 0,
                        f"a search of {tries[-1]} epochs a trial, {row.search_share:.0%} "
                        "of the budget")
    return {"tune_epochs": epochs, "planned_seconds": elapsed + cost(epochs)}


def _timed_trial_epochs(config: Config, row: PlanRow, speed: Speed, sizes: Sizes,
                        train_images: int, share: float, trial_seconds: float) -> int:
    """The most epochs a time-based trial trains (a --tune-epochs given is kept): as many
    as its seconds buy a network at plan.speed_at_the_caps, the speed past which a member
    trains no more, or the default CNN, whichever is faster.

    Past that speed a trial would train on where its member cannot, and score the cheap
    network above networks that, at the caps, beat it (README, the full profile)."""
    if "tune_epochs" in config.flags_given:
        return config.tune_epochs
    factor = speed_at_the_caps(row, speed, sizes, config.minutes * 60 - share,
                               workers.resolve_jobs(config.jobs))
    # inf (no member reaches the caps in a budget this short): time alone limits a trial,
    # and no network of the search space trains 100 times the default CNN's images/s
    factor = min(max(factor, 1), 100)
    most = trial_seconds * speed.train_images_per_second * factor / train_images
    return max(math.floor(most), MIN_SEARCH_EPOCHS)


def _timed_trials(config: Config, row: PlanRow, speed: Speed, images: tuple[int, int],
                  elapsed: float, share: float) -> dict:
    """Time-based trials: the share split into --max-trials equal trials, each less what
    it pays besides training; fewer trials (down to MIN_SEARCH_TRIALS) while that buys the
    default CNN fewer than MIN_SEARCH_EPOCHS epochs. A given --trial-seconds is kept."""
    train_images, val_images = images

    def cost(seconds: float) -> float:
        # Timing the network (its start-up, warm-up and timed batches), then a fold model's
        # start-up and epochs, validation included, then predicting the hold-out once more.
        timing = (speed.startup_seconds + TRIAL_CALIBRATION_SECONDS
                  + WARMUP_BATCHES * config.batch_size / speed.train_images_per_second)
        epochs = seconds * speed.train_images_per_second / train_images
        return (timing + fold_seconds(speed, train_images, val_images, epochs)
                + val_images / speed.predict_images_per_second)

    fewest = MIN_SEARCH_EPOCHS * train_images / speed.train_images_per_second
    given = "trial_seconds" in config.flags_given
    tries = flag_choices(config, "max_trials", config.max_trials, MIN_SEARCH_TRIALS)
    for trials in tries:
        seconds = config.trial_seconds
        if not given:  # cost is linear in seconds: the seconds whose cost is the trial's part
            part = (share - elapsed) / trials
            seconds = math.floor((part - cost(0)) / (cost(1) - cost(0)) * 10) / 10
        if (given or seconds >= fewest) and elapsed + trials * cost(seconds) <= share:
            return {"max_trials": trials, "trial_seconds": seconds,
                    "planned_seconds": elapsed + trials * cost(seconds)}
    seconds = config.trial_seconds if given else math.ceil(fewest * 10) / 10
    raise too_short(config, (elapsed + tries[-1] * cost(seconds)) / row.search_share, 0,
                    f"a search of {tries[-1]} trials of {seconds:g}s each, "
                    f"{row.search_share:.0%} of the budget")
