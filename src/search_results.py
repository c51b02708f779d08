"""What a search found: its trials ranked, and the files python -m src.submit reads
(``best_hparams.json``, ``trials.csv``), with the ensemble src.search_ensemble chose.

src.tune runs the search and calls these once it ends.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pandas as pd

from src.config import Config
from src.csv_text import open_text, read_csv_checked
from src.errors import DataError
from src.model import define_search_space
from src.util import LEADERBOARD_ROWS, is_count, is_number, read_json, write_all_atomically

# The search minimises each trial's hold-out log-loss: on 2,400 hold-out images the
# accuracy of good networks differs by a few images, and the log-loss, which counts how
# sure each answer was, ranked six networks as full training did better (Spearman 0.77
# and 0.83 on two draws of the quick search's images, against 0.58 and 0.62; README).
OBJECTIVE = "val_log_loss"
COMPLETED = kt.engine.trial.TrialStatus.COMPLETED
TOP_SAVED = 10
HOLDOUT_ROWS = "holdout_rows"  # in best_hparams.json: the labelled rows the search scored on


def tune_dir(config: Config) -> Path:
    """<artifacts>/tune: the search's folder, holding the tuner's project folders,
    best_hparams.json and trials.csv."""
    return Path(config.artifacts_dir) / "tune"


def best_hparams_path(config: Config) -> Path:
    """Where python -m src.tune leaves its top configurations and the ensemble it chose."""
    return tune_dir(config) / "best_hparams.json"


def trials_path(config: Config) -> Path:
    """Where python -m src.tune leaves every trial, best first."""
    return tune_dir(config) / "trials.csv"


def _tidy(value: object) -> object:
    """A hyperparameter value as written: 0.3, not KerasTuner's 0.30000000000000004."""
    return round(value, 10) if isinstance(value, float) else value


def _metric(trial: kt.engine.trial.Trial, name: str) -> float | None:
    """The value a finished trial reported for name; None when it reported none."""
    if trial.status != COMPLETED or not trial.metrics.exists(name):
        return None
    return float(trial.metrics.get_last_value(name))


def network_values(values: dict) -> dict:
    """A configuration's values that shape the network it trains: the filters of blocks
    it does not have are left out (two configurations that differ only there train the
    same network), and so are Hyperband's bookkeeping values (tuner/...)."""
    blocks = values.get("conv_blocks", 0)
    return {name: value for name, value in values.items()
            if not name.startswith("tuner/")
            and not (name.startswith("filters_") and int(name.split("_")[1]) >= blocks)}


def rank_trials(oracle: kt.Oracle, names: Sequence[str]) -> list[dict]:
    """Every trial of the oracle, best (lowest hold-out log-loss) first (ties: fewer
    parameters); unfinished ones last. Hyperband's trials of the last rung come before
    those of shorter rungs: log-losses are compared at equal epochs."""
    rows, rungs = [], {}
    for trial in oracle.trials.values():
        rungs[trial.trial_id] = trial.hyperparameters.values.get("tuner/epochs", 0)
        done = trial.status == COMPLETED
        rows.append({
            "rank": None, "trial_id": trial.trial_id, "status": trial.status,
            OBJECTIVE: float(trial.score) if done else None,
            "val_accuracy": _metric(trial, "val_accuracy"),
            "val_loss": _metric(trial, "val_loss"),
            "params": int(trial.metrics.get_last_value("params")) if done else None,
            "epochs": int(trial.metrics.get_last_value("epochs")) if done else None,
            "seconds": _metric(trial, "seconds"),
            "images_per_second": _metric(trial, "images_per_second"),
            "hparams": {name: _tidy(trial.hyperparameters.values.get(name)) for name in names}})
    rows.sort(key=lambda row: (row[OBJECTIVE] is None, -rungs[row["trial_id"]],
                               row[OBJECTIVE] or 0, row["params"] or 0, row["trial_id"]))
    for rank, row in enumerate((row for row in rows if row["status"] == COMPLETED), start=1):
        row["rank"] = rank
        outside = hparams_outside_space({name: value for name, value in row["hparams"].items()
                                         if value is not None})  # None: not in this space
        if outside:  # the ensemble prices and builds these: a hand-edited trial.json
            name, expected, found = outside
            raise ValueError(f"trial {row['trial_id']}: {name}: expected {expected}, "
                             f"found {found}")
    return rows


