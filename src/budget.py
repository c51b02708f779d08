"""Keeping a run to its budget: ``--minutes N`` as python -m src.submit uses it.

src.plan computes plans; this module runs them: it times the candidate
networks (src.calibrate), makes or reloads the plan, saves it under
``<artifacts>/plans/`` keyed by the run's settings (src.plan_files; a rerun keeps
the plan, its decisions, and so the fold models' cache keys), and holds the Budget that
re-plans against the clock at stage boundaries, and within a round before each
fold model starts (RoundPace). The search's share is src.search_plan's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from src.calibrate import Speed
from src.config import Config
from src.data import data_fingerprint
from src.errors import DataError
from src.members import Member, load_members
from src.model import DEFAULT_HPARAMS
from src.plan import (
    FIRST,
    PARALLEL_SPEEDUP,
    SECOND,
    TAIL_SECONDS,
    WORKER_START_SECONDS,
    describe,
    fold_model_seconds,
    plan_ensemble,
    prediction_seconds,
    pseudo_label_estimate,
    round_seconds,
    table_row,
    training_seconds,
)
from src.plan_files import Plan, Sizes, load_plan, plan_path, save_plan
from src.pseudo_labels import PSEUDO_SUFFIX
from src.search_results import best_hparams_path
from src.util import format_duration, is_number, read_json, write_atomically


class Budget:
    """A planned run against its clock.

    It records when each stage ends and, at the boundaries, re-plans: TTA stays
    on for a round's prediction while the time left still covers the rest, and
    the pseudo-labelled round gets as many epochs as the time left buys once the
    first round is done (none below its fewest); inside a round, its RoundPace
    cuts the epochs of fold models not yet started when the round runs late.
    Each decision is saved in the plan file; a rerun takes it from there instead
    of deciding again, so that it keeps the fold models' cache keys.
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

    def training_done(self, pseudo_round: bool) -> None:
        """Record the end of a round's training."""
        self._stage_ended(f"train, {_round_name(pseudo_round)}")

    def use_tta(self, pseudo_round: bool) -> bool:
        """Whether the round's prediction uses TTA: whether it fits in the time left once
        the round has trained; decided once and saved, so a rerun decides the same."""
        name = _round_name(pseudo_round)
        return bool(self._decide(f"tta, {name}", lambda: self._tta_fits(pseudo_round)))

    def prediction_done(self, pseudo_round: bool) -> None:
        """Record the end of a round's prediction."""
        self._stage_ended(f"predict, {_round_name(pseudo_round)}")

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
            print(f"plan: {_decision_words(key, decisions[key])}, as an earlier run decided",
                  flush=True)
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
            after += self._fewest_second_round()
        cost = prediction_seconds(speeds, plan.sizes, plan.folds, True, plan.repeats)
        # What _seconds_after_round(name, True) sums, but not `left() >= that sum`: the
        # floats round otherwise, and a decision at the boundary could change.
        fits = self.left() - cost >= after
        print(f"plan: test-time augmentation for the {_round_name(pseudo_round)}: "
              f"{'on' if fits else 'off, its ' + format_duration(cost) + ' would not fit'}",
              flush=True)
        return fits

    def _pseudo_epochs_that_fit(self, counts: Sequence[int]) -> int:
        plan = self.plan
        if "pseudo_epochs" in plan.given:
            return plan.pseudo_epochs
        row, speeds = table_row(plan.minutes), plan.member_speeds()
        tta = self.first_round_tta()  # as the first round did
        room = (self.left() - prediction_seconds(speeds, plan.sizes, plan.folds, tta,
                                                 plan.repeats) - TAIL_SECONDS)
        epochs = next((e for e in range(row.pseudo_max_epochs, row.pseudo_min_epochs - 1, -1)
                       if round_seconds(speeds, plan.sizes, plan.folds, e, plan.jobs, counts,
                                        plan.repeats) <= room), 0)
        print(f"plan: pseudo-labelled round: {f'{epochs} epochs' if epochs else 'skipped'} "
              f"(planned {plan.pseudo_epochs}), {format_duration(max(room, 0))} to train it",
              flush=True)
        return epochs

    def fold_epochs(self, pseudo_round: bool, member: str, split: int, planned: int) -> int:
        """A fold model's epochs: the planned ones, or fewer where a late round cut them
        (RoundPace), so that a rerun finds the model it trained."""
        key = _cut_key(_round_name(pseudo_round), member, split)
        return int(self.plan.decisions.get(key, planned))

    def round_pace(self, pseudo_round: bool, jobs: Sequence, names: Sequence[str],
                   epochs: int) -> RoundPace:
        """The RoundPace of a round's fold models still to train (ensemble.FoldJob), of
        members named as in the round, planned at `epochs`."""
        # By name, not position: the run's order need not be the plan's.
        speeds = {name: self.plan.speeds[name.removesuffix(PSEUDO_SUFFIX)] for name in names}
        return RoundPace(self, _round_name(pseudo_round), jobs, speeds, epochs)

    def _seconds_after_round(self, name: str, tta: bool = False) -> float:
        """What must fit after a round's training: its prediction (with TTA or without),
        the report, and after the first round the fewest epochs of a planned second one."""
        plan, speeds = self.plan, self.plan.member_speeds()
        after = TAIL_SECONDS + prediction_seconds(speeds, plan.sizes, plan.folds, tta,
                                                  plan.repeats)
        if name == FIRST and plan.pseudo_epochs:
            after += self._fewest_second_round()
        return after

    def _fewest_second_round(self) -> float:
        plan, speeds = self.plan, self.plan.member_speeds()
        fewest = (plan.pseudo_epochs if "pseudo_epochs" in plan.given
                  else table_row(plan.minutes).pseudo_min_epochs)
        estimate = pseudo_label_estimate(plan.sizes, plan.folds, plan.repeats)
        return (round_seconds(speeds, plan.sizes, plan.folds, fewest, plan.jobs, estimate,
                              plan.repeats)
                + prediction_seconds(speeds, plan.sizes, plan.folds, False, plan.repeats))

    def settings_used(self) -> dict:
        """TTA and the pseudo-labelled round's epochs as the first round's boundaries decided
        them (the plan's where no decision was taken)."""
        return {"tta": self.first_round_tta(), "pseudo_epochs": int(
            self.plan.decisions.get("pseudo_epochs", self.plan.pseudo_epochs))}

    def first_round_tta(self) -> bool:
        """Whether the first round predicted with TTA: its decision, else the plan's."""
        return bool(self.plan.decisions.get(f"tta, {FIRST}", self.plan.tta))

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


