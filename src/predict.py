"""Predicting with a fold model: its TTA views, and the check that what it predicts is finite."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from src import model as cnn
from src.errors import DataError

TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


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


def finite(probs: np.ndarray, model_path: Path) -> np.ndarray:
    """probs, once checked finite: a diverged model predicts NaN, and argmax would read
    each NaN row as the digit 0."""
    bad_rows = int((~np.isfinite(probs)).any(axis=1).sum())
    if bad_rows:
        raise DataError("finite class probabilities from a fold model",
                        f"NaN or infinite ones for {bad_rows} images (its training diverged)",
                        file=model_path,
                        hint="delete it, or rerun with --fresh (or --precision float32)")
    return probs
