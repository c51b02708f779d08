"""The CNN, its search space, its input pipeline and how one model is trained.

Pixel scaling and augmentation are layers of the model: uint8 images go in,
the graph does the rest, and the augmentation is active only in training.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf
from keras import layers, ops

from src.data import IMAGE_SHAPE, NUM_CLASSES
from src.util import keras_verbosity

PREDICT_BATCH = 1024  # batches of prediction and validation: memory, not learning


class _NoRetracingNotice(logging.Filter):
    """Drops TensorFlow's paragraph on retracing Keras' prediction step: every fold model,
    timed network and reference recipe predicts through a tf.function of its own, which
    TensorFlow counts as one function traced again and again. Any other retracing is
    still said."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message
                    and "make_predict_function" in message)


logging.getLogger("tensorflow").addFilter(_NoRetracingNotice())

# The configuration used when no search has been run; measured in the README.
DEFAULT_HPARAMS: dict[str, object] = {
    "conv_blocks": 3,
    "filters_0": 32,
    "filters_1": 64,
    "filters_2": 128,
    # Two convs after each pooling: twice the time per image, and the best single
    # network measured on a 2-core CPU's budget (README, measured figures).
    "block_convs": 2,
    "first_kernel": 3,
    # Off by default: on a CPU it costs 1.6-1.8x per step for no accuracy at equal
    # training time (README, measured figures); the search can still switch it on.
    "batch_norm": False,
    "conv_dropout": 0.0,
    "dense_units": 128,
    "dropout": 0.25,
    "learning_rate": 2e-3,
    "augment": 0.1,
    # Train against 0.82 for the true digit and 0.02 for each other one. 0.1 had been
    # worth +0.04% quick OOF accuracy at no cost in time; 0.2 with batch 64 came 11 images
    # ahead of 0.1 with batch 128 on average over three seeds (README, measured figures).
    "label_smoothing": 0.2,
}


def cpu_has_bfloat16() -> bool:
    """Whether the CPU computes in bfloat16 natively (Linux flags avx512_bf16 or amx_bf16)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell, so no
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def resolve_precision(choice: str) -> str:
    """The Keras dtype policy that a --precision choice stands for on this machine.

    "auto" is mixed_bfloat16 on a CPU-only machine whose CPU has bfloat16
    instructions (1.4x the float32 speed at the same accuracy, README), and
    float32 everywhere else, GPUs included, until mixed precision is measured there.
    """
    if choice != "auto":
        return choice
    on_bf16_cpu = cpu_has_bfloat16() and not tf.config.list_physical_devices("GPU")
    return "mixed_bfloat16" if on_bf16_cpu else "float32"


def use_precision(choice: str) -> str:
    """Set Keras' global dtype policy to resolve_precision(choice) and return its name."""
    policy = resolve_precision(choice)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def clear_session() -> None:
    """keras.backend.clear_session(), keeping the global dtype policy.

    Keras' own resets the policy to float32 with the rest of its global state, so
    every model built after it would train in float32 (1.4x slower on a bfloat16 CPU).
    """
    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)


# Filters per block and dense units the search chooses from. The narrow space is kept
# to networks that train fast on a laptop CPU (its widest, deepest point costs about 3x
# the default per image); the wide one (--wide-space, the full profile) is for a GPU.
FILTER_CHOICES = ([16, 32], [32, 64], [64, 128])
DENSE_CHOICES = [64, 128, 256]
WIDE_FILTER_CHOICES = ([16, 32, 48], [32, 64, 96], [64, 128, 192])
WIDE_DENSE_CHOICES = [64, 128, 256, 512]


