"""Plan a run to a budget: ``--minutes N`` on python -m src.tune and python -m src.submit.

Given the speed of each network it may train on the machine at hand
(src.calibrate), the planner prices every stage and takes from PLAN_TABLE the
recipe with the best measured accuracy that fits: folds fixed by the table's
row, repeats of the folds while they fit at the row's repeat_min_epochs or
more, epochs as many as fit up to the row's cap, test-time augmentation, then
a pseudo-labelled round if the rest buys its fewest epochs, then more members
while they fit. Flags the user gave are kept and the plan works around them.
Nothing here reads a clock or a file: src.budget runs a plan, re-planning at
stage boundaries and before each fold model starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from src.calibrate import Speed
from src.config import Config
from src.errors import DataError
from src.plan_files import PLANNED_FLAGS, Plan, Sizes
from src.predict import TTA_SHIFTS
from src.util import format_duration


@dataclass(frozen=True)
class PlanRow:
    """What a budget of from_minutes or more may buy, and where each number comes from."""

    from_minutes: float
    folds: int  # stratified folds per member
    min_epochs: int  # a fold model's fewest epochs: a budget that cannot buy them is too short
    max_epochs: int  # epochs grow with the budget up to here
    max_repeats: int  # the folds drawn again on new shuffles, while the budget buys them ...
    repeat_min_epochs: int  # ... at this many epochs or more; else the epochs grow instead
    max_members: int  # networks ensembled when the budget buys them
    tta: bool  # test-time augmentation when its prediction cost fits
    pseudo_threshold: float  # confidence a test image needs for round two; 0: no round two
    pseudo_min_epochs: int
    pseudo_max_epochs: int
    search_share: float  # the search's share of a budget that covers tune and submit
    # --tune-epochs grows with the share up to here (epoch-count trials; time-based ones
    # split the share into --max-trials trials instead)
    search_max_epochs: int
    search_samples: int  # --tune-samples (0: every image)
    source: str


# The lead fills these from the measured runs; each row says where its numbers come from.
PLAN_TABLE: tuple[PlanRow, ...] = (
    PlanRow(
        from_minutes=0, folds=3, min_epochs=5, max_epochs=40, max_repeats=3,
        repeat_min_epochs=20, max_members=1, tta=True,
        pseudo_threshold=0.0, pseudo_min_epochs=4, pseudo_max_epochs=10,
        search_share=0.15, search_max_epochs=8, search_samples=12_000,
        source="README, Measured figures, accuracy per minute (the default CNN x 3 folds, "
        "TTA): one set of folds scored 99.574/99.605/99.574% OOF at 20 epochs (seeds "
        "42/7/43) and 99.600/99.607% at 40 (seeds 42/7), 60 epochs 99.583% (seed 42), so no "
        "more than 40; two repeats of 20 epochs (two of those seeds' runs, other splits) "
        "99.610-99.640%, three 99.638%, so a repeat at 20 epochs before 20 more epochs; a "
        "pseudo-labelled round (confidence 0.9, 10 epochs) 99.560% for its member and "
        "99.574% for the pair, at twice the time, so no round two; a second network 99.583% "
        "as a plain mean (a tie, at 2.3x the time), so one network; 4 folds (99.52%) did "
        "not pay at equal minutes. Search trials of equal epochs ranked two searches' "
        "networks as their OOF at 20 epochs did (Spearman 0.83 and 1.00 at 8 epochs, "
        "1.00 and 0.94 at 6), so up to 8. Not measured: min_epochs."),
    PlanRow(
        from_minutes=60, folds=3, min_epochs=5, max_epochs=40, max_repeats=5,
        repeat_min_epochs=30, max_members=2, tta=True,
        pseudo_threshold=0.0, pseudo_min_epochs=4, pseudo_max_epochs=10,
        search_share=0.15, search_max_epochs=30, search_samples=12_000,
        source="Measured at 120 minutes on a 2-core CPU (README, 2026-12-04/05): tune then "
        "submit, 99.607% OOF in 1h57m (seed 42) and 99.638% in 1h53m (seed 7); the default "
        "CNN alone, 3 folds x 5 repeats x 33-35 epochs, 99.660% in 1h48m and 99.650% in "
        "1h57m. Earlier searches' 2 picks x 5 repeats x 40 epochs: 99.633% in 1h43m. "
        "Otherwise the 30-minute row's levers carried on "
        "(repeats of 3 folds paid more than epochs beyond 20, and epochs up to 40), with up "
        "to 5 repeats at 30 epochs or more, then the search's second pick when the budget "
        "still buys it; the search's share in equal-epoch trials, as the 30-minute row's "
        "(equal-time ones ranked cheap networks first that 40-epoch members did not keep), "
        "on 12,000 images: on every image a 2-core CPU would train a trial 2-3 epochs."),
)

# Two fold models side by side against the odd one alone (2 x alone / pair, README):
# 1.07x to 1.13x in six runs, mean 1.10x. 1.08 is a little below that mean because it
# kept whole plans on time: with 1.11, 9-model plans trained from 1m13s behind to 1m05s
# ahead; with 1.08, 1 s behind and 8 s ahead (two runs). Not measured for more workers.
PARALLEL_SPEEDUP = 1.08
WORKER_START_SECONDS = 5.0  # a worker process imports TensorFlow: 3.6 s on the 2-core VM
MODEL_LOAD_SECONDS = 0.5  # loading one saved fold model to predict with it
# After the last prediction: the report and figures. The quick run's submit took
# 14m33s, of which training 13m14s and prediction 69 s (README): about 10 s.
TAIL_SECONDS = 15.0
PSEUDO_SHARE_ESTIMATE = 1.0  # test images assumed to join round two until they are counted
MIN_SEARCH_EPOCHS = 2  # the fewest a search trial of the default CNN may train
# A time-based search runs fewer trials, down to MIN_SEARCH_TRIALS, rather than buy the
# default CNN fewer than TIMED_TRIAL_EPOCHS epochs a trial; when even the fewest trials
# buy it less, they run if they buy MIN_SEARCH_EPOCHS. Trials that buy the default only
# a few epochs rank networks by how fast they start, not where they end: on a 2-core VM,
# 8 trials bought it 4 epochs and it ranked 6th of 8; 4 trials bought it 11 and it
# ranked 1st, as 8 trials at 11 epochs had ranked it on a VM twice as fast (README).
TIMED_TRIAL_EPOCHS = 8
MIN_SEARCH_TRIALS = 3
FIRST, SECOND = "first round", "pseudo-labelled round"


def table_row(minutes: float) -> PlanRow:
    """The PLAN_TABLE row for a budget: the last one it reaches."""
    return [row for row in PLAN_TABLE if minutes >= row.from_minutes or row is PLAN_TABLE[0]][-1]


def planned_folds(config: Config) -> int:
    """The folds a run of config trains: --folds when given or without a budget, else its
    budget's PLAN_TABLE row's."""
    if not config.planned or "folds" in config.flags_given:
        return config.folds
    return table_row(config.minutes).folds


# ---------------------------------------------------------------- prices


def fold_seconds(speed: Speed, train_images: float, held_images: float, epochs: int) -> float:
    """One fold model trained alone: its start-up, then each epoch's training and validation."""
    return speed.startup_seconds + epochs * (train_images / speed.train_images_per_second
                                             + held_images / speed.predict_images_per_second)