def _decision_words(key: str, value: object) -> str:
    """A saved decision as the line that made it words it: "test-time augmentation for the
    first round: off", "pseudo-labelled round: 10 epochs"."""
    if key.startswith("tta, "):
        return f"test-time augmentation for the {key.removeprefix('tta, ')}: " + (
            "on" if value else "off")
    return f"pseudo-labelled round: {f'{value} epochs' if value else 'skipped'}"


def _round_name(pseudo_round: bool) -> str:
    """A round's name in the plan's stages and decisions."""
    return SECOND if pseudo_round else FIRST


def _cut_key(name: str, member: str, split: int) -> str:
    return f"epochs, {name}, {member}, split {split + 1}"


# The share of a fold model's epochs a late round cuts to keep TTA: TTA was worth 14-21
# fewer OOF errors in three runs; the default CNN's epochs 20 to 40, 11 on seed 42 and 1
# on seed 7; the seed-42 quick pick's 20 to 34, none (README, Measured figures).
TTA_KEEPING_CUT = 0.25


class RoundPace:
    """One round's fold models against the time left, --jobs of them at once.

    Before a model starts it gets the most epochs, from the planned ones down to its
    PLAN_TABLE row's fewest, with which it and the models still waiting (at as many
    epochs) end, after the rest of those running, in time for the round's prediction,
    at the pace of the last model to end (its seconds over its planned seconds): a
    machine that slows down partway through a round. A late round first cuts up to
    TTA_KEEPING_CUT of the epochs to keep the prediction's TTA; if that is not enough,
    it gives TTA up (Budget.use_tta) and cuts only what the prediction without
    TTA needs. A cut is saved in the plan's decisions (Budget.fold_epochs).
    """

    def __init__(self, budget: Budget, name: str, jobs: Sequence, speeds: dict[str, Speed],
                 epochs: int):
        plan = budget.plan
        self.budget, self.name, self.speeds, self.epochs = budget, name, speeds, epochs
        self.waiting = {job.number: job for job in jobs}  # each priced at its network's speed
        self.ended = 0  # fold models of the round ended so far: a pace to speak of
        self.running: dict[int, tuple[float, float]] = {}  # number: (started, planned seconds)
        self.pace = 1.0
        self.workers = max(plan.jobs, 1)
        # a model beside others trains at PARALLEL_SPEEDUP / workers of its speed alone
        self.beside = self.workers / PARALLEL_SPEEDUP if self.workers > 1 else 1.0
        row, second = table_row(plan.minutes), name == SECOND
        self.fewest = min(row.pseudo_min_epochs if second else row.min_epochs, epochs)
        # the epochs a cut may leave to keep the prediction's TTA, most first (none without)
        fewest_with_tta = max(self.fewest, math.ceil(epochs * (1 - TTA_KEEPING_CUT)))
        self.epochs_keeping_tta = range(epochs, fewest_with_tta - 1, -1) if plan.tta else ()
        self.may_cut = ("pseudo_epochs" if second else "epochs") not in plan.given  # given wins

    def seconds_alone(self, job, epochs: int) -> float:
        """The job's fold model trained alone at the plan's speed."""
        extra = len(job.extra[1]) if job.extra is not None else 0
        return fold_model_seconds(self.speeds[job.member.name], self.budget.plan.sizes,
                                  job.folds, epochs, extra)

    def epochs_for(self, job) -> int:
        """The epochs of the job about to start; a cut is printed and saved."""
        self.waiting.pop(job.number, None)
        epochs, tta = self._epochs_that_fit(job) if self.may_cut else (self.epochs, True)
        budget, key = self.budget, _cut_key(self.name, job.member.name, job.fold)
        before = budget.plan.decisions.pop(key, None)  # a killed run's, for this model
        if epochs < self.epochs:
            budget.plan.decisions[key] = epochs
            why = (f"the last fold model took {self.pace:.2f}x its planned time" if self.ended
                   else "the round started late")
            print(f"plan: {job.label()}: {epochs} epochs, not {self.epochs}"
                  f"{', to keep TTA' if tta else ''}: {why}, "
                  f"{format_duration(max(budget.left(), 0))} left", flush=True)
        if budget.plan.decisions.get(key) != before and budget.path is not None:
            write_atomically(budget.path, budget.plan.to_json())
        self.running[job.number] = (budget.clock(), self.seconds_alone(job, epochs))
        return epochs

    def finished(self, job, seconds: float) -> None:
        """A fold model ended after `seconds` of training: the pace for the next."""
        _, planned = self.running.pop(job.number)
        self.ended += 1
        # Beside another model, or the last one alone (then the pace reads low, and nothing
        # is left to decide).
        self.pace = seconds / (planned * self.beside)

    def _epochs_that_fit(self, job) -> tuple[int, bool]:
        """The most epochs that fit, and whether they leave time for TTA."""
        now = self.budget.clock()
        # Work left in seconds alone: the running models' rest at the pace, then the models
        # waiting, this one among them.
        running = [max(0.0, planned * self.pace - (now - started) / self.beside)
                   for started, planned in self.running.values()]
        left, after = self.budget.left(), self.budget._seconds_after_round
        # A pace is an estimate (within about 1% of the budget in the tests): a late round
        # that keeps TTA leaves up to that much to spare, lest its epochs go and TTA with
        # them; as much as it runs late, so that a round a hair slower than timed (noise) is
        # not cut, since the plan itself may leave less than 1% of the budget.
        spare = min(max(self.pace - 1.0, 0.0), 0.01) * self.budget.plan.seconds
        all_epochs = range(self.epochs, self.fewest - 1, -1)
        if "tta" in self.budget.plan.given:  # a given --tta runs its passes, however late
            choices = [(epochs, self.budget.plan.tta) for epochs in all_epochs]
        else:
            choices = [*[(epochs, True) for epochs in self.epochs_keeping_tta],
                       *[(epochs, False) for epochs in all_epochs]]
        for epochs, tta in choices:
            # this one and those waiting, each at its own network's speed (a round trains
            # one network's folds, then the next's)
            work = [*running, *(self.seconds_alone(each, epochs) * self.pace
                                for each in (job, *self.waiting.values()))]
            # the workers are up (one job starts none); no model ends sooner than alone
            started = WORKER_START_SECONDS if self.workers > 1 else 0.0
            if max(training_seconds(work, self.workers) - started,
                   max(work)) <= left - after(self.name, tta) - (spare if tta else 0.0):
                return epochs, tta
        return choices[-1]


