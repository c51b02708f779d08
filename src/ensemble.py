"""Stratified k-fold training of the best configurations, out-of-fold scoring, averaging.

Every (configuration, fold) model is saved the moment it finishes, together
with its predictions, under ``<artifacts>/models/<key>/``; the key hashes
everything that shapes the model (hyperparameters, folds, seed, epochs, the
training data), so a rerun, after a kill too, skips finished folds and a
changed setting trains afresh.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import keras
import numpy as np

from src import model as cnn
from src import workers
from src.config import Config
from src.data import NUM_CLASSES, Digits, data_fingerprint, fold_splits
from src.errors import DataError, ctrl_c_inside
from src.members import Member
from src.predict import checked_probs, predict_probs
from src.pseudo_labels import PSEUDO_SUFFIX, PseudoLabels, select_pseudo_labels
from src.util import partial_path, read_json, write_atomically, writing


@dataclass
class KFoldResult:
    """Out-of-fold and test probabilities per member, plus each fold model's training history."""

    oof_probs: dict[str, np.ndarray] = field(default_factory=dict)
    test_probs: dict[str, np.ndarray] = field(default_factory=dict)
    fold_test_probs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    histories: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    predict_seconds: float = 0.0
    trained: int = 0
    reused: int = 0
    pseudo_counts: list[int] = field(default_factory=list)  # pseudo-labels per fold
    tta: dict[str, bool] = field(default_factory=dict)  # per member: predicted with TTA
    epochs: dict[str, list[int]] = field(default_factory=dict)  # per member: each model's


@functools.cache
def training_code_version() -> str:
    """A short hash of the code that shapes a fold model (src/model.py, the fold trainer
    and the folds it is held out of) and of the TensorFlow, Keras and scikit-learn
    versions that run it: folds drawn anew by another version would hold images the
    saved model trained on."""
    import sklearn
    import tensorflow as tf

    text = inspect.getsource(cnn) + inspect.getsource(_train_fold) + inspect.getsource(fold_splits)
    text += f"tensorflow {tf.__version__} keras {keras.__version__} sklearn {sklearn.__version__}"
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def member_key(member: Member, config: Config, fingerprint: str) -> str:
    """The cache key of a member's fold models: everything that changes what they learn,
    the code and library versions that train them included."""
    recipe = dict(hparams=member.hparams, folds=config.folds, seed=config.seed,
                  epochs=config.epochs, batch_size=config.batch_size, data=fingerprint,
                  precision=cnn.resolve_precision(config.precision),
                  code=training_code_version())
    text = json.dumps(recipe, sort_keys=True, default=str)
    return f"{member.name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _load_fold_model(path: Path) -> keras.Model:
    if not path.exists():  # this run trained it or found it at its start: another took it
        raise DataError("the fold model this run trained or found", "none", file=path,
                        hint="another run sharing --artifacts-dir deleted it, one with "
                        "--fresh say: run the command again to train it")
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for a damaged file
        if interrupt := ctrl_c_inside(error):  # not the file's fault
            raise interrupt from None
        raise DataError("a Keras model saved by python -m src.submit",
                        f"an unreadable file ({type(error).__name__})", file=path,
                        hint="delete it or rerun with --fresh to retrain") from None
    try:
        shapes = f"{tuple(model.input_shape[1:])} to {tuple(model.output_shape[1:])}"
    except (AttributeError, ValueError, TypeError):  # a model never built has no shapes
        shapes = "a model without input and output shapes"
    wanted = f"{cnn.IMAGE_SHAPE} to {(NUM_CLASSES,)}"
    if shapes != wanted:
        raise DataError(f"a model from {cnn.IMAGE_SHAPE} images to {NUM_CLASSES} classes, "
                        f"{wanted}", shapes, file=path,
                        hint="delete it or rerun with --fresh to retrain")
    name = fold_model_name(path)
    if model.name != name:  # copied from another fold's or member's file
        raise DataError(f"the model trained for this file, {name!r}", f"{model.name!r}",
                        file=path,
                        hint="delete it or rerun with --fresh to retrain")
    return model


