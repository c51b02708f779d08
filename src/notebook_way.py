"""The notebook way: how popular Digit Recognizer notebooks train, emulated for src.bench.

Most public notebooks read the CSVs with pandas defaults, take ``.values``,
reshape to 28x28x1 and divide by 255 into float32 arrays; they augment with
Keras's ImageDataGenerator (rotation_range=10, zoom_range=0.1, width and height
shift 0.1), which moves every image one at a time on the CPU with SciPy, and
they fit a float32-input CNN on those batches and predict with model.predict.
This module does the same with today's Keras: read_like_a_notebook,
augment_image, NotebookBatches (a PyDataset in place of ImageDataGenerator.flow)
and float_input_model, the package's own CNN behind a float32 input, so only
the way differs. ``python -m src.bench`` times it beside the package.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy import ndimage

from src.data import IMAGE_SHAPE
from src.model import DEFAULT_HPARAMS, build_cnn, hparams_from_dict

# ---------------------------------------------------------------- models


def package_model(augment: float = DEFAULT_HPARAMS["augment"]) -> keras.Model:
    """The package's CNN with the default hyperparameters (augmentation in the graph if > 0):
    what the bench's package rows train, and the layers float_input_model reuses."""
    return build_cnn(hparams_from_dict({**DEFAULT_HPARAMS, "augment": augment}))


def compile_like(model: keras.Model, source: keras.Model, jit_compile: bool = False) -> None:
    """Compile model with a fresh copy of source's optimizer and its loss and metric."""
    optimizer = type(source.optimizer).from_config(source.optimizer.get_config())
    model.compile(optimizer=optimizer, loss=source.loss, metrics=["accuracy"],
                  jit_compile=jit_compile)


def float_input_model(jit_compile: bool = False) -> keras.Model:
    """The package's CNN without augmentation and without its Rescaling layer, taking float32
    pixels already scaled to [0, 1]: the model a notebook trains.

    The package's model takes uint8 and would cast float pixels to uint8 (all 0 or 1), so the
    notebook way gets the same layers behind a float32 input; both see the same [0, 1] pixels.
    """
    source = package_model(augment=0)
    model = keras.Sequential([keras.Input(IMAGE_SHAPE, dtype="float32"),
                              *(layer for layer in source.layers[1:]
                                if not isinstance(layer, keras.layers.Rescaling))])
    compile_like(model, source, jit_compile)
    return model


# ---------------------------------------------------------------- data and augmentation


def augment_image(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """One image rotated, zoomed and shifted at random with SciPy, as ImageDataGenerator did
    (rotation_range=10, zoom_range=0.1, width/height_shift_range=0.1 at strength 0.1)."""
    height, width = image.shape[:2]
    angle = np.deg2rad(rng.uniform(-100 * strength, 100 * strength))
    scale = 1 + rng.uniform(-strength, strength)
    shift = rng.uniform(-strength, strength, 2) * (height, width)
    # Output pixel o samples input point matrix @ (o - centre - shift) + centre.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    matrix = np.array([[cos, -sin], [sin, cos]])
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    offset = centre - matrix @ (centre + shift)
    warped = ndimage.affine_transform(image[..., 0], matrix, offset, order=1, mode="constant")
    return warped[..., None]


class NotebookBatches(keras.utils.PyDataset):
    """Float32 images in [0, 1], shuffled each epoch and augmented image by image on the CPU:
    ImageDataGenerator.flow's way, as a PyDataset with its default single worker."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, strength: float,
                 seed: int, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.strength = strength
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picks = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        images = np.stack([augment_image(self.x[i], self.rng, self.strength) for i in picks])
        return images, self.y[picks]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


def read_like_a_notebook(train_path: Path, test_path: Path):
    """The CSVs as most notebooks read them: pandas defaults, .values, reshape, float32 / 255."""
    train, test = pd.read_csv(train_path), pd.read_csv(test_path)
    y_train = train["label"].values
    x_train = train.drop(columns="label").values.reshape(-1, *IMAGE_SHAPE).astype(np.float32) / 255
    x_test = test.values.reshape(-1, *IMAGE_SHAPE).astype(np.float32) / 255
    return x_train, y_train, x_test