# ---------------------------------------------------------------- the commands


def search_spent(config: Config) -> float:
    """Seconds the search spent of this budget: what python -m src.tune recorded in
    best_hparams.json when it ran with the same --minutes; else 0."""
    try:
        budget = read_json(best_hparams_path(config)).get("budget") or {}
        spent = budget.get("spent_seconds", 0) if budget.get("minutes") == config.minutes else 0
    except (OSError, ValueError, AttributeError, TypeError):  # none, or not tune's
        return 0.0
    return float(spent) if is_number(spent, 0) else 0.0  # NaN or negative: not tune's either


def candidate_members(config: Config) -> list[Member]:
    """The networks a plan may ensemble, best first: with --top-k given, load_members'
    own; else the search's picks up to the row's max_members, and after them the default
    CNN with --include-default (off in every profile: the search's first trial, it joins
    on its score), which the plan trains beside the first pick."""
    if "top_k" in config.flags_given:
        return load_members(config)
    return load_members(dataclasses.replace(config, top_k=table_row(config.minutes).max_members))


def asked_for(config: Config, candidates: list[Member]) -> list[str]:
    """The networks a plan must train: with --include-default, the default CNN, whether
    load_members added it or the search picked it."""
    return [member.name for member in candidates
            if config.include_default and member.hparams == DEFAULT_HPARAMS][:1]


