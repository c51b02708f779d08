"""What a search found: its trials ranked, the ensemble chosen from them, and the files
python -m src.submit reads (``best_hparams.json``, ``trials.csv``).

src.tune runs the search and calls these once it ends. The ensemble is chosen
by greedy forward selection on the search's hold-out: first the costliest
network that the best trial does not beat significantly (first_member), then
each network whose joining lowers the log-loss of the members' plain mean by at
least MIN_ENSEMBLE_GAIN, so a near-copy of a member does not join.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pandas as pd
from scipy.stats import ttest_rel
from sklearn.metrics import log_loss

from src.config import Config
from src.csv_files import read_csv_checked
from src.data import NUM_CLASSES
from src.errors import DataError
from src.model import (
    build_cnn,
    clear_session,
    define_search_space,
    hparams_from_dict,
    multiply_adds,
)
from src.util import is_count, is_number, read_json, write_atomically

# The search minimises each trial's hold-out log-loss: on 2,400 hold-out images the
# accuracy of good networks differs by a few images, and the log-loss, which counts how
# sure each answer was, ranked six networks as full training did better (Spearman 0.77
# and 0.83 on two draws of the quick search's images, against 0.58 and 0.62; README).
OBJECTIVE = "val_log_loss"
COMPLETED = kt.engine.trial.TrialStatus.COMPLETED
TOP_SAVED = 10
# A network joins the chosen ensemble only if it lowers the hold-out log-loss of the
# members' plain mean by at least this share: a near-copy of a member does not.
MIN_ENSEMBLE_GAIN = 0.02
# Short trials favour networks that learn fast over networks that end better: each cheaper
# network the search put first that was then trained at full length ended behind the
# default CNN, which it had led on the hold-out by one or two standard errors (README).
# So the ensemble starts from the costliest network that the best trial does not beat at
# this significance (a paired one-sided t-test of their per-image hold-out log-losses).
TIE_P_VALUE = 0.05
HOLDOUT_PROBS = "holdout_probs.npy"  # in each trial's folder: its last epoch's probabilities
HOLDOUT_ROWS = "holdout_rows"  # in best_hparams.json: the labelled rows the search scored on
LEADERBOARD_ROWS = 10


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


def rank_trials(oracle: kt.Oracle, names: Sequence[str]) -> list[dict]:
    """Every trial of the oracle, best (lowest hold-out log-loss) first (ties: fewer
    parameters); unfinished ones last."""
    rows = []
    for trial in oracle.trials.values():
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
    rows.sort(key=lambda row: (row[OBJECTIVE] is None, row[OBJECTIVE] or 0,
                               row["params"] or 0, row["trial_id"]))
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
    """The best trial of each distinct configuration (Hyperband trains one in several trials),
    keeping its rank on the leaderboard (trials.csv), so member rank3 is trials.csv's rank 3."""
    top, seen = [], set()
    for row in rows:
        key = json.dumps(row["hparams"], sort_keys=True)
        if row["status"] == COMPLETED and key not in seen and len(top) < count:
            seen.add(key)
            top.append(dict(row))
    for row in top:
        del row["status"]
    return top


def holdout_log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """The log-loss of class probabilities on labels y (rows renormalised: float32 sums
    drift from 1)."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(log_loss(y, probs / probs.sum(axis=1, keepdims=True),
                          labels=list(range(NUM_CLASSES))))


def per_image_log_loss(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each image's log-loss, -log p(true digit), under holdout_log_loss's clipping."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    eps = np.finfo(probs.dtype).eps
    return -np.log(np.clip(probs[np.arange(len(y)), y], eps, 1 - eps))


def tie_p_values(candidates: Sequence[np.ndarray], y: np.ndarray) -> list[float]:
    """For each candidate, the p-value of candidates[0] (the best) having the lower mean
    per-image log-loss on y (paired, one-sided); 1.0 for the best itself."""
    best = per_image_log_loss(candidates[0], y)
    p_values = [1.0]
    for probs in candidates[1:]:
        other = per_image_log_loss(probs, y)
        same = np.allclose(best, other)
        p_values.append(1.0 if same else float(ttest_rel(best, other, alternative="less").pvalue))
    return p_values


def first_member(p_values: Sequence[float], costs: Sequence[float],
                 tie_p: float = TIE_P_VALUE) -> int:
    """The index of the costliest candidate whose p-value (tie_p_values) is at least tie_p,
    the best (index 0) included; among equal costs, the earliest (the better ranked)."""
    tied = [index for index, p in enumerate(p_values) if index == 0 or p >= tie_p]
    return max(tied, key=lambda index: (costs[index], -index))


def choose_ensemble(candidates: Sequence[np.ndarray], y: np.ndarray, first: int = 0,
                    most: int = TOP_SAVED,
                    min_gain: float = MIN_ENSEMBLE_GAIN) -> list[tuple[int, float]]:
    """Greedy forward selection on the hold-out labels y: candidates[first] first; then,
    up to `most` members, the candidate whose joining lowers the log-loss of the members'
    plain mean the most, while it lowers it by at least min_gain of it. Returns (candidate
    index, log-loss once it joined) per member, in joining order."""
    chosen = [(first, holdout_log_loss(candidates[first], y))]
    while len(chosen) < most:
        members = [candidates[index] for index, _ in chosen]
        losses = {index: holdout_log_loss(np.mean([*members, probs], axis=0), y)
                  for index, probs in enumerate(candidates) if index not in dict(chosen)}
        if not losses:
            break
        best = min(losses, key=losses.get)
        current = chosen[-1][1]
        if current - losses[best] < min_gain * current:
            break
        chosen.append((best, losses[best]))
    return chosen


def read_holdout_probs(path: Path, val_images: int) -> np.ndarray:
    """A trial's saved hold-out probabilities; DataError naming the file when unreadable."""
    try:
        probs = np.load(path)
    except (OSError, ValueError, EOFError) as error:
        raise DataError("the hold-out probabilities a trial saves", type(error).__name__,
                        file=path, hint="rerun with --overwrite") from None
    if probs.shape != (val_images, NUM_CLASSES):
        raise DataError(f"an array of shape ({val_images}, {NUM_CLASSES})", str(probs.shape),
                        file=path, hint="rerun with --overwrite")
    if probs.dtype.kind not in "fiu" or not (np.isfinite(probs).all() and (probs >= 0).all()
                                             and (probs.sum(axis=1) > 0).all()):
        raise DataError("class probabilities: finite numbers >= 0, every row above 0",
                        f"an array of {probs.dtype} holding other values", file=path,
                        hint="rerun with --overwrite")
    return probs


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
    images than these (another file, --train-samples)."""
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


def network_cost(hparams: dict) -> int:
    """Multiply-adds per image of the network a trial's hyperparameters build."""
    cost = multiply_adds(build_cnn(hparams_from_dict(hparams)))
    clear_session()
    return cost