def fold_model_seconds(speed: Speed, sizes: Sizes, folds: int, epochs: int,
                       extra: float = 0) -> float:
    """One fold model alone: trained on its fold's training part plus `extra`
    pseudo-labelled images, validated on its held-out part."""
    held = sizes.train / folds
    return fold_seconds(speed, sizes.train - held + extra, held, epochs)


def pseudo_label_estimate(sizes: Sizes, folds: int, repeats: int) -> list[float]:
    """Pseudo-labels per split before any is counted: PSEUDO_SHARE_ESTIMATE of the test
    images."""
    return [sizes.test * PSEUDO_SHARE_ESTIMATE] * folds * repeats


def training_seconds(fold_times: Sequence[float], jobs: int) -> float:
    """Wall seconds to train fold models that take fold_times each alone, `jobs` at a time:
    a group of models training together runs at PARALLEL_SPEEDUP times one alone."""
    if jobs <= 1:
        return sum(fold_times)
    groups = [fold_times[start:start + jobs] for start in range(0, len(fold_times), jobs)]
    return WORKER_START_SECONDS + sum(sum(group) / (PARALLEL_SPEEDUP if len(group) > 1 else 1)
                                      for group in groups)


def round_seconds(speeds: Sequence[Speed], sizes: Sizes, folds: int, epochs: int, jobs: int,
                  extra: Sequence[float] = (), repeats: int = 1) -> float:
    """Training one round: every network x fold of every repeat, each fold's training part
    plus extra[split] pseudo-labelled images."""
    times = [fold_model_seconds(speed, sizes, folds, epochs, extra[split] if extra else 0)
             for speed in speeds for split in range(folds * repeats)]
    return training_seconds(times, jobs)