def plan_submit(digits, config: Config, started: float, save: bool = True,
                clock: Callable[[], float] = time.perf_counter
                ) -> tuple[Config, list[Member], Budget]:
    """This run's plan: an earlier run's with the same settings (whose fold models are this
    run's), else a new one from timing each candidate network; printed. Returns the config
    and members it sets and the Budget that keeps the run to it."""
    from src.calibrate import machine_key, measure_speed

    candidates = candidate_members(config)
    sizes = Sizes(len(digits.y_train), len(digits.x_test))
    spent = search_spent(config)
    # jobs too: a plan priced for one fold model at a time paces two wrongly (RoundPace).
    # The names and the search's seconds too: a search that picks the default CNN (rank1)
    # after a run without one (default) must not find that run's plan, whose members it
    # names differently, nor its budget before the search spent some of it. The machine
    # too: another one's speeds would plan too much or too little here.
    path = plan_path(config, "submit", {
        "data": data_fingerprint(digits.x_train, digits.y_train), "test": sizes.test,
        "candidates": [[member.name, member.hparams] for member in candidates],
        "jobs": config.jobs, "search_seconds": spent, "machine": machine_key()})
    plan = None if config.fresh or not path.is_file() else load_plan(path)
    reused = plan is not None
    if plan is None:
        print(f"plan: timing {len(candidates)} network(s) on this machine", flush=True)
        speeds = {member.name: measure_speed(member.hparams, digits.x_train, digits.y_train,
                                             digits.x_test, config.batch_size, config.precision,
                                             config.seed) for member in candidates}
        plan = plan_ensemble(config, speeds, sizes, clock() - started, spent,
                             required=asked_for(config, candidates))
        if save:
            save_plan(path, plan.to_json())
    unknown = set(plan.members) - {member.name for member in candidates}
    if unknown:  # a hand-edited plan: the run would train none of them
        raise DataError("a plan written by python -m src.submit, its members among the "
                        f"networks to train ({', '.join(m.name for m in candidates)})",
                        f"{', '.join(sorted(unknown))}", file=path,
                        hint="delete it or rerun with --fresh")
    print("\n".join(describe(plan, reused)), flush=True)
    members = [member for member in candidates if member.name in plan.members]
    config = dataclasses.replace(config, folds=plan.folds, repeats=plan.repeats,
                                 epochs=plan.epochs, tta=plan.tta,
                                 pseudo_threshold=plan.pseudo_threshold,
                                 pseudo_epochs=plan.pseudo_epochs or config.pseudo_epochs)
    return config, members, Budget(plan, started, path if save else None, clock, reused)
