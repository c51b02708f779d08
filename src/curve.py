"""``python -m src.bench --curve``: out-of-fold accuracy against wall-clock minutes here.

Two kinds of point, scored the same way (accuracy of out-of-fold predictions
over every labelled image, with its 95% Wilson interval):

- the package's plans: ``python -m src.submit --minutes M`` for each budget M,
  in a subprocess, in a fresh folder (no search, no saved plan or model to
  reuse), with the bench's data, profile, seed and precision flags, timed from
  the shell; its accuracy, plan and what it trained come from its metrics.json;
- reference recipes (RECIPES), trained in this process one fold at a time as
  their authors wrote them: one network per fold of
  ``ensemble.fold_splits(y, 3, seed)``, no TTA, in the dtype policy the package
  resolves, timed from the first fold's build to the last fold's prediction.

The table and a JSON of every figure go to ``<artifacts>/bench/curve-<UTC
time>.md`` and ``.json``, the figure to ``.png``, never over earlier files;
the plans' run folders stay under ``<artifacts>/bench/curve-<UTC time>/``, with
the points finished so far (POINTS_FILE): a killed curve, run again with the
same settings, keeps them and measures the rest (a point cut short is measured
again from its start, in a fresh folder, as a timing must be).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
from keras import layers

from src import bench_runs, figures
from src.config import MAX_MINUTES, Config, check_integer
from src.data import IMAGE_SHAPE, NUM_CLASSES, Digits, data_fingerprint, load_digits
from src.ensemble import fold_splits
from src.errors import DataError
from src.metrics import accuracy_interval
from src.model import make_dataset, predict, steps_per_epoch, use_precision
from src.util import read_json, write_atomically, writing

DEFAULT_BUDGETS = (8.0, 15.0, 30.0)
CURVE_FOLDS = 3
POINTS_FILE = "points.json"  # in the curve's folder: its settings and every point finished

# ---------------------------------------------------------------- the recipes


def keras_example() -> keras.Model:
    """The Keras example "Simple MNIST convnet" (fchollet, keras.io/examples/vision/
    mnist_convnet): Conv2D 32 3x3 relu, max-pool 2, Conv2D 64 3x3 relu, max-pool 2, flatten,
    dropout 0.5, softmax. The softmax is float32, as mixed precision needs."""
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
    ], name="keras_example")


def _conv_bn(filters: int, kernel: int, strides: int = 1) -> list[layers.Layer]:
    """A relu convolution then batch normalisation; a strided one pads to keep the size."""
    padding = "same" if strides > 1 else "valid"
    return [layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation="relu"),
            layers.BatchNormalization()]


def kaggle_one_network() -> keras.Model:
    """Chris Deotte's one network from his Kaggle notebook "How to choose CNN Architecture
    MNIST": 32C3-32C3-32C5S2 - 64C3-64C3-64C5S2 - 128 - 10, batch normalisation after each
    layer, dropout 0.4. His ImageDataGenerator (rotation 10 degrees, zoom 0.1, shifts 0.1,
    nearest fill) becomes Keras' RandomRotation, RandomZoom and RandomTranslation layers,
    active only in training. The softmax is float32, as mixed precision needs."""
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        layers.RandomRotation(10 / 360, fill_mode="nearest"),
        layers.RandomZoom(0.1, 0.1, fill_mode="nearest"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
        *_conv_bn(32, 3), *_conv_bn(32, 3), *_conv_bn(32, 5, strides=2), layers.Dropout(0.4),
        *_conv_bn(64, 3), *_conv_bn(64, 3), *_conv_bn(64, 5, strides=2), layers.Dropout(0.4),
        layers.Flatten(),
        layers.Dense(128, activation="relu"), layers.BatchNormalization(), layers.Dropout(0.4),
        layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
    ], name="kaggle_one_network")


def deotte_learning_rate(epoch: int) -> float:
    """Deotte's annealer: 1e-3 times 0.95 to the power of the epoch (from 0)."""
    return 1e-3 * 0.95 ** epoch