def prediction_seconds(speeds: Sequence[Speed], sizes: Sizes, folds: int, tta: bool,
                       repeats: int = 1) -> float:
    """Predicting one round: each fold model loads, then predicts its held-out part and the
    test set, five passes each with TTA."""
    passes = len(TTA_SHIFTS) if tta else 1
    images = (sizes.train / folds + sizes.test) * passes
    return folds * repeats * sum(MODEL_LOAD_SECONDS + images / speed.predict_images_per_second
                                 for speed in speeds)


def stage_seconds(speeds: Sequence[Speed], sizes: Sizes, folds: int, repeats: int, epochs: int,
                  tta: bool, pseudo_epochs: int, jobs: int, elapsed: float) -> dict[str, float]:
    """Planned seconds per stage, in order, of a recipe for the networks timed as `speeds`:
    the `elapsed` seconds of loading and timing, each round's training and prediction (the
    pseudo-labelled round's only with pseudo_epochs, its pseudo-labels estimated as
    PSEUDO_SHARE_ESTIMATE of the test images per fold), then the report."""
    estimate = pseudo_label_estimate(sizes, folds, repeats)
    planned = {"load and calibrate": elapsed,
               f"train, {FIRST}": round_seconds(speeds, sizes, folds, epochs, jobs,
                                                repeats=repeats),
               f"predict, {FIRST}": prediction_seconds(speeds, sizes, folds, tta, repeats)}
    if pseudo_epochs:
        planned[f"train, {SECOND}"] = round_seconds(speeds, sizes, folds, pseudo_epochs, jobs,
                                                    estimate, repeats)
        planned[f"predict, {SECOND}"] = prediction_seconds(speeds, sizes, folds, tta, repeats)
    return {**planned, "report": TAIL_SECONDS}


def speed_at_the_caps(row: PlanRow, speed: Speed, sizes: Sizes, seconds: float,
                      jobs: int) -> float:
    """How many times the speed of the network timed as `speed` a network needs to train
    the row's most as a member (its folds x max_repeats x max_epochs, TTA if the row has
    it) within one member's part of `seconds`, the submit's budget split between the row's
    max_members networks; inf when the costs that no speed cuts overrun that part.

    A faster network trains no more as a member: the caps bind and the run ends early,
    so a search trial buys it no more epochs either (src.search_plan)."""
    part = seconds / row.max_members - TAIL_SECONDS

    def cost(factor: float) -> float:
        faster = dataclasses.replace(
            speed, train_images_per_second=speed.train_images_per_second * factor,
            predict_images_per_second=speed.predict_images_per_second * factor)
        return (round_seconds([faster], sizes, row.folds, row.max_epochs, jobs,
                              repeats=row.max_repeats)
                + prediction_seconds([faster], sizes, row.folds, row.tta, row.max_repeats))

    # cost(factor) = fixed + scaled / factor: start-ups and model loads do not speed up
    scaled = 2 * (cost(1) - cost(2))
    fixed = cost(1) - scaled
    return scaled / (part - fixed) if part > fixed else math.inf