def fold_model_name(path: Path) -> str:
    """The name a fold model is saved under: its member folder's and its file's, so that a
    model copied over another fold's or member's file is told apart (it would score images
    it trained on as held out). TensorFlow scopes variables by it, so only letters, digits,
    _, . and - are kept: a pseudo-labelled member's + becomes _."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{path.parent.name}-{path.stem}")


def _load_history(model_path: Path, epochs: int) -> dict:
    """The training history saved beside a fold model of epochs epochs (written before the
    model, so a killed run never leaves a model without one; a copied or damaged folder can)."""
    path = model_path.with_suffix(".history.json")
    try:
        history = read_json(path)
        found = _history_problem(history, epochs)
    except (OSError, ValueError) as error:
        found = f"an unreadable file ({type(error).__name__})"
    if found:
        raise DataError("the training history python -m src.submit saves beside each fold "
                        "model", found, file=path,
                        hint=f"delete it and {model_path.name}, or rerun with --fresh")
    return history


def _history_problem(history: object, epochs: int) -> str | None:
    """What is wrong with a loaded history, or None: the report plots each of its entries,
    a list of numbers (NaN where training diverged), loss and accuracy one per epoch."""
    if not isinstance(history, dict):
        return f"a JSON {type(history).__name__}"
    for name, values in history.items():
        if not (isinstance(values, list) and all(type(value) in (int, float)
                                                 for value in values)):
            return f"{name!r}: {values!r:.40}"
    for name in ("loss", "accuracy"):
        if name not in history:
            return f"no {name!r}"
        if len(history[name]) != epochs:
            return f"{name!r} over {len(history[name])} epoch(s), where the model trained {epochs}"
    return None


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


def _fold_model_path(member: Member, fold: int, config: Config, fingerprint: str,
                     epochs: int) -> Path:
    # fold counts over every repeat; the key names folds, seed and the planned epochs, so
    # a model that a late round cut to fewer epochs (src.budget.RoundPace) says so
    folder = Path(config.artifacts_dir) / "models" / member_key(member, config, fingerprint)
    return folder / (f"fold-{fold}.keras" if epochs == config.epochs
                     else _shortened_name(fold, epochs))


def _shortened_name(fold: int, epochs: int | str) -> str:
    """The file name of a fold model a late round cut to `epochs` ("*": any of them)."""
    return f"fold-{fold}-{epochs}-epochs.keras"


@dataclass
class FoldJob:
    """One fold model to train or reuse: its member, split (fold of folds, repeat of
    repeats) and file, and its place (number of total) in the run."""

    member: Member
    fold: int  # the split's index over every repeat: fold k of repeat r is r * folds + k
    folds: int
    path: Path
    number: int
    total: int
    repeats: int = 1
    # Pseudo-labelled test images (images, labels) added to the fold's training part.
    extra: tuple[np.ndarray, np.ndarray] | None = None
    epochs: int = 0  # 0: the config's

    def label(self) -> str:
        repeat, fold = divmod(self.fold, self.folds)
        where = f", repeat {repeat + 1} of {self.repeats}" if self.repeats > 1 else ""
        return f"[{self.member.name}] fold {fold + 1} of {self.folds}{where}"

    def status(self, doing: str) -> str:
        return f"{self.label()} (model {self.number} of {self.total}): {doing}"


def _train_fold(job: FoldJob, x: np.ndarray, y: np.ndarray,
                split: tuple[np.ndarray, np.ndarray], config: Config,
                verbose: int | str, callbacks: Sequence[keras.callbacks.Callback] = ()) -> float:
    """Train one fold model (augmentation, cosine learning rate) for every epoch of the
    schedule and save it with its history; return the seconds it took.

    Its held-out part is only watched, never used to choose (no early stopping, no
    best-epoch weights): that part is what the model's OOF score is computed on."""
    tick = time.perf_counter()
    train_idx, held_idx = split
    x_fit, y_fit = x[train_idx], y[train_idx]
    if job.extra is not None:
        x_fit, y_fit = np.concatenate([x_fit, job.extra[0]]), np.concatenate([y_fit, job.extra[1]])
    keras.utils.set_random_seed(config.seed + job.fold)
    epochs = job.epochs or config.epochs
    model = cnn.build_cnn(cnn.hparams_from_dict(job.member.hparams),
                          cnn.steps_per_epoch(len(y_fit), config.batch_size), epochs)
    model.name = fold_model_name(job.path)
    history = cnn.fit(model, x_fit, y_fit, x[held_idx], y[held_idx],
                      epochs=epochs, batch_size=config.batch_size,
                      seed=config.seed + job.fold, callbacks=callbacks, verbose=verbose)
    history = {name: [float(v) for v in values] for name, values in history.history.items()}
    _save_atomically(model, history, job.path)
    return time.perf_counter() - tick