@dataclass(frozen=True)
class Recipe:
    """A reference network and how its author trained it: Adam, categorical cross-entropy,
    pixels / 255 as float32, this batch size and these epochs. Each network trains on its
    fold's whole training part: the authors' 10% validation split is left out, as the
    held-out fold is what is scored."""

    name: str
    source: str  # who wrote it, where, and what it stands for here
    build: Callable[[], keras.Model]
    epochs: int
    batch_size: int
    augmentation: str
    schedule: Callable[[int], float] | None = None  # learning rate per epoch; None: Adam's

    def trained(self, epochs: int, policy: str) -> str:
        """What it trains, for the table."""
        rate = "learning rate 1e-3 x 0.95^epoch" if self.schedule else "Adam at 1e-3"
        return (f"1 network x {CURVE_FOLDS} folds x {epochs} epoch{'s' * (epochs != 1)}, "
                f"batch {self.batch_size}, {self.augmentation}, {rate}, no TTA, {policy}")


# Epochs: the Keras example's own 15; 15 for Deotte's one network, as issue 13 sets it
# (his 15-network ensemble notebook trains each 45).
RECIPES = (
    Recipe("keras-example", "the Keras example \"Simple MNIST convnet\" (fchollet, "
           "keras.io), a stand-in for a simple starter notebook", keras_example,
           epochs=15, batch_size=128, augmentation="no augmentation"),
    Recipe("kaggle-one-network", "Chris Deotte's one-network recipe (Kaggle notebook \"How to "
           "choose CNN Architecture MNIST\")", kaggle_one_network, epochs=15, batch_size=64,
           augmentation="augmentation (rotation 10°, zoom 0.1, shifts 0.1)",
           schedule=deotte_learning_rate),
)

# ---------------------------------------------------------------- points


@dataclass
class Point:
    """One point of the curve: what ran, its wall-clock seconds and its OOF score."""

    name: str
    what: str  # the budget's command or the recipe's source
    wall_seconds: float
    trained: str = ""
    budget_minutes: float | None = None  # None for a recipe
    accuracy: float | None = None  # None when it has no score (note says why)
    ci95_low: float | None = None
    ci95_high: float | None = None
    errors: int | None = None
    total: int | None = None
    plan: dict | None = None  # a plan's record from its metrics.json
    note: str = ""