def define_search_space(hp: kt.HyperParameters, wide: bool = False) -> None:
    """Declare every hyperparameter the CNN reads, with DEFAULT_HPARAMS as the defaults;
    wide: more filters and dense units to choose from.

    A name already declared keeps its first declaration, so building a CNN from a
    wide space's values works with either space."""
    hp.Int("conv_blocks", 2, 3, default=DEFAULT_HPARAMS["conv_blocks"])
    for block, choices in enumerate(WIDE_FILTER_CHOICES if wide else FILTER_CHOICES):
        hp.Choice(f"filters_{block}", choices, default=DEFAULT_HPARAMS[f"filters_{block}"])
    hp.Int("block_convs", 1, 2, default=DEFAULT_HPARAMS["block_convs"])
    # A 5x5 first layer is nearly free (one input channel); deeper ones stay 3x3.
    hp.Choice("first_kernel", [3, 5], default=DEFAULT_HPARAMS["first_kernel"])
    hp.Boolean("batch_norm", default=DEFAULT_HPARAMS["batch_norm"])
    hp.Float("conv_dropout", 0.0, 0.3, step=0.1, default=DEFAULT_HPARAMS["conv_dropout"])
    hp.Choice("dense_units", WIDE_DENSE_CHOICES if wide else DENSE_CHOICES,
              default=DEFAULT_HPARAMS["dense_units"])
    hp.Float("dropout", 0.2, 0.5, step=0.1, default=DEFAULT_HPARAMS["dropout"])
    hp.Choice("learning_rate", [1e-3, 2e-3, 4e-3], default=DEFAULT_HPARAMS["learning_rate"])
    # Never 0: short search trials favour no augmentation, full-length training never does.
    hp.Float("augment", 0.05, 0.15, step=0.05, default=DEFAULT_HPARAMS["augment"])
    # Not searched: like augmentation it pays at the end of a full run, which short
    # trials cannot see.
    hp.Fixed("label_smoothing", DEFAULT_HPARAMS["label_smoothing"])


def hparams_from_dict(values: dict[str, object]) -> kt.HyperParameters:
    """A HyperParameters holding the search space, set to the given values."""
    hp = kt.HyperParameters()
    define_search_space(hp)
    for name, value in values.items():
        if name in hp.values:
            hp.values[name] = value
    return hp


