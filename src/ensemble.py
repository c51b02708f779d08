"""Stratified k-fold training of the best configurations, out-of-fold scoring, averaging, TTA.

Every (configuration, fold) model is saved the moment it finishes, together
with its predictions, under ``<artifacts>/models/<key>/``; the key hashes
everything that shapes the model (hyperparameters, folds, seed, epochs, the
training data), so a rerun, after a kill too, skips finished folds and a
changed setting trains afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from src import model as cnn
from src import workers
from src.config import Config
from src.data import NUM_CLASSES, Digits
from src.errors import DataError
from src.util import partial_path, write_atomically, writing

TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


@dataclass
class Member:
    """One configuration of the ensemble: its name, hyperparameters and where they came from."""

    name: str
    hparams: dict
    origin: str  # "tuner (val_accuracy 0.9912)" or "default"


@dataclass
class KFoldResult:
    """Out-of-fold and test probabilities per member, plus each fold model's training history."""

    oof_probs: dict[str, np.ndarray] = field(default_factory=dict)
    test_probs: dict[str, np.ndarray] = field(default_factory=dict)
    histories: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    predict_seconds: float = 0.0
    trained: int = 0
    reused: int = 0


def best_hparams_path(config: Config) -> Path:
    """Where python -m src.tune leaves its top configurations."""
    return Path(config.artifacts_dir) / "tune" / "best_hparams.json"