# ---------------------------------------------------------------- the plan


def flag_choices(config: Config, name: str, largest: int, smallest: int) -> list[int]:
    """The flag's value when given, else every value from largest down to smallest
    (largest alone when it is the smaller: a profile's --max-trials below the fewest)."""
    if name in config.flags_given:
        return [getattr(config, name)]
    return list(range(largest, min(smallest, largest) - 1, -1))


def plan_ensemble(config: Config, speeds: dict[str, Speed], sizes: Sizes, elapsed: float,
                  search_seconds: float = 0.0, required: Sequence[str] = ()) -> Plan:
    """The best recipe PLAN_TABLE allows within config.minutes, given the speeds of the
    candidate networks (best first), the seconds already spent by this command (elapsed)
    and by the search, and the networks it must train beside the first (required); a
    DataError naming the shortest workable budget when none fits."""
    row, given = table_row(config.minutes), config.flags_given
    folds = planned_folds(config)
    names = list(speeds)
    first = names if "top_k" in given else names[:1]
    # Asked for (--include-default's default CNN): trained beside the first pick, as the
    # flags given are kept.
    first = [*first, *(name for name in required if name not in first)]
    seconds = config.minutes * 60 - search_seconds
    threshold = config.pseudo_threshold if "pseudo_threshold" in given else row.pseudo_threshold
    if "pseudo_epochs" in given and threshold <= 0:  # it would be dropped without a word
        raise DataError("--pseudo-threshold P with --pseudo-epochs (this budget's plan has no "
                        "pseudo-labelled round of its own)", "--pseudo-epochs alone",
                        column="--pseudo-epochs")
    pseudo_choices = flag_choices(config, "pseudo_epochs", row.pseudo_max_epochs,
                                  row.pseudo_min_epochs) if threshold > 0 else [0]
    repeat_choices = flag_choices(config, "repeats", row.max_repeats, 1)

    def stages(members: list[str], repeats: int, epochs: int, tta: bool,
               pseudo_epochs: int) -> dict[str, float]:
        return stage_seconds([speeds[name] for name in members], sizes, folds, repeats, epochs,
                             tta, pseudo_epochs, config.jobs, elapsed)

    def fits(members, repeats, epochs, tta, pseudo_epochs) -> bool:
        return sum(stages(members, repeats, epochs, tta, pseudo_epochs).values()) <= seconds

    epoch_choices = flag_choices(config, "epochs", row.max_epochs, row.min_epochs)
    # A round asked for (its threshold or epochs given) keeps its fewest epochs; the
    # first round's epochs fill the rest (else they took it all, and the round was dropped).
    forced_pseudo = pseudo_choices[-1] if {"pseudo_epochs", "pseudo_threshold"} & given else 0
    tta_choices = [config.tta] if "tta" in given else [True, False] if row.tta else [False]

    def most_epochs(repeats: int, tta: bool) -> int:
        # A repeat the plan chose joins only at repeat_min_epochs or more (below, epochs pay
        # more); given --epochs or --repeats are kept as they are.
        chosen_by_plan = repeats > 1 and not {"epochs", "repeats"} & given
        fewest = row.repeat_min_epochs if chosen_by_plan else 0
        return next((e for e in epoch_choices
                     if e >= fewest and fits(first, repeats, e, tta, forced_pseudo)), 0)

    choice = next(((tta, repeats, most_epochs(repeats, tta)) for tta in tta_choices
                   for repeats in repeat_choices if most_epochs(repeats, tta)), None)
    if choice is None:
        smallest = (repeat_choices[-1], epoch_choices[-1], tta_choices[-1])
        shortest = sum(stages(first, *smallest, forced_pseudo).values())
        raise too_short(config, shortest + search_seconds, search_seconds,
                        f"{len(first)} network(s) x {folds} folds"
                        f"{f' x {smallest[0]} repeats' if smallest[0] > 1 else ''} x "
                        f"{smallest[1]} epochs{', TTA' if smallest[2] else ''}")
    tta, repeats, epochs = choice
    pseudo_epochs = next((p for p in pseudo_choices if fits(first, repeats, epochs, tta, p)), 0)
    members = list(first)
    for name in [] if "top_k" in given else names[1:]:
        if len(members) >= row.max_members:
            break
        if name in members:
            continue
        if not fits([*members, name], repeats, epochs, tta, pseudo_epochs):
            break
        members.append(name)
    members = [name for name in names if name in members]  # the order the run trains them
    return Plan(minutes=config.minutes, seconds=seconds, search_seconds=search_seconds,
                row=row.from_minutes, members=members, folds=folds, epochs=epochs, tta=tta,
                pseudo_threshold=threshold, pseudo_epochs=pseudo_epochs, jobs=config.jobs,
                sizes=sizes, speeds=speeds,
                stages=stages(members, repeats, epochs, tta, pseudo_epochs),
                given=sorted(set(given) & set(PLANNED_FLAGS)), repeats=repeats)