@keras.saving.register_keras_serializable(package="digits")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels smoothed towards uniform: the target is
    1 - smoothing + smoothing / 10 for the true digit and smoothing / 10 for the rest.
    (Keras' sparse cross-entropy has no label smoothing; its categorical one needs
    one-hot labels.)"""

    def __init__(self, smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), NUM_CLASSES)
        return keras.losses.categorical_crossentropy(labels, y_pred,
                                                     label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


@keras.saving.register_keras_serializable(package="digits")
class RandomAffine(layers.Layer):
    """Rotate, zoom and shift every image by its own random amount, in one resampling.

    Keras' RandomRotation, RandomZoom and RandomTranslation resample the image
    three times; composing the three into one affine transform gives the same
    augmentation with one interpolation (less blur) and one op instead of three.
    ``strength`` 0.1 means up to 10 degrees, 10% zoom and a 10% shift. Active
    only in training.
    """

    def __init__(self, strength: float = 0.1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.strength = float(strength)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or self.strength == 0:
            return images
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]

        def draw(limit):
            return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

        angle = draw(self.strength * 100) * (math.pi / 180)
        scale = 1.0 + draw(self.strength)
        shift_x, shift_y = draw(self.strength * width), draw(self.strength * height)
        # Output pixel (x, y) samples input point M @ ((x, y) - centre - shift) + centre,
        # with M = rotation(-angle) / scale: the inverse of the forward warp.
        cos, sin = ops.cos(angle) / scale, ops.sin(angle) / scale
        centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
        offset_x = centre_x - cos * (centre_x + shift_x) - sin * (centre_y + shift_y)
        offset_y = centre_y + sin * (centre_x + shift_x) - cos * (centre_y + shift_y)
        zeros = ops.zeros_like(angle)
        transform = ops.stack([cos, sin, offset_x, -sin, cos, offset_y, zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear",
                                          fill_mode="constant")

    def get_config(self):
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


def build_cnn(hp: kt.HyperParameters, steps_per_epoch: int | None = None,
              epochs: int | None = None) -> keras.Model:
    """The CNN for one point of the search space, compiled.

    With steps_per_epoch and epochs, the learning rate warms up over the first
    epoch, then follows a cosine decay to the last (the ensemble's fold models and
    the search's trials); without, it stays constant (timing a network).
    """
    define_search_space(hp)
    inputs = keras.Input(IMAGE_SHAPE, dtype="uint8", name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    if hp["augment"] > 0:
        x = RandomAffine(hp["augment"], name="augmentation")(x)
    for block in range(hp["conv_blocks"]):
        # A second conv only after the first pooling: at 28x28 it would cost 3x the time.
        for _ in range(1 if block == 0 else hp["block_convs"]):
            kernel = hp["first_kernel"] if block == 0 else 3
            x = layers.Conv2D(hp[f"filters_{block}"], kernel, padding="same",
                              use_bias=not hp["batch_norm"])(x)
            if hp["batch_norm"]:
                # momentum 0.9: moving statistics settle within tens of steps, not hundreds
                x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
        if hp["conv_dropout"] > 0:
            x = layers.Dropout(hp["conv_dropout"])(x)
    x = layers.Flatten()(x)
    x = layers.Dense(hp["dense_units"], activation="relu")(x)
    x = layers.Dropout(hp["dropout"])(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="digit")(x)
    model = keras.Model(inputs, outputs, name="cnn")
    learning_rate = hp["learning_rate"]
    if steps_per_epoch and epochs:
        # Keras counts decay_steps after the warm-up: the decay takes the epochs after the first
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate / 10, decay_steps=steps_per_epoch * max(epochs - 1, 1),
            warmup_target=learning_rate, warmup_steps=steps_per_epoch)
    loss = "sparse_categorical_crossentropy"
    if hp["label_smoothing"] > 0:
        loss = SmoothedSparseCrossentropy(hp["label_smoothing"])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=["accuracy"])
    return model


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds per image of the model's conv and dense layers: what a network costs
    to train and predict, bar batch norm, pooling and augmentation."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            positions = math.prod(layer.output.shape[1:-1])  # output pixels; 1 for a dense layer
            total += positions * math.prod(layer.kernel.shape)
    return total


def make_dataset(x: np.ndarray, y: np.ndarray | None, batch_size: int, shuffle: bool,
                 seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """In-memory uint8 images (and labels) as shuffled, batched, prefetched tf.data.

    With repeat, the batches of one pass follow the next for ever, each pass
    reshuffled; train on it with steps_per_epoch, so Keras keeps one iterator
    for the whole fit.

    tf.data's autotuning is off. With it on (TensorFlow 2.21), dropping an
    iterator waits for the autotune thread's next wake-up: the process sat idle
    for 10-25 s at the end of every fit (README, measured figures). Arrays
    already in memory have nothing to tune.
    """
    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if repeat:
        dataset = dataset.repeat()
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def fit(model: keras.Model, x_train: np.ndarray, y_train: np.ndarray,
        x_val: np.ndarray, y_val: np.ndarray, epochs: int, batch_size: int, seed: int = 0,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        verbose: int | str = "auto", **fit_options) -> keras.callbacks.History:
    """Train for every epoch of the schedule, reporting accuracy on (x_val, y_val); a fold
    model and a search trial alike. fit_options go to keras.Model.fit (a Hyperband
    rung's initial_epoch).

    Nothing stops early or keeps a best epoch: the k-fold ensemble's validation
    part is the part it scores, so nothing may be chosen on it.
    """
    if verbose == "auto":
        verbose = keras_verbosity()
    return model.fit(
        make_dataset(x_train, y_train, batch_size, shuffle=True, seed=seed, repeat=True),
        steps_per_epoch=steps_per_epoch(len(x_train), batch_size),
        validation_data=make_dataset(x_val, y_val, PREDICT_BATCH, shuffle=False),
        epochs=epochs, callbacks=list(callbacks), verbose=verbose,
        shuffle=False,  # the dataset shuffles; Keras would warn
        **fit_options)


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """How many batches one epoch over num_images takes."""
    return max(1, math.ceil(num_images / batch_size))


def predict(model: keras.Model, x: np.ndarray,
            batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Class probabilities (N, 10) for uint8 images."""
    return model.predict(make_dataset(x, None, batch_size, shuffle=False), verbose=0)