def load_members(config: Config) -> list[Member]:
    """The tuner's top-k configurations, plus the default CNN with --include-default;
    without a search, the default CNN and a warning."""
    path = best_hparams_path(config)
    if not path.is_file():
        warnings.warn(f"no search results at {path}: using the default CNN "
                      "(run `python -m src.tune` first for tuned configurations)", stacklevel=2)
        return [Member("default", dict(cnn.DEFAULT_HPARAMS), "default")]
    try:
        top = json.loads(path.read_text())["top"]
        members = [Member(f"rank{entry['rank']}", {**cnn.DEFAULT_HPARAMS, **entry["hparams"]},
                          f"tuner (val_accuracy {entry['val_accuracy']:.4f})")
                   for entry in top[:config.top_k]]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError("the JSON written by python -m src.tune", f"{type(error).__name__}: "
                        f"{error}", file=path, hint="rerun python -m src.tune") from None
    if not members:
        raise DataError("at least one configuration", "none", file=path)
    if config.include_default and cnn.DEFAULT_HPARAMS not in [m.hparams for m in members]:
        members.append(Member("default", dict(cnn.DEFAULT_HPARAMS), "default (--include-default)"))
    return members


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """A short hash of the training images and labels."""
    digest = hashlib.sha1(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()[:12]


def member_key(member: Member, config: Config, fingerprint: str) -> str:
    """The cache key of a member's fold models: everything that changes what they learn."""
    recipe = dict(hparams=member.hparams, folds=config.folds, seed=config.seed,
                  epochs=config.epochs, batch_size=config.batch_size,
                  patience=config.patience, data=fingerprint,
                  precision=cnn.resolve_precision(config.precision))
    text = json.dumps(recipe, sort_keys=True, default=str)
    return f"{member.name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def fold_splits(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, held-out) index pairs, the same for every member."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


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


def _load_fold_model(path: Path) -> keras.Model:
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for a damaged file
        raise DataError("a Keras model saved by python -m src.submit",
                        f"an unreadable file ({type(error).__name__})", file=path,
                        hint="delete it or rerun with --fresh to retrain") from None
    if model.input_shape[1:] != cnn.IMAGE_SHAPE or model.output_shape[-1] != NUM_CLASSES:
        raise DataError(f"a model from {cnn.IMAGE_SHAPE} images to {NUM_CLASSES} classes",
                        f"{model.input_shape[1:]} to {model.output_shape[-1]}", file=path,
                        hint="delete it or rerun with --fresh to retrain")
    return model


def _save_atomically(model: keras.Model, history: dict, model_path: Path) -> None:
    # The partial name holds the pid: an orphaned worker of a killed run never shares it.
    partial = partial_path(model_path)
    with writing(model_path):
        try:
            model.save(partial)
            write_atomically(model_path.with_suffix(".history.json"), json.dumps(history))
            os.replace(partial, model_path)  # the model last: its presence means the fold is done
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk, say: no half-saved model stays
            raise


def _fold_model_path(member: Member, fold: int, config: Config, fingerprint: str) -> Path:
    folder = Path(config.artifacts_dir) / "models" / member_key(member, config, fingerprint)
    return folder / f"fold-{fold}.keras"


@dataclass
class FoldJob:
    """One fold model to train or reuse: its member, fold (of folds) and file, and its
    place (number of total) in the run."""

    member: Member
    fold: int
    folds: int
    path: Path
    number: int
    total: int

    def label(self) -> str:
        return f"[{self.member.name}] fold {self.fold + 1} of {self.folds}"

    def status(self, doing: str) -> str:
        return f"{self.label()} (model {self.number} of {self.total}): {doing}"


def _train_fold(job: FoldJob, x: np.ndarray, y: np.ndarray,
                split: tuple[np.ndarray, np.ndarray], config: Config,
                verbose: int | str, callbacks: Sequence[keras.callbacks.Callback] = ()) -> float:
    """Train one fold model (augmentation, cosine learning rate, early stopping on its
    held-out part) and save it with its history; return the seconds it took.
    The final weights are kept (no best-epoch restore), so the fold's OOF score stays honest."""
    tick = time.perf_counter()
    train_idx, held_idx = split
    keras.utils.set_random_seed(config.seed + job.fold)
    model = cnn.build_cnn(cnn.hparams_from_dict(job.member.hparams),
                          cnn.steps_per_epoch(len(train_idx), config.batch_size), config.epochs)
    history = cnn.fit(model, x[train_idx], y[train_idx], x[held_idx], y[held_idx],
                      epochs=config.epochs, batch_size=config.batch_size,
                      patience=config.patience, seed=config.seed + job.fold,
                      callbacks=callbacks, restore_best=False, verbose=verbose)
    history = {name: [float(v) for v in values] for name, values in history.history.items()}
    job.path.parent.mkdir(parents=True, exist_ok=True)
    _save_atomically(model, history, job.path)
    return time.perf_counter() - tick


def run_kfold(digits: Digits, members: list[Member], config: Config,
              verbose: int | str = "auto") -> KFoldResult:
    """Train (or reuse) every member x fold model; collect OOF and test probabilities.

    Test probabilities are the mean over a member's fold models; for --source keras
    the "test" set is MNIST's labelled 10k, which the report scores as a holdout.
    """
    cnn.use_precision(config.precision)  # the policy member_key names is the one models train in
    x, y = digits.x_train, digits.y_train
    splits = fold_splits(y, config.folds, config.seed)
    fingerprint = data_fingerprint(x, y)
    pairs = list(product(members, range(config.folds)))
    jobs = [FoldJob(member, fold, config.folds,
                    _fold_model_path(member, fold, config, fingerprint), number, len(pairs))
            for number, (member, fold) in enumerate(pairs, start=1)]
    to_train = [job for job in jobs if config.fresh or not job.path.is_file()]
    result = KFoldResult(trained=len(to_train), reused=len(jobs) - len(to_train))
    for job in jobs:
        if job not in to_train:
            print(job.status(f"reusing {job.path}"), flush=True)
    tick = time.perf_counter()
    if to_train:
        workers.train_fold_models(to_train, x, y, splits, config, _train_fold, verbose)
    result.train_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    for job in jobs:
        model = _load_fold_model(job.path)
        history = json.loads(job.path.with_suffix(".history.json").read_text())
        held_idx = splits[job.fold][1]
        oof = result.oof_probs.setdefault(job.member.name, np.zeros((len(y), NUM_CLASSES)))
        oof[held_idx] = predict_probs(model, x[held_idx], config.tta)
        test = result.test_probs.setdefault(job.member.name,
                                            np.zeros((len(digits.x_test), NUM_CLASSES)))
        test += predict_probs(model, digits.x_test, config.tta) / config.folds
        result.histories.append({"model": job.member.name, "fold": job.fold, "history": history})
    result.predict_seconds = time.perf_counter() - tick
    return result


def weighted_mean(probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The weighted average of the members' probabilities."""
    total = sum(weights.values())
    return sum(weights[name] * probs[name] for name in probs) / total


def choose_weights(oof_probs: dict[str, np.ndarray], y: np.ndarray,
                   step: float = 0.1) -> dict[str, float]:
    """Weights on a grid over the simplex that minimise OOF log-loss; the plain mean unless
    a weighting beats it (log-loss, being smooth, overfits the folds less than accuracy)."""
    names = list(oof_probs)
    plain = {name: 1.0 / len(names) for name in names}
    if len(names) == 1:
        return plain

    def loss(weights):
        probs = weighted_mean(oof_probs, weights)
        return log_loss(y, probs / probs.sum(axis=1, keepdims=True), labels=range(NUM_CLASSES))

    best, best_loss = plain, loss(plain)
    ticks = np.round(np.arange(0, 1 + step / 2, step), 6)
    for combo in product(ticks, repeat=len(names) - 1):
        last = 1 - sum(combo)
        if last < -1e-9:
            continue
        weights = dict(zip(names, [*combo, max(last, 0.0)], strict=True))
        candidate = loss(weights)
        if candidate < best_loss - 1e-6:
            best, best_loss = weights, candidate
    return {name: float(round(weight, 4)) for name, weight in best.items()}
