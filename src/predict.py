"""Predicting with a fold model: its TTA views, and the check that what it predicts is finite."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from src import model as cnn
from src.errors import DataError

TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
# A softmax in float32, averaged over the TTA views, sums to 1 within rounding.
PROBABILITY_SUM_TOLERANCE = 1e-3


def shift_images(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Images moved dx pixels right and dy down, zero-filled."""
    shifted = np.zeros_like(x)
    height, width = x.shape[1:3]
    shifted[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        x[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return shifted


def predict_probs(model: keras.Model, x: np.ndarray, tta: bool) -> np.ndarray:
    """Class probabilities; with tta, the mean over the image and its four one-pixel shifts."""
    shifts = TTA_SHIFTS if tta else TTA_SHIFTS[:1]
    return np.mean([cnn.predict(model, shift_images(x, dx, dy)) for dx, dy in shifts], axis=0)


def checked_probs(probs: np.ndarray, model_path: Path) -> np.ndarray:
    """probs, once checked to be class probabilities: a diverged model predicts NaN (argmax
    would read each NaN row as the digit 0), and a foreign model saved under a fold model's
    name (no softmax) predicts numbers that are no probabilities at all."""
    bad_rows = int((~np.isfinite(probs)).any(axis=1).sum())
    if bad_rows:
        raise DataError("finite class probabilities from a fold model",
                        f"NaN or infinite ones for {bad_rows} images (its training diverged)",
                        file=model_path,
                        hint="delete it, or rerun with --fresh (or --precision float32)")
    off = (probs < 0).any(axis=1) | (probs > 1).any(axis=1) | (
        np.abs(probs.sum(axis=1) - 1) > PROBABILITY_SUM_TOLERANCE)
    if off.any():
        row = int(np.argmax(off))
        raise DataError("class probabilities 0..1 that sum to 1 from a fold model",
                        f"{probs[row].min():.4g}..{probs[row].max():.4g}, summing to "
                        f"{probs[row].sum():.4g}, for {int(off.sum())} images", file=model_path,
                        hint="is it a model of another program? delete it, or rerun with "
                        "--fresh")
    return probs
