"""Choosing the ensemble from a search's trials, on the search's hold-out.

src.tune calls ensemble_from_search once the search ends. The ensemble is
chosen by greedy forward selection: first the costliest network that the best
trial does not beat significantly (first_member), then each network whose
joining lowers the log-loss of the members' plain mean by at least
MIN_ENSEMBLE_GAIN, so a near-copy of a member does not join. src.search_results
writes the choice into best_hparams.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras_tuner as kt
import numpy as np
from scipy.stats import ttest_rel
from sklearn.metrics import log_loss

from src.data import NUM_CLASSES
from src.errors import DataError
from src.model import build_cnn, clear_session, hparams_from_dict, multiply_adds
from src.search_results import TOP_SAVED, top_configurations

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