def top_configurations(rows: list[dict], count: int) -> list[dict]:
    """The best trial of each distinct network (Hyperband trains one in several trials; two
    configurations that differ only in the filters of blocks they lack train the same one),
    keeping its rank on the leaderboard (trials.csv), so member rank3 is trials.csv's rank 3."""
    top, seen = [], set()
    for row in rows:
        key = json.dumps(network_values(row["hparams"]), sort_keys=True)
        if row["status"] == COMPLETED and key not in seen and len(top) < count:
            seen.add(key)
            top.append(dict(row))
    for row in top:
        del row["status"]
    return top


def search_space_names() -> list[str]:
    """The names of every hyperparameter of the CNN, in the order the search space declares them."""
    hp = kt.HyperParameters()
    define_search_space(hp)
    return list(hp.values)


def hparams_outside_space(values: dict[str, object]) -> tuple[str, str, str] | None:
    """The first (name, expected, found) of values that the wide search space cannot hold
    (a hand-edited best_hparams.json): an unknown name, a value of the wrong type, or one
    outside its range or choices; None when they all fit. A range's value need not lie on
    its step (the default CNN's dropout 0.25 does not)."""
    hp = kt.HyperParameters()
    define_search_space(hp, wide=True)
    space = {param.name: param for param in hp.space}
    for name, value in values.items():
        if name not in space:
            return name, f"one of {', '.join(space)}", f"an unknown name {name!r}"
        param, number = space[name], is_number(value)  # a JSON int past a float is none
        if isinstance(param, (kt.engine.hyperparameters.Int, kt.engine.hyperparameters.Float)):
            integer = isinstance(param, kt.engine.hyperparameters.Int)
            fits = (type(value) is int if integer else number) and (
                param.min_value - 1e-9 <= value <= param.max_value + 1e-9)
            expected = (f"{'an integer' if integer else 'a number'} from {param.min_value:g} "
                        f"to {param.max_value:g}")
        elif name == "label_smoothing":  # a share of the target, not a free number
            fits, expected = number and 0 <= value < 1, "a number from 0 to below 1"
        elif isinstance(param, kt.engine.hyperparameters.Fixed):
            fits, expected = number, "a finite number"
        else:  # a Choice or a Boolean: one of its values, a float within rounding
            fits = any(type(value) is type(choice) and value == choice
                       or type(choice) is float and number and math.isclose(value, choice)
                       for choice in param.values)
            expected = f"one of {', '.join(map(repr, param.values))}"
        if not fits:
            return name, expected, repr(value)
    return None


def read_holdout_rows(config: Config, labelled_fingerprint: str) -> np.ndarray | None:
    """The labelled images' rows that the search scored its trials on and chose the
    ensemble on, from best_hparams.json; None without a search, or when it searched other
    labelled images than these (another train.csv)."""
    path = best_hparams_path(config)
    try:
        saved = read_json(path)
        if saved["data"]["labelled_fingerprint"] != labelled_fingerprint:
            return None
        rows = saved[HOLDOUT_ROWS]
    except (OSError, ValueError, KeyError, TypeError):  # none, or one from before it was kept
        return None
    if not (isinstance(rows, list) and rows and all(is_count(row) for row in rows)):
        # hand-edited: floats were cut to integers, and the hold-out-free score went wrong
        raise DataError("a list of row numbers (integers >= 0)", json.dumps(rows)[:80],
                        file=path, column=HOLDOUT_ROWS, hint="rerun python -m src.tune")
    return np.asarray(rows, dtype=np.int64)