def run_kfold(digits: Digits, members: list[Member], config: Config,
              verbose: int | str = "auto", budget=None) -> KFoldResult:
    """Train (or reuse) every member x fold model; collect OOF and test probabilities.

    With --repeats R the folds are drawn R times, each on a new shuffle, and an
    image's OOF probabilities are the mean of the R models that never saw it.
    Test probabilities are the mean over a member's fold models; for --source keras
    the "test" set is MNIST's labelled 10k, which the report scores as a holdout.
    With --pseudo-threshold, a second round trains every member again, each fold
    model on its fold's training part plus the test images the first round's
    models of that fold are sure of (PseudoLabels); its members join the ensemble
    with "+pl" in their names.

    With a budget (src.budget.Budget, from --minutes), the budget decides at each
    round's prediction whether it uses TTA, and after the first round how many
    epochs the pseudo-labelled round trains (0: none).
    """
    cnn.use_precision(config.precision)  # the policy member_key names is the one models train in
    splits = fold_splits(digits.y_train, config.folds, config.seed, config.repeats)
    fingerprint = data_fingerprint(digits.x_train, digits.y_train)
    result = KFoldResult()
    _run_round(digits, members, config, splits, fingerprint, result, verbose, budget=budget)
    if config.pseudo_threshold > 0:
        pseudo = select_pseudo_labels(result.fold_test_probs, [m.name for m in members],
                                      config.pseudo_threshold)
        counts = [len(labels) for _, labels in pseudo.per_fold]
        print(f"pseudo-labels: {', '.join(map(str, counts))} of "
              f"{len(digits.x_test)} test images per fold at confidence >= "
              f"{config.pseudo_threshold}", flush=True)
        epochs = config.pseudo_epochs if budget is None else budget.pseudo_epochs(counts)
        if epochs:
            result.pseudo_counts = counts
            second = [Member(f"{m.name}{PSEUDO_SUFFIX}", m.hparams,
                             f"{m.origin}, pseudo-labelled", m.kind) for m in members]
            # The key holds the test images too: another test.csv can pick the same rows.
            images = pseudo.images_fingerprint(digits.x_test)
            _run_round(digits, second, dataclasses.replace(config, epochs=epochs), splits,
                       f"{fingerprint}-{pseudo.fingerprint()}-{images}", result, verbose,
                       pseudo, budget)
    return result


def _run_round(digits: Digits, members: list[Member], config: Config,
               splits: list[tuple[np.ndarray, np.ndarray]], fingerprint: str,
               result: KFoldResult, verbose: int | str, pseudo: PseudoLabels | None = None,
               budget=None) -> None:
    """Train (or reuse) members x folds and add their probabilities to result."""
    pseudo_round = pseudo is not None
    jobs = _fold_jobs(digits, members, config, len(splits), fingerprint, pseudo, budget)
    to_train = _jobs_to_train(jobs, config)
    result.trained += len(to_train)
    result.reused += len(jobs) - len(to_train)
    tick = time.perf_counter()
    if to_train:
        jobs = _train(jobs, to_train, digits, splits, config, fingerprint, verbose,
                      budget, pseudo_round, [m.name for m in members])
    result.train_seconds += time.perf_counter() - tick
    tta = config.tta
    if budget is not None:
        budget.training_done(pseudo_round)
        tta = budget.use_tta(pseudo_round)
    tick = time.perf_counter()
    _add_predictions(jobs, digits, splits, config, result, tta)
    for member in members:
        result.test_probs[member.name] = np.mean(result.fold_test_probs[member.name], axis=0)
        result.tta[member.name] = tta
    result.predict_seconds += time.perf_counter() - tick
    if budget is not None:
        budget.prediction_done(pseudo_round)


def _at_epochs(job: FoldJob, epochs: int, config: Config, fingerprint: str) -> FoldJob:
    """The job trained for `epochs` epochs, with the file such a model is saved in."""
    return dataclasses.replace(job, epochs=epochs, path=_fold_model_path(
        job.member, job.fold, config, fingerprint, epochs))


