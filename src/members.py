"""The networks an ensemble trains: the search's chosen configurations, read back from
best_hparams.json and checked against the search space, or the default CNN."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from src import model as cnn
from src.config import Config
from src.csv_files import NUM_CLASSES
from src.errors import DataError
from src.search_results import best_hparams_path, hparams_outside_space
from src.util import is_count, one_line, read_json


@dataclass
class Member:
    """One configuration of the ensemble: its name, hyperparameters, where they came from
    (origin, for people) and what kind of member it is (kind, for code)."""

    name: str
    hparams: dict
    origin: str  # e.g. "tuner (val_accuracy 0.9912)", "default (--include-default)"
    kind: str  # "search" (the search chose it), "default" (the default CNN) or "fidelity"


def load_members(config: Config) -> list[Member]:
    """The first top-k configurations of the ensemble the search chose (a file from before
    it chose one: its top-k ranks), plus the default CNN with --include-default; without
    a search, the default CNN and a warning."""
    path = best_hparams_path(config)
    if not path.is_file():
        warnings.warn(f"no search results at {path}: using the default CNN "
                      "(run `python -m src.tune` first for tuned configurations)", stacklevel=2)
        return [Member("default", dict(cnn.DEFAULT_HPARAMS), "default", "default")]
    try:
        saved = read_json(path)
        chosen = saved["ensemble"] if "ensemble" in saved else saved["top"]
        members = [Member(f"rank{entry['rank']}", {**cnn.DEFAULT_HPARAMS, **entry["hparams"]},
                          f"tuner (val_accuracy {entry['val_accuracy']:.4f})", "search")
                   for entry in chosen[:config.top_k]]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError("the JSON written by python -m src.tune", one_line(error), file=path,
                        hint="rerun python -m src.tune") from None
    if not members:
        raise DataError("at least one configuration", "none", file=path)
    seen = set()
    for entry in chosen[:config.top_k]:  # a rank names its member's fold-model folder
        if not is_count(entry["rank"], 1):
            raise DataError("a rank, an integer >= 1", repr(entry["rank"]), file=path,
                            column="rank")
        if entry["rank"] in seen:  # two members of one name would be summed as one
            raise DataError("a different rank for each configuration",
                            f"rank {entry['rank']} twice", file=path, column="rank")
        seen.add(entry["rank"])
    for member in members:
        outside = hparams_outside_space(member.hparams)
        if outside:
            name, expected, found = outside
            raise DataError(expected, found, file=path, column=f"{member.name}: {name}",
                            hint="rerun python -m src.tune, or edit it back")
    if config.include_default and cnn.DEFAULT_HPARAMS not in [m.hparams for m in members]:
        members.append(Member("default", dict(cnn.DEFAULT_HPARAMS), "default (--include-default)",
                              "default"))
    return members


def most_sure(members: list[Member]) -> float:
    """The highest probability the members are trained towards: label smoothing s makes a
    member's target for the digit 1 - s + s / 10, so it ends about that sure of its best."""
    return max(1 - m.hparams["label_smoothing"] * (NUM_CLASSES - 1) / NUM_CLASSES
               for m in members)


def check_pseudo_threshold(members: list[Member], threshold: float) -> None:
    """DataError when --pseudo-threshold asks more confidence than the members reach: the
    round would find (almost) no test image that sure and train on nothing new."""
    ceiling = most_sure(members)
    if threshold > ceiling + 1e-9:
        smoothing = min(m.hparams["label_smoothing"] for m in members)
        raise DataError(f"a confidence up to {ceiling:.4g}, the most the members are trained "
                        f"towards (label smoothing {smoothing:g})", f"{threshold:g}",
                        column="--pseudo-threshold")
