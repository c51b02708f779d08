"""The evaluation's numbers: metrics.json's content, computed from out-of-fold (OOF)
probabilities, so that every figure is an honest cross-validated estimate.

src.report writes them with their text and src.figures draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import classification_report, confusion_matrix

from src.csv_files import NUM_CLASSES

DIGITS = list(range(NUM_CLASSES))
ENSEMBLE = "ensemble"  # the ensemble's key in the metrics, beside each configuration's
MOST_CONFUSED_PAIRS = 10


@dataclass
class ReportInputs:
    """Everything the report shows; gathered by src.submit."""

    y_true: np.ndarray  # (N,) int labels of the training set (OOF order)
    images: np.ndarray  # (N, 28, 28, 1) uint8 training images, same order
    model_probs: dict[str, np.ndarray]  # OOF class probabilities (N, 10) per configuration
    ensemble_probs: np.ndarray  # (N, 10) OOF probabilities of the ensemble
    ensemble_weights: dict[str, float]  # weight of each configuration in the ensemble
    histories: list[dict]  # {"model": "rank1", "fold": 0, "history": {"accuracy": [...], ...}}
    timings: dict[str, float]  # seconds per step, e.g. {"load": 1.2, ..., "total": 310.0}
    run_info: dict  # command, profile, seed, folds, source, versions, hparams, TTA
    leaderboard: pd.DataFrame | None = None  # the tuner's trials.csv, best first
    search_holdout: np.ndarray | None = None  # (N,) bool: the search chose the members on it
    holdout_true: np.ndarray | None = None  # --source keras: labels of MNIST's 10k test set
    holdout_probs: np.ndarray | None = None  # ensemble probabilities on that test set
    test_predictions: np.ndarray | None = None  # (M,) predicted labels of the unlabelled test set
    plan: dict | None = None  # --minutes: src.budget.Budget.record(), the plan and its stages


def accuracy_interval(correct: int, total: int,
                      confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of correct/total (scipy's binomtest)."""
    if total <= 0:
        raise ValueError(f"an accuracy interval needs at least one image, got total={total}")
    interval = binomtest(correct, total).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def _check_inputs(inputs: ReportInputs) -> None:
    """Raise ValueError when the arrays disagree in length or shape (a caller's bug)."""
    size = len(inputs.y_true)
    arrays = {"images": inputs.images, "ensemble_probs": inputs.ensemble_probs,
              **{f"model_probs[{name!r}]": probs for name, probs in inputs.model_probs.items()}}
    for name, array in arrays.items():
        if len(array) != size:
            raise ValueError(f"report: {name} has {len(array)} rows, y_true has {size}")
        if name != "images" and array.shape[1:] != (NUM_CLASSES,):
            raise ValueError(f"report: {name} has shape {array.shape}, expected ({size}, 10)")
    if (inputs.holdout_true is None) != (inputs.holdout_probs is None):
        raise ValueError("report: holdout_true and holdout_probs come together or not at all")
    if inputs.holdout_true is not None and len(inputs.holdout_true) != len(inputs.holdout_probs):
        raise ValueError(f"report: holdout_probs has {len(inputs.holdout_probs)} rows, "
                         f"holdout_true has {len(inputs.holdout_true)}")


def score(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, its 95% interval and the error count of argmax predictions."""
    total = len(y_true)
    correct = int(np.sum(probs.argmax(axis=1) == y_true))
    low, high = accuracy_interval(correct, total)
    return {"accuracy": correct / total, "ci95_low": low, "ci95_high": high,
            "errors": total - correct, "total": total}


def _classification_report(y_true: np.ndarray, predicted: np.ndarray) -> dict:
    return classification_report(y_true, predicted, labels=DIGITS, output_dict=True,
                                 zero_division=0)


def _most_confused(matrix: np.ndarray, limit: int = MOST_CONFUSED_PAIRS) -> list[dict]:
    """The largest off-diagonal cells of a confusion matrix, biggest first."""
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:limit]
    pairs = [np.unravel_index(flat, errors.shape) for flat in order]
    return [{"true": int(true), "predicted": int(predicted), "count": int(errors[true, predicted])}
            for true, predicted in pairs if errors[true, predicted] > 0]


def as_json_types(value: object) -> object:
    """``value`` as plain JSON types: numpy scalars and arrays, paths, tuples converted;
    NaN and infinity become None (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(key): as_json_types(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [as_json_types(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def build_metrics(inputs: ReportInputs) -> dict:
    """metrics.json content: per configuration and for the ensemble, OOF accuracy with its 95%
    interval and error count, the ensemble's also without the images the search chose the
    members on; the ensemble's per-digit classification report, confusion matrix
    and most confused pairs; holdout scores when given; timings; run_info; ensemble weights."""
    _check_inputs(inputs)
    y_true = np.asarray(inputs.y_true)
    predicted = inputs.ensemble_probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, predicted, labels=DIGITS)
    holdout = None
    if inputs.holdout_true is not None:
        holdout_predicted = inputs.holdout_probs.argmax(axis=1)
        holdout = {**score(inputs.holdout_true, inputs.holdout_probs),
                   "classification_report": _classification_report(inputs.holdout_true,
                                                                    holdout_predicted),
                   "confusion_matrix": confusion_matrix(inputs.holdout_true, holdout_predicted,
                                                        labels=DIGITS)}
    outside_search = None  # the OOF of the images that had no say in choosing the members
    outside = None if inputs.search_holdout is None else ~np.asarray(inputs.search_holdout)
    if outside is not None and outside.any() and not outside.all():  # else: the headline
        outside_search = {**score(y_true[outside], inputs.ensemble_probs[outside]),
                          "left_out": int(len(y_true) - outside.sum())}
    test_counts = None
    if inputs.test_predictions is not None:
        test_counts = np.bincount(inputs.test_predictions, minlength=NUM_CLASSES)
    return as_json_types({
        "num_images": len(y_true),
        "models": {name: score(y_true, probs) for name, probs in inputs.model_probs.items()},
        ENSEMBLE: score(y_true, inputs.ensemble_probs),
        "ensemble_outside_search_holdout": outside_search,
        "ensemble_weights": inputs.ensemble_weights,
        "classification_report": _classification_report(y_true, predicted),
        "confusion_matrix": matrix,
        "most_confused": _most_confused(matrix),
        "holdout": holdout,
        "test_predicted_counts": test_counts,
        "timings": inputs.timings,
        "plan": inputs.plan,
        "run_info": inputs.run_info,
    })


def plain_mean(probs: dict[str, np.ndarray]) -> np.ndarray:
    """The members' probabilities averaged with equal weights.

    Weights fitted on OOF log-loss lost to the plain mean in every measured
    ensemble (README): they favoured the better-calibrated member, not the
    more accurate one, and fitting them on the folds they score flatters them.
    """
    return np.mean(list(probs.values()), axis=0)