def too_short(config: Config, shortest_seconds: float, search_seconds: float,
              smallest: str) -> DataError:
    """The error for a budget that cannot buy the smallest plan."""
    shortest = math.ceil(shortest_seconds / 6) / 10  # minutes, rounded up to a tenth
    spent = (f"; the search already spent {format_duration(search_seconds)} of it, which "
             "submit counts only at the --minutes the search ran to" if search_seconds else "")
    return DataError(f"a budget of at least {shortest:g} minutes on this machine",
                     f"{config.minutes:g}", column="--minutes",
                     hint=f"the smallest plan: {smallest}{spent}")


def describe(plan: Plan, reused: bool) -> list[str]:
    """The plan as the lines a run prints before it trains."""
    members = ", ".join(plan.members)
    lines = [f"plan for {plan.minutes:g} minutes on this machine (PLAN_TABLE row from "
             f"{plan.row:g} minutes){', reused from an earlier run' if reused else ''}:"]
    if plan.search_seconds:
        lines.append(f"  the search spent {format_duration(plan.search_seconds)}; this run "
                     f"has {format_duration(plan.seconds)}")
    for name in plan.members:
        speed = plan.speeds[name]
        lines.append(f"  {name}: {speed.train_images_per_second:,.0f} training and "
                     f"{speed.predict_images_per_second:,.0f} prediction images/s in one "
                     f"process, {speed.startup_seconds:.1f}s to start a fold model")
    if plan.jobs > 1:
        lines.append(f"  {plan.jobs} fold models at once: {PARALLEL_SPEEDUP}x one's speed")
    lines.append(f"  {members} x {plan.folds} folds"
                 f"{f' x {plan.repeats} repeats' if plan.repeats > 1 else ''} x {plan.epochs} "
                 f"epochs{', TTA' if plan.tta else ''}")
    if plan.pseudo_epochs:
        lines.append(f"  then a pseudo-labelled round (confidence >= {plan.pseudo_threshold:g})"
                     f" x {plan.pseudo_epochs} epochs, decided again after the first round")
    lines += [f"    {stage}: {format_duration(seconds)}" for stage, seconds in plan.stages.items()]
    lines.append(f"  ETA {format_duration(plan.eta())} of {format_duration(plan.seconds)}")
    if plan.eta() < 0.9 * plan.seconds:
        lines.append("  ends early: more epochs, rounds or networks are capped by PLAN_TABLE "
                     "or do not fit")
    return lines