def score(y: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy of argmax predictions, its 95% Wilson interval, errors and images."""
    correct = int(np.sum(probs.argmax(axis=1) == y))
    low, high = accuracy_interval(correct, len(y))
    return {"accuracy": correct / len(y), "ci95_low": low, "ci95_high": high,
            "errors": len(y) - correct, "total": len(y)}


def plan_details(metrics: dict) -> dict:
    """The score, the plan and what a run trained, from its metrics.json."""
    info, ensemble = metrics["run_info"], metrics["ensemble"]
    pseudo = (f", pseudo-labelled round {info['pseudo_epochs']} epochs"
              if info.get("pseudo_epochs") else "")
    repeats = info.get("repeats", 1)
    drawn = f" x {repeats} repeats" if repeats > 1 else ""
    trained = (f"{' + '.join(metrics['models'])} x {info['folds']} folds{drawn} x "
               f"{info['epochs']} epochs{', TTA' if info['tta'] else ''}{pseudo}, "
               f"{info['precision']}")
    return {"ci95_low": ensemble.get("ci95_low"), "ci95_high": ensemble.get("ci95_high"),
            "errors": ensemble.get("errors"), "total": ensemble.get("total"),
            "trained": trained, "plan": metrics.get("plan")}


def plan_point(config: Config, minutes: float, folder: Path) -> Point:
    """Run python -m src.submit --minutes <minutes> in folder and time it."""
    point = Point(f"plan {minutes:g} min", f"python -m src.submit --minutes {minutes:g}", 0.0,
                  budget_minutes=minutes)
    code, point.wall_seconds = bench_runs.run_stage(
        "submit", [*bench_runs.child_flags(config, folder), "--minutes", f"{minutes:g}"])
    if code != 0:
        point.note = f"python -m src.submit exited with code {code}"
        return point
    run = bench_runs.read_run_metrics(folder / "submissions" / "latest" / "metrics.json",
                                 plan_details)
    if "note" in run:
        point.note = run["note"]
        return point
    for name in ("accuracy", "ci95_low", "ci95_high", "errors", "total", "trained", "plan"):
        setattr(point, name, run[name])
    return point


def scaled(x: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1], as the recipes' authors feed them."""
    return x.astype(np.float32) / 255


def train_recipe(recipe: Recipe, x: np.ndarray, y: np.ndarray, epochs: int, seed: int,
                 verbose: int) -> keras.Model:
    """One network of the recipe trained on x, y for every epoch, nothing held out.

    The batches come from src.model.make_dataset (shuffled each pass, tf.data autotuning
    off): TensorFlow 2.21 can sit idle 10-25 s whenever an autotuned iterator is dropped
    (README), which would be timed as the recipe's."""
    model = recipe.build()
    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    batches = make_dataset(scaled(x), keras.utils.to_categorical(y, NUM_CLASSES),
                           recipe.batch_size, shuffle=True, seed=seed, repeat=True)
    callbacks = ([keras.callbacks.LearningRateScheduler(recipe.schedule)]
                 if recipe.schedule else [])
    model.fit(batches, steps_per_epoch=steps_per_epoch(len(y), recipe.batch_size),
              epochs=epochs, callbacks=callbacks, shuffle=False, verbose=verbose)
    return model


def recipe_oof(recipe: Recipe, x: np.ndarray, y: np.ndarray, seed: int, epochs: int,
               verbose: int) -> np.ndarray:
    """Out-of-fold probabilities: per fold of fold_splits(y, 3, seed), one network trained
    on the fold's training part predicts its held-out part (no TTA)."""
    oof = np.zeros((len(y), NUM_CLASSES), dtype=np.float32)
    for fold, (train_idx, held_idx) in enumerate(fold_splits(y, CURVE_FOLDS, seed)):
        print(f"recipe {recipe.name}: fold {fold + 1} of {CURVE_FOLDS}", flush=True)
        keras.utils.set_random_seed(seed + fold)
        model = train_recipe(recipe, x[train_idx], y[train_idx], epochs, seed + fold, verbose)
        oof[held_idx] = predict(model, scaled(x[held_idx]))
    return oof


def recipe_point(recipe: Recipe, digits: Digits, seed: int, epochs: int | None,
                 policy: str) -> Point:
    """Train and score the recipe (its author's epochs unless epochs is given) and time it."""
    epochs = epochs or recipe.epochs
    verbose = 1 if sys.stdout.isatty() else 2  # a progress bar on a terminal, else a line
    tick = time.perf_counter()
    probs = recipe_oof(recipe, digits.x_train, digits.y_train, seed, epochs, verbose)
    seconds = time.perf_counter() - tick
    return Point(recipe.name, recipe.source, seconds, recipe.trained(epochs, policy),
                 **score(digits.y_train, probs))


# ---------------------------------------------------------------- checks and folders


def parse_budgets(values: Sequence[str]) -> list[float]:
    """--curve's minutes as numbers (DEFAULT_BUDGETS when none); DataError unless each is a
    number above 0 and at most MAX_MINUTES."""
    budgets = []
    for text in values:
        try:
            minutes = float(text)
        except ValueError:
            minutes = math.nan
        if not 0 < minutes <= MAX_MINUTES:  # NaN fails both
            raise DataError(f"minutes > 0 up to {MAX_MINUTES}, such as 8 15 30", repr(text),
                            column="--curve")
        if minutes in budgets:  # it would train the same plan twice
            raise DataError("each budget once", f"{text!r} again", column="--curve")
        budgets.append(minutes)
    return budgets or list(DEFAULT_BUDGETS)


def check_recipe_epochs(epochs: int | None) -> None:
    """DataError unless --recipe-epochs is absent or an integer 1..MAX_INTEGER."""
    if epochs is not None:
        check_integer("--recipe-epochs", epochs, 1)


def new_folder(path: Path) -> Path:
    """Create path, or path-2, path-3, ... when taken: a folder no earlier run wrote."""
    with writing(path):
        for attempt in range(1, 1000):
            folder = path if attempt == 1 else path.with_name(f"{path.name}-{attempt}")
            try:
                folder.mkdir(parents=True)
                return folder
            except FileExistsError:
                continue
    raise DataError("a free folder name", f"{path}-2 to -999 taken", file=path)


# ---------------------------------------------------------------- output


def _cells(point: dict) -> list[str]:
    minutes = f"{point['wall_seconds'] / 60:.1f}"
    if point["accuracy"] is None:
        return [point["name"], point["what"], minutes, "—", "", "", point["note"]]
    interval = ("" if point["ci95_low"] is None else
                f"{100 * point['ci95_low']:.2f}–{100 * point['ci95_high']:.2f}%")
    errors = "" if point["errors"] is None else f"{point['errors']:,} of {point['total']:,}"
    return [point["name"], point["what"], minutes, f"{100 * point['accuracy']:.3f}",
            interval, errors, point["trained"]]


def markdown_table(points: list[dict]) -> str:
    """The points as a Markdown table."""
    header = ["Name", "Budget or recipe", "Wall minutes", "OOF %", "95% interval", "Errors",
              "What it trained"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---:|---|---:|---|"]
    lines += ["| " + " | ".join(_cells(point)) + " |" for point in points]
    return "\n".join(lines)


def render(report: dict) -> str:
    """The curve as Markdown."""
    return "\n".join([
        f"## python -m src.bench --curve, {report['utc']}", "",
        f"Machine: {bench_runs.machine_line(report['machine'])}", "",
        f"{report['images']:,} labelled images from {report['images_from']}, seed "
        f"{report['seed']}. Plans: `python -m src.submit --minutes M` in a fresh folder (no "
        f"search, nothing reused), timed from the shell. Recipes: trained in this process in "
        f"{report['policy']} (the package's dtype policy here), one network per fold of the "
        f"same {CURVE_FOLDS} stratified folds, no TTA, timed from the first build to the last "
        "prediction.", "",
        markdown_table(report["points"]), "",
        f"The figure is the PNG of the same name beside this file; the plans' run folders are "
        f"in {report['runs']}.",
    ]) + "\n"


def _unfinished_curve(bench_dir: Path, settings: dict) -> tuple[Path, dict] | None:
    """The newest curve folder of these settings that a killed curve left (its points so
    far in POINTS_FILE, its table never written), and what that file holds; or None."""
    for folder in sorted(bench_dir.glob("curve-*/"), key=lambda path: path.name, reverse=True):
        if (bench_dir / f"{folder.name}.json").exists():
            continue  # finished
        try:
            saved = read_json(folder / POINTS_FILE)
            if saved["settings"] == settings:
                return folder, {**saved, "points": [Point(**p) for p in saved["points"]]}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def run_curve(config: Config, budget_texts: Sequence[str], recipe_epochs: int | None,
              command: str) -> int:
    """Run every plan and recipe, or, after a killed curve of the same settings, those it
    had not finished; print the table and write it, its JSON and its figure."""
    budgets = parse_budgets(budget_texts)
    check_recipe_epochs(recipe_epochs)
    digits = load_digits(config)  # bad data stops here, before anything trains
    bench_dir = Path(config.artifacts_dir) / "bench"
    settings = {"budgets": budgets, "recipes": [recipe.name for recipe in RECIPES],
                "recipe_epochs": recipe_epochs, "seed": config.seed, "profile": config.profile,
                "precision": config.precision,
                "data": data_fingerprint(digits.x_train, digits.y_train)}
    resumed = _unfinished_curve(bench_dir, settings)
    if resumed:
        runs, saved = resumed
        utc, points = saved["utc"], saved["points"]
        print(f"curve: going on with {runs}: {len(points)} point(s) kept", flush=True)
    else:
        started = datetime.now(timezone.utc)
        runs = new_folder(bench_dir / f"curve-{started.strftime('%Y%m%d-%H%M%S')}")
        utc, points = started.strftime("%Y-%m-%d %H:%M UTC"), []

    def keep(point: Point) -> None:  # each point as it ends: a killed curve goes on from it
        points.append(point)
        write_atomically(runs / POINTS_FILE, json.dumps(
            {"settings": settings, "utc": utc, "points": [asdict(p) for p in points]}))

    done = {point.name for point in points}
    for minutes in budgets:
        if f"plan {minutes:g} min" not in done:
            keep(plan_point(config, minutes, new_folder(runs / f"plan-{minutes:g}min")))
    policy = use_precision(config.precision)
    for recipe in RECIPES:
        if recipe.name not in done:
            keep(recipe_point(recipe, digits, config.seed, recipe_epochs, policy))
    report = {"utc": utc, "command": command,
              "machine": bench_runs.machine_info(), "seed": config.seed, "folds": CURVE_FOLDS,
              "budgets": budgets, "policy": policy, "images": len(digits.y_train),
              "images_from": digits.train_path, "runs": str(runs),
              "points": [asdict(point) for point in points]}
    text = render(report)
    print(text)
    paths = bench_runs.write_new_files(bench_dir, runs.name, {
        ".md": text, ".json": json.dumps(report, indent=2) + "\n",
        ".png": figures.curve_png(report["points"])})
    print(f"wrote {', '.join(map(str, paths))}")
    return 0