def ensemble_from_search(tuner: kt.Tuner, rows: list[dict], y_val: np.ndarray) -> list[dict]:
    """The members choose_ensemble picks from the best trial of each configuration,
    starting from first_member, as top_configurations' entries plus the hold-out log-loss
    once each joined, its relative gain (None for the first), its multiply-adds per image
    and, for the first, the p-value of the best trial beating it (tie_p_value)."""
    candidates, probs = [], []
    for entry in top_configurations(rows, len(rows)):
        path = Path(tuner.get_trial_dir(entry["trial_id"])) / HOLDOUT_PROBS
        if path.is_file():  # every trial that completed saved one, unless it was removed
            candidates.append(entry)
            probs.append(read_holdout_probs(path, len(y_val)))
    if not candidates or candidates[0]["rank"] != 1:
        return []  # without the best trial's probabilities, submit takes the top ranks
    p_values = tie_p_values(probs, y_val)
    costs = {index: network_cost(candidates[index]["hparams"])
             for index, p in enumerate(p_values) if p >= TIE_P_VALUE}  # the best's p is 1
    first = first_member(p_values, [costs.get(index, 0) for index in range(len(probs))])
    chosen, before = [], None
    for index, loss in choose_ensemble(probs, y_val, first=first):
        gain = None if before is None else round((before - loss) / before, 4)
        entry = {**candidates[index], "holdout_log_loss": round(loss, 5), "log_loss_gain": gain,
                 "multiply_adds": costs.get(index) or network_cost(candidates[index]["hparams"])}
        if before is None:
            entry["tie_p_value"] = round(p_values[index], 4)
        chosen.append(entry)
        before = loss
    return chosen


def describe_ensemble(chosen: list[dict]) -> str:
    """The chosen ensemble as the lines printed after the leaderboard."""
    if not chosen:
        return "no trial left its hold-out probabilities: python -m src.submit takes the top ranks"
    lines = [f"Ensemble chosen on the hold-out (the costliest network the best trial does not "
             f"beat at p < {TIE_P_VALUE:g}, then each network that lowers the log-loss of the "
             f"plain mean by at least {MIN_ENSEMBLE_GAIN:.0%}):"]
    for entry in chosen:
        gain = entry["log_loss_gain"]
        if gain is None and entry["rank"] != 1:
            how = f", tied with rank 1 (p = {entry['tie_p_value']:.2f})"
        else:
            how = "" if gain is None else f", {gain:.1%} lower"
        lines.append(f"  rank {entry['rank']} (trial {entry['trial_id']}): log-loss "
                     f"{entry['holdout_log_loss']:.4f}, "
                     f"{entry['multiply_adds'] / 1e6:.1f}M multiply-adds an image{how}")
    return "\n".join(lines)


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
    write_atomically(best_hparams_path(config), text + "\n")
    write_atomically(trials_path(config), trials_table(rows).to_csv(index=False))


def read_trials(path: Path, as_text: bool = False) -> pd.DataFrame:
    """A search's trials.csv: trial ids as text and the rest as pandas infers it, or with
    as_text every cell as text and every line a row (blank ones too, so that data row i
    is line i + 2); anything unreadable is a DataError naming the file and line."""
    expected = "a trials.csv written by python -m src.tune"
    if not path.is_file():
        raise DataError(expected, "no such file", file=path, hint="run python -m src.tune first")
    options = (dict(dtype=str, na_filter=False, skip_blank_lines=False) if as_text
               else dict(dtype={"trial_id": str}))
    return read_csv_checked(path, None, expected, **options)