def trials_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as one flat table: trial columns, then one column per hyperparameter."""
    return pd.DataFrame([{**{k: v for k, v in row.items() if k != "hparams"}, **row["hparams"]}
                         for row in rows])


def leaderboard(rows: list[dict]) -> str:
    """The best trials as a text table with their key hyperparameters."""
    lines = []
    for row in rows[:LEADERBOARD_ROWS]:
        hp = row["hparams"]
        done = row["status"] == COMPLETED
        lines.append({
            "rank": row["rank"] or "-", "trial": row["trial_id"],
            "log_loss": f"{row[OBJECTIVE]:.4f}" if done else row["status"].lower(),
            "val_accuracy": f"{row['val_accuracy']:.4f}" if done else "",
            "params": f"{row['params']:,}" if done else "", "epochs": row["epochs"] or "",
            "seconds": f"{row['seconds']:.0f}" if row["seconds"] is not None else "",
            "filters": "-".join(str(hp[f"filters_{i}"]) for i in range(hp["conv_blocks"])),
            "convs": hp["block_convs"], "first_kernel": hp["first_kernel"],
            "batch_norm": "yes" if hp["batch_norm"] else "no",
            "dropout": f"{hp['conv_dropout']:g}/{hp['dropout']:g}",
            "dense": hp["dense_units"], "lr": f"{hp['learning_rate']:g}",
            "augment": f"{hp['augment']:.2f}"})
    return pd.DataFrame(lines).to_string(index=False)


def write_results(config: Config, tuner: kt.Tuner, rows: list[dict], summary: dict,
                  chosen: list[dict], search_budget: dict | None = None) -> None:
    """Write <artifacts>/tune/best_hparams.json and trials.csv from the ranked trials and the
    chosen ensemble (its key left out when empty); with --minutes, search_budget holds the
    search's plan and the seconds it spent, of which python -m src.submit with the same
    budget plans the rest."""
    data = {name: value for name, value in summary.items() if name != HOLDOUT_ROWS}
    best = {"tuner": config.tuner, "objective": OBJECTIVE, "profile": config.profile,
            "seed": config.seed, "project": tuner.project_dir, "data": data,
            "budget": search_budget, "top": top_configurations(rows, TOP_SAVED)}
    if chosen:
        best["ensemble"] = chosen
    text = json.dumps(best, indent=2)
    if summary.get(HOLDOUT_ROWS) is not None:  # last, and on one line: a long list of numbers
        text = f'{text[:-2]},\n  "{HOLDOUT_ROWS}": {json.dumps(summary[HOLDOUT_ROWS])}\n}}'
    # Together: submit reads the leaderboard in trials.csv beside the picks in the .json.
    write_all_atomically({best_hparams_path(config): text + "\n",
                          trials_path(config): trials_table(rows).to_csv(index=False)})


def read_trials(path: Path, as_text: bool = False) -> pd.DataFrame:
    """A search's trials.csv: trial ids as text and the rest as pandas infers it, or with
    as_text every cell as text and every line a row (blank ones too, so that data row i
    is line i + 2); anything unreadable is a DataError naming the file and line."""
    expected = "a trials.csv written by python -m src.tune"
    if not path.is_file():
        raise DataError(expected, "no such file", file=path, hint="run python -m src.tune first")
    options = (dict(dtype=str, na_filter=False, skip_blank_lines=False) if as_text
               else dict(dtype={"trial_id": str}))
    trials = read_csv_checked(path, None, expected, **options)
    _check_whole_rows(path, expected)
    return trials


def _check_whole_rows(path: Path, expected: str) -> None:
    """DataError for a trials.csv cut short: a header without a trial's columns, or a row
    with fewer values than the header (pandas fills the rest in as missing)."""
    with open_text(path) as handle:
        lines = list(csv.reader(handle))
    header = lines[0] if lines else []
    if missing := [name for name in ("rank", "trial_id", "status") if name not in header]:
        raise DataError(expected, f"no column {missing[0]!r}", file=path)
    for line, row in enumerate(lines[1:], start=2):
        if row and len(row) != len(header):
            raise DataError(f"{len(header)} values, as the header names", str(len(row)),
                            file=path, line=line, hint="a file cut short? rerun python -m "
                            "src.tune to write it again")
