"""A plan as a file: the Plan record, its JSON and the checks a saved one must pass,
and where python -m src.tune and python -m src.submit keep their plans.

src.plan makes a Plan; src.budget saves it under ``<artifacts>/plans/`` keyed by
the run's settings (plan_path) and reloads it on a rerun; src.search_plan saves
the search's choice there the same way. Each file is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from src.calibrate import Speed
from src.config import Config
from src.errors import DataError
from src.util import is_count, is_number, one_line, read_json, write_atomically, writing

# The flags a plan chooses; when given they are kept, and they key the saved plan.
PLANNED_FLAGS = ("folds", "repeats", "epochs", "top_k", "include_default", "tta",
                 "pseudo_threshold", "pseudo_epochs", "tune_epochs", "tune_samples", "max_trials",
                 "tuner", "trial_seconds")


@dataclass(frozen=True)
class Sizes:
    """The labelled images a run trains on and the test images it predicts."""

    train: int
    test: int


def _need(holds: bool, what: str) -> None:
    """TypeError(what) unless holds: a saved plan's field is not what to_json writes."""
    if not holds:
        raise TypeError(what)


@dataclass
class Plan:
    """What a budget buys, what each stage should take, and the decisions taken at stage
    boundaries (saved with it, so that a rerun keeps them)."""

    minutes: float  # the budget of tune and submit together
    seconds: float  # this command's part: the budget less what the search spent
    search_seconds: float
    row: float  # the PLAN_TABLE row's from_minutes
    members: list[str]
    folds: int
    epochs: int
    tta: bool
    pseudo_threshold: float
    pseudo_epochs: int  # as planned; decided again after the first round
    jobs: int
    sizes: Sizes
    speeds: dict[str, Speed]  # per candidate network, in the candidates' order
    stages: dict[str, float]  # planned seconds per stage, in order
    given: list[str]
    decisions: dict[str, object] = field(default_factory=dict)
    repeats: int = 1  # last, with a default: plans saved before repeats existed still load

    def to_json(self) -> str:
        """The plan as JSON, for <artifacts>/plans/."""
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: object) -> Plan:
        """The plan of to_json's values, read back; TypeError for values of other shapes."""
        mappings = ("sizes", "speeds", "stages", "decisions")
        if not isinstance(values, dict) or not all(isinstance(values.get(name, {}), dict)
                                                   for name in mappings):
            raise TypeError(f"a plan's {', '.join(mappings)} are JSON objects")
        values["sizes"] = Sizes(**values["sizes"])
        values["speeds"] = {name: Speed(**speed) for name, speed in values["speeds"].items()}
        return cls(**values).checked()

    def checked(self) -> Plan:
        """The plan, if every field holds what to_json writes; else TypeError naming the
        first that does not (a hand-edited plan would fail later, inside the run)."""
        for name in ("minutes", "seconds", "search_seconds", "row"):
            _need(is_number(getattr(self, name), 0), f"{name}: a number >= 0")
        _need(is_number(self.pseudo_threshold, 0) and self.pseudo_threshold < 1,
              "pseudo_threshold: a confidence 0 <= p < 1")
        _need(is_count(self.folds, 2), "folds: an integer >= 2")
        for name in ("epochs", "repeats"):
            _need(is_count(getattr(self, name), 1), f"{name}: an integer >= 1")
        for name in ("pseudo_epochs", "jobs"):
            _need(is_count(getattr(self, name)), f"{name}: an integer >= 0")
        _need(type(self.tta) is bool, "tta: true or false")
        _need(is_count(self.sizes.train, 1), "sizes.train: an integer >= 1")
        _need(is_count(self.sizes.test), "sizes.test: an integer >= 0")
        for name, speed in self.speeds.items():
            _need(is_number(speed.train_images_per_second, 1e-9)
                  and is_number(speed.predict_images_per_second, 1e-9),
                  f"speeds.{name}: images per second > 0")
            _need(is_number(speed.startup_seconds, 0), f"speeds.{name}: startup seconds >= 0")
        _need(isinstance(self.members, list) and len(self.members) > 0
              and all(isinstance(name, str) and name in self.speeds for name in self.members)
              and len(set(self.members)) == len(self.members),
              "members: names of speeds, each once")
        _need(isinstance(self.given, list) and all(isinstance(flag, str) for flag in self.given),
              "given: a list of names")
        for stage, seconds in self.stages.items():
            _need(is_number(seconds, 0), f"stages.{stage}: seconds >= 0")
        for key, value in self.decisions.items():  # Budget's: "tta, ..." or epochs
            if key.startswith("tta, "):
                _need(type(value) is bool, f"decisions.{key}: true or false")
            else:
                _need(is_count(value), f"decisions.{key}: an integer >= 0")
        return self

    def member_speeds(self) -> list[Speed]:
        """The speeds of the networks this plan trains."""
        return [self.speeds[name] for name in self.members]

    def eta(self) -> float:
        """Planned seconds from this command's start to its end."""
        return sum(self.stages.values())


def plan_path(config: Config, command: str, settings: dict) -> Path:
    """Where a command's plan for these settings is saved: <artifacts>/plans/<command>-<key>."""
    # float: a profile's budget (30) and the same one given (--minutes 30: 30.0) share a plan
    keyed = {"minutes": float(config.minutes), "seed": config.seed, "source": config.source,
             "train_samples": config.train_samples, "batch_size": config.batch_size,
             "precision": config.precision, **settings,
             "given": {name: getattr(config, name)
                       for name in sorted(config.flags_given & set(PLANNED_FLAGS))}}
    digest = hashlib.sha1(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()
    return Path(config.artifacts_dir) / "plans" / f"{command}-{digest[:12]}.json"


def save_plan(path: Path, text: str) -> None:
    """Write a plan file atomically, its folder made if need be."""
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)


def load_plan(path: Path) -> Plan:
    """The plan saved at path; a DataError naming it when it is not what to_json writes."""
    try:
        return Plan.from_dict(read_json(path))
    except (ValueError, KeyError, TypeError) as error:
        raise DataError("a plan written by python -m src.submit", one_line(error), file=path,
                        hint="delete it or rerun with --fresh") from None