def _fold_jobs(digits: Digits, members: list[Member], config: Config, splits: int,
               fingerprint: str, pseudo: PseudoLabels | None, budget) -> list[FoldJob]:
    """One job per member x split, at the epochs the budget left it (fewer where a late
    run cut them; the config's without a budget), with its fold's pseudo-labelled test
    images in a pseudo-labelled round."""
    pairs = list(product(members, range(splits)))
    jobs = []
    for number, (member, fold) in enumerate(pairs, start=1):
        epochs = config.epochs if budget is None else budget.fold_epochs(
            pseudo is not None, member.name, fold, config.epochs)
        job = FoldJob(member, fold, config.folds,
                      _fold_model_path(member, fold, config, fingerprint, epochs), number,
                      len(pairs), config.repeats, epochs=epochs)
        if pseudo is not None:
            indices, labels = pseudo.per_fold[fold]
            job.extra = (digits.x_test[indices], labels)
        jobs.append(job)
    return jobs


def _jobs_to_train(jobs: list[FoldJob], config: Config) -> list[FoldJob]:
    """The jobs whose model is not saved yet, or all of them with --fresh (their files
    deleted first, so that a resume reuses only what this run trains); the others are
    announced as reused. A folder where a model would be saved is refused first."""
    for job in jobs:  # before training: its model could not be saved there
        if job.path.is_dir():
            raise DataError("a fold model's file, or nothing yet", "a folder", file=job.path,
                            hint="remove it")
    to_train = [job for job in jobs if config.fresh or not job.path.is_file()]
    if config.fresh:
        for job in to_train:
            # and its fold's models that an earlier late round cut short, which a resume
            # would otherwise find when this run's round is cut to the same epochs
            shortened = job.path.parent.glob(_shortened_name(job.fold, "*"))
            for path in (job.path, *shortened):
                with writing(path):
                    path.unlink(missing_ok=True)
                    path.with_suffix(".history.json").unlink(missing_ok=True)
    training = {job.number for job in to_train}
    for job in jobs:
        if job.number not in training:
            print(job.status(f"reusing {job.path}"), flush=True)
    return to_train


def _train(jobs: list[FoldJob], to_train: list[FoldJob], digits: Digits,
           splits: list[tuple[np.ndarray, np.ndarray]], config: Config, fingerprint: str,
           verbose: int | str, budget, pseudo_round: bool,
           member_names: list[str]) -> list[FoldJob]:
    """Train the to_train jobs in the worker pool; return jobs as trained. With a budget,
    a model not yet started when the round runs late trains fewer epochs (and is saved
    under a name that says so)."""
    paced, after, trained = None, None, {}
    if budget is not None:
        pace = budget.round_pace(pseudo_round, to_train, member_names, config.epochs)
        after = pace.finished

        def paced(job: FoldJob) -> FoldJob:
            trained[job.number] = _at_epochs(job, pace.epochs_for(job), config, fingerprint)
            return trained[job.number]

    workers.train_fold_models(to_train, digits.x_train, digits.y_train, splits, config,
                              _train_fold, verbose, before=paced, after=after)
    return [trained.get(job.number, job) for job in jobs]


def _add_predictions(jobs: list[FoldJob], digits: Digits,
                     splits: list[tuple[np.ndarray, np.ndarray]], config: Config,
                     result: KFoldResult, tta: bool) -> None:
    """Each fold model's held-out and test probabilities, and its history, into result.

    Every image is held out once a repeat: its OOF is the mean of `repeats` models."""
    y = digits.y_train
    for job in jobs:
        model = _load_fold_model(job.path)
        history = _load_history(job.path, job.epochs or config.epochs)
        held_idx = splits[job.fold][1]
        oof = result.oof_probs.setdefault(job.member.name, np.zeros((len(y), NUM_CLASSES)))
        held_probs, test_probs = (checked_probs(predict_probs(model, images, tta), job.path)
                                  for images in (digits.x_train[held_idx], digits.x_test))
        oof[held_idx] += held_probs / config.repeats
        result.fold_test_probs.setdefault(job.member.name, []).append(test_probs)
        result.histories.append({"model": job.member.name, "fold": job.fold, "history": history})
        result.epochs.setdefault(job.member.name, []).append(job.epochs or config.epochs)
