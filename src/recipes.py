"""The reference recipes that ``python -m src.bench --curve`` sets beside the package's
plans: networks as their authors wrote and trained them (Adam, categorical
cross-entropy, pixels / 255 as float32, the author's batch size, epochs and
augmentation), one network per fold of ``data.fold_splits(y, 3, seed)``, no TTA."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from src.data import IMAGE_SHAPE, NUM_CLASSES, fold_splits
from src.model import make_dataset, predict, steps_per_epoch

CURVE_FOLDS = 3


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
