"""The search's share of a budget: ``--minutes N`` as python -m src.tune uses it.

It times the default CNN (src.calibrate), prices the search's trials with
src.plan, and saves the choice under ``<artifacts>/plans/`` keyed by the run's
settings, so that a rerun resumes the same search.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from src.calibrate import TRIAL_CALIBRATION_SECONDS, WARMUP_BATCHES, Speed, resolve_jobs
from src.config import Config
from src.data import data_fingerprint
from src.errors import DataError
from src.plan import (
    MIN_SEARCH_EPOCHS,
    MIN_SEARCH_TRIALS,
    TIMED_TRIAL_EPOCHS,
    PlanRow,
    flag_choices,
    fold_seconds,
    speed_at_the_caps,
    table_row,
    too_short,
)
from src.plan_files import Sizes, plan_path, save_plan
from src.util import format_duration, is_count, is_number, one_line, read_json, write_atomically

# In the tuner's folder: the seconds a planned search has spent over all its runs.
SEARCH_CLOCK = "search_seconds.json"


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
    path = plan_path(config, "tune", {"data": data_fingerprint(x_train, y_train),
                                      "tune_samples": config.tune_samples,
                                      "tuner": config.tuner,
                                      "timed": bool(config.trial_seconds),
                                      # a profile's, so not among the flags given
                                      "max_trials": config.max_trials, "jobs": config.jobs})
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
        save_plan(path, json.dumps({
            "minutes": config.minutes, "share_seconds": share, **chosen,
            "tune_samples": config.tune_samples, "speed": speed.as_dict(),
            "plan_file": str(path)}, indent=2) + "\n")
    try:
        record = _checked_record(read_json(path), config)
    except (ValueError, KeyError, TypeError) as error:  # a damaged or foreign file
        raise DataError("a search plan written by python -m src.tune", one_line(error),
                        file=path, hint="delete it or rerun with --overwrite") from None
    names = ("max_trials", "trial_seconds", "tune_epochs")
    if "trial_seconds" in record:
        what = (f"{record['max_trials']} trials of {record['trial_seconds']:g}s of "
                f"training each, at most {record['tune_epochs']} epochs")
    else:
        what, names = f"up to {record['tune_epochs']} epochs a trial", ("tune_epochs",)
    settings = {name: record[name] for name in names}
    share_text, eta = (format_duration(record[name])
                       for name in ("share_seconds", "planned_seconds"))
    searched = len(train[1]) + len(validation[1])  # fewer than --tune-samples on small data
    print(f"plan for {config.minutes:g} minutes, the search's share {share_text}: {what} on "
          f"{searched:,} images, ETA {eta}", flush=True)
    return dataclasses.replace(config, **settings), record


def _checked_record(record: dict, config: Config) -> dict:
    """A saved search plan, if it holds what plan_search writes; else TypeError or KeyError
    naming the first field that does not."""
    if "trial_seconds" in record and "tune_epochs" not in record:
        # A plan saved before trials stopped at their member's epochs: the search it
        # began resumes with the cap it had, 10 x the profile's --tune-epochs.
        record["tune_epochs"] = 10 * config.tune_epochs
    timed = "trial_seconds" in record
    counts = ["tune_epochs", *(["max_trials"] if timed else [])]
    seconds = ["share_seconds", "planned_seconds", *(["trial_seconds"] if timed else [])]
    for name in counts:
        if not is_count(record[name], 1):
            raise TypeError(f"{name}: an integer >= 1")
    for name in seconds:
        if not is_number(record[name], 0):
            raise TypeError(f"{name}: a number of seconds >= 0")
    return record


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
                               resolve_jobs(config.jobs))
    # inf (no member reaches the caps in a budget this short): time alone limits a trial,
    # and no network of the search space trains 100 times the default CNN's images/s
    factor = min(max(factor, 1), 100)
    most = trial_seconds * speed.train_images_per_second * factor / train_images
    return max(math.floor(most), MIN_SEARCH_EPOCHS)


def _timed_trials(config: Config, row: PlanRow, speed: Speed, images: tuple[int, int],
                  elapsed: float, share: float) -> dict:
    """Time-based trials: the share split into --max-trials equal trials, each less what
    it pays besides training; fewer trials (down to MIN_SEARCH_TRIALS) while that buys the
    default CNN fewer than TIMED_TRIAL_EPOCHS epochs, and when no number of trials buys it
    that many, the fewest trials, if they buy it MIN_SEARCH_EPOCHS. A given
    --trial-seconds is kept."""
    train_images, val_images = images

    def cost(seconds: float) -> float:
        # Timing the network (its start-up, warm-up and timed batches), then a fold model's
        # start-up and epochs, validation included, then predicting the hold-out once more.
        timing = (speed.startup_seconds + TRIAL_CALIBRATION_SECONDS
                  + WARMUP_BATCHES * config.batch_size / speed.train_images_per_second)
        epochs = seconds * speed.train_images_per_second / train_images
        return (timing + fold_seconds(speed, train_images, val_images, epochs)
                + val_images / speed.predict_images_per_second)

    def seconds_of(epochs: int) -> float:  # the default CNN's training for that many
        return epochs * train_images / speed.train_images_per_second

    given = "trial_seconds" in config.flags_given
    tries = flag_choices(config, "max_trials", config.max_trials, MIN_SEARCH_TRIALS)
    fewest = seconds_of(MIN_SEARCH_EPOCHS)
    choices = [(trials, seconds_of(TIMED_TRIAL_EPOCHS)) for trials in tries]
    choices.append((tries[-1], fewest))
    for trials, least in choices:
        seconds = config.trial_seconds
        if not given:  # cost is linear in seconds: the seconds whose cost is the trial's part
            part = (share - elapsed) / trials
            seconds = math.floor((part - cost(0)) / (cost(1) - cost(0)) * 10) / 10
        if (given or seconds >= least) and elapsed + trials * cost(seconds) <= share:
            return {"max_trials": trials, "trial_seconds": seconds,
                    "planned_seconds": elapsed + trials * cost(seconds)}
    seconds = config.trial_seconds if given else math.ceil(fewest * 10) / 10
    raise too_short(config, (elapsed + tries[-1] * cost(seconds)) / row.search_share, 0,
                    f"a search of {tries[-1]} trials of {seconds:g}s each, "
                    f"{row.search_share:.0%} of the budget")


class SearchClock:
    """The seconds a planned search has spent, over every run of it: a search killed and
    run again counts the runs before, up to their last finished trial, so that submit
    plans only what is really left of the budget."""

    def __init__(self, path: Path, started: float, fresh: bool,
                 clock: Callable[[], float] = time.perf_counter):
        self.path, self.started, self.clock = path, started, clock
        self.before = 0.0 if fresh else self._read()
        self.trials_ended = 0  # in this run

    def _read(self) -> float:
        """The earlier runs' seconds: 0 where none ran; DataError for a record that is not
        one (counted as 0, submit would plan the whole budget again, after the search)."""
        if not self.path.exists():
            return 0.0
        try:
            seconds = read_json(self.path)["seconds"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise self._damaged(one_line(error)) from None
        if not is_number(seconds, 0):  # NaN, negative
            raise self._damaged(f"seconds {seconds!r}")
        return float(seconds)

    def _damaged(self, found: str) -> DataError:
        return DataError('the seconds python -m src.tune recorded ({"seconds": N})', found,
                         file=self.path, hint="delete it to count this run's alone, or rerun "
                         "with --overwrite to start over")

    def seconds(self) -> float:
        """The earlier runs' seconds and this run's so far."""
        return round(self.before + self.clock() - self.started, 1)

    def save(self) -> float:
        """Record seconds() (after each trial: a kill loses at most the trial it cut off)
        and return what it recorded."""
        seconds = self.seconds()
        write_atomically(self.path, json.dumps({"seconds": seconds}) + "\n")
        return seconds

    def trial_ended(self) -> None:
        """A trial of this run ended: record the seconds so far."""
        self.trials_ended += 1
        self.save()

    def finish(self) -> float:
        """The seconds to record as the search's: every run's up to now when a trial ended
        in this one; else the earlier runs' alone, so that the same command run again over
        a finished search records what it did (submit's saved plan is keyed on them, and a
        new plan would retime the networks and could retrain the saved fold models)."""
        if not self.trials_ended:
            return round(self.before, 1)
        return self.save()
