"""Load and validate MNIST: the Kaggle CSVs or the Keras download.

Images come back as uint8 arrays of shape (N, 28, 28, 1): scaling to [0, 1]
happens inside the model's graph, so memory and the input pipeline stay small.
Any bad input raises DataError naming the file, line and column.
"""

from __future__ import annotations

import hashlib
import os
import tokenize
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

from src.config import DATA_DIR_ENV, Config

# The images' shape and the classes are defined with the CSV format (src.csv_files), and
# imported from here by the stages after the data's.
from src.csv_files import (  # noqa: F401 (IMAGE_SHAPE)
    IMAGE_SHAPE,
    NUM_CLASSES,
    read_digits_csv,
)
from src.csv_text import READ_ERRORS, error_name
from src.errors import DataError, ctrl_c_inside
from src.util import NOT_ONE_LINE, is_dir, is_file, is_one_line_path, not_a_file, printable

KAGGLE_INPUT_DIR = Path("/kaggle/input/digit-recognizer")
LOCAL_DATA_DIR = Path("data/digit-recognizer")
HOW_TO_GET_DATA = (
    "fetch it with `python -m src.download` and your Kaggle API credentials (tune and "
    "submit take --download), or unzip `kaggle "
    f"competitions download -c digit-recognizer` into {LOCAL_DATA_DIR}/, pass --data-dir DIR "
    f"or set ${DATA_DIR_ENV}; or use --source keras"
)


@dataclass
class Digits:
    """A labelled training set and a test set, as the model consumes them."""

    x_train: np.ndarray  # uint8 (N, 28, 28, 1)
    y_train: np.ndarray  # int64 (N,) in 0..9
    x_test: np.ndarray  # uint8 (M, 28, 28, 1)
    test_ids: np.ndarray  # int64 (M,): ImageId 1..M in file order
    y_test: np.ndarray | None = None  # known for --source keras only
    source: str = "kaggle"
    train_path: str = ""
    test_path: str = ""
    # Each training image's 0-based row among the labelled images (train.csv's data rows),
    # as load_fold_digits keeps them (a --train-samples subsample: some, shuffled);
    # None: all, in file order.
    train_rows: np.ndarray | None = None
    # data_fingerprint of every labelled image, taken before such a subsample ("": not
    # taken): a search's record of its hold-out rows names the data by it.
    labelled_fingerprint: str = ""


def find_csv(folder: Path, stem: str) -> Path | None:
    """``folder/stem.csv`` or ``folder/stem.csv.gz``, whichever exists first."""
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if is_file(folder / name):
            return folder / name
    return None


def find_data_dir(data_dir: str | Path | None = None, stem: str = "train") -> Path:
    """The first folder holding train.csv (or stem.csv): --data-dir, $DIGITS_DATA_DIR, data/,
    /kaggle/input/."""
    if data_dir is not None:
        folder = Path(data_dir)
        if not is_dir(folder) and folder.exists():
            raise DataError(f"a folder holding {stem}.csv", "a file", file=folder,
                            column="--data-dir")
        if find_csv(folder, stem) is None:
            standing = folder / f"{stem}.csv"  # a folder of that name, say
            zipped = [path.name for path in (folder / f"{stem}.csv.zip",
                                             folder / f"{KAGGLE_INPUT_DIR.name}.zip")
                      if path.exists()]  # Kaggle's downloads, not yet unzipped
            found = (f"{not_a_file(standing)} named {standing.name}" if standing.exists()
                     else f"{zipped[0]}, not unzipped" if zipped else "none")
            raise DataError(f"{stem}.csv (or {stem}.csv.gz)", found, file=folder,
                            hint=HOW_TO_GET_DATA)
        return folder
    from_environment = os.environ.get(DATA_DIR_ENV)
    if from_environment and not is_one_line_path(from_environment):  # as --data-dir's check
        raise DataError("a path in text on one line",
                        f"'{printable(from_environment)}' ({NOT_ONE_LINE})",
                        column=f"${DATA_DIR_ENV}")
    candidates = [Path(p) for p in (from_environment,) if p]
    candidates += [LOCAL_DATA_DIR, KAGGLE_INPUT_DIR]
    for folder in candidates:
        if find_csv(folder, stem) is not None:
            return folder
    searched = ", ".join(str(c) for c in candidates)
    wanted = "train.csv and test.csv" if stem == "train" else f"{stem}.csv"
    raise DataError(f"{wanted} in one of " + searched, "none", hint=HOW_TO_GET_DATA)


def load_kaggle(data_dir: str | Path | None = None) -> Digits:
    """The competition's train.csv and test.csv, validated; test ImageIds are 1..M."""
    folder = find_data_dir(data_dir)
    train_path = find_csv(folder, "train")
    test_path = find_csv(folder, "test") or folder / "test.csv"
    if not is_file(test_path):
        raise DataError("a CSV file", not_a_file(test_path), file=test_path,
                        hint=HOW_TO_GET_DATA)
    x_train, y_train = read_digits_csv(train_path, with_labels=True)
    x_test, _ = read_digits_csv(test_path, with_labels=False)
    return Digits(x_train=x_train, y_train=y_train, x_test=x_test,
                  test_ids=np.arange(1, len(x_test) + 1), source="kaggle",
                  train_path=str(train_path), test_path=str(test_path))


MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_mnist_arrays(arrays: dict[str, np.ndarray], origin: str) -> None:
    for key in MNIST_KEYS:
        if key not in arrays:
            raise DataError(f"arrays {', '.join(MNIST_KEYS)}", f"no {key!r}", file=origin)
        if not isinstance(arrays[key], np.ndarray):  # a member not named .npy: its bytes
            raise DataError("a .npy array", "raw bytes (a member not saved by numpy)",
                            file=origin, column=key)
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError("images of shape (N, 28, 28)", str(images.shape), file=origin,
                            column=f"x_{split}")
        if labels.shape != (len(images),):
            raise DataError(f"{len(images)} labels", str(labels.shape), file=origin,
                            column=f"y_{split}")
        if len(images) == 0:
            raise DataError("at least one image", "none", file=origin, column=f"x_{split}")
        for key, array in ((f"x_{split}", images), (f"y_{split}", labels)):
            # a float array would be cast to uint8 unchecked: 0..1 pixels to blank images
            if array.dtype.kind not in "iu":  # numpy counts timedelta64 as an integer
                raise DataError("integers (MNIST's own are uint8)", f"dtype {array.dtype}",
                                file=origin, column=key)
        if images.min() < 0 or images.max() > 255:
            raise DataError("pixels 0..255", f"{images.min()}..{images.max()}", file=origin,
                            column=f"x_{split}")
        if labels.min() < 0 or labels.max() > NUM_CLASSES - 1:
            raise DataError("labels 0..9", f"{labels.min()}..{labels.max()}", file=origin,
                            column=f"y_{split}")


def _read_npz(npz_path: str | Path) -> dict[str, np.ndarray]:
    """The MNIST arrays a local mnist.npz holds (those of MNIST_KEYS it has); DataError for
    a file that is not a readable npz archive."""
    origin = str(npz_path)
    if not is_file(npz_path):
        raise DataError("an mnist.npz file", not_a_file(Path(npz_path)), file=origin)
    try:
        with open(npz_path, "rb") as handle:  # is_zipfile(a path) calls a failed open "no zip"
            is_zip = zipfile.is_zipfile(handle)
    except OSError as error:
        raise DataError("a readable file", f"{error_name(error)}: {error}",
                        file=origin) from None
    if not is_zip:
        raise DataError("an npz archive (a zip of .npy arrays)",
                        "no zip directory (not a zip, or one cut short)", file=origin)
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            # only the four: another member may be an object array or a huge one
            arrays = {key: npz[key] for key in npz.files if key in MNIST_KEYS}
    # A damaged archive; RuntimeError: a member marked encrypted; NotImplementedError: a
    # compression zipfile lacks; OverflowError and TypeError: a .npy header whose shape
    # holds a number past 64 bits or a True; TokenError: one numpy's fallback parser
    # cannot tokenize (a bracket left open).
    except (*READ_ERRORS, ValueError, zipfile.BadZipFile, RuntimeError,
            NotImplementedError, OverflowError, TypeError, tokenize.TokenError) as error:
        raise DataError("an npz archive", f"{error_name(error)}: {error}",
                        file=origin) from None
    except MemoryError as error:  # a .npy header claiming a huge shape (numpy's subclass)
        raise DataError("an npz archive", f"MemoryError: {error}", file=origin) from None
    return arrays


def load_keras_mnist(npz_path: str | Path | None = None) -> Digits:
    """MNIST's 60k train and 10k labelled test images, from keras.datasets or a local npz."""
    if npz_path is None:
        import keras

        origin = "keras.datasets.mnist"
        try:
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        except Exception as error:  # the download fails in many ways; all mean "no data"
            if interrupt := ctrl_c_inside(error):
                raise interrupt from None
            raise DataError("the MNIST download", f"{type(error).__name__}: {error}",
                            file=origin, hint="pass --keras-npz FILE with a local mnist.npz "
                            "or use --source kaggle") from None
        arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    else:
        origin = str(npz_path)
        arrays = _read_npz(npz_path)
    _check_mnist_arrays(arrays, origin)
    x_test = arrays["x_test"].astype(np.uint8)[..., None]
    return Digits(x_train=arrays["x_train"].astype(np.uint8)[..., None],
                  y_train=arrays["y_train"].astype(np.int64), x_test=x_test,
                  test_ids=np.arange(1, len(x_test) + 1),
                  y_test=arrays["y_test"].astype(np.int64), source="keras",
                  train_path=origin, test_path=origin)


def check_source_flags(config: Config) -> None:
    """DataError for a data flag the source ignores: --keras-npz without --source keras
    (the CSVs would load in its place), --data-dir with it (MNIST would load, not the
    folder's CSVs)."""
    if config.keras_npz and config.source != "keras":
        raise DataError("--source keras with --keras-npz", f"--source {config.source}",
                        column="--keras-npz")
    if config.data_dir and config.source == "keras":
        raise DataError("--source kaggle with --data-dir", "--source keras", column="--data-dir",
                        hint="--keras-npz FILE reads MNIST from a local file")


def load_digits(config: Config) -> Digits:
    """The data the config asks for: --source kaggle (CSVs) or keras (MNIST)."""
    check_source_flags(config)
    if config.source == "keras":
        return load_keras_mnist(config.keras_npz)
    return load_kaggle(config.data_dir)


def load_train_labels(config: Config) -> np.ndarray:
    """The labelled images' labels alone (train.csv's, validated, or MNIST's y_train), for a
    command that scores saved predictions (compare): test.csv is neither read nor needed."""
    check_source_flags(config)
    if config.source == "keras":
        return load_keras_mnist(config.keras_npz).y_train
    train_path = find_csv(find_data_dir(config.data_dir), "train")
    _, labels = read_digits_csv(train_path, with_labels=True)
    return labels


def subsample_rows(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The row numbers of a stratified subset of ``size`` images (every row when size is 0
    or too large: a stratified split leaves at least one image of each digit out)."""
    rows = np.arange(len(y))
    if size <= 0 or size > len(y) - len(np.unique(y)):
        return rows
    return train_test_split(rows, train_size=size, stratify=y, random_state=seed)[0]


def fold_splits(y: np.ndarray, folds: int, seed: int,
                repeats: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (train, held-out) index pairs, the same for every member: `folds` of
    them per repeat, each repeat on a new shuffle, so every image is held out once a repeat.

    A repeat's splits do not depend on how many repeats follow it: a run with more
    repeats reuses the fold models of one with fewer.
    """
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def split_train_val(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int,
                    *also: np.ndarray) -> list[np.ndarray]:
    """A stratified train/validation split: (x_train, x_val, y_train, y_val), then each of
    ``also`` (arrays of the same rows) split the same way."""
    return train_test_split(x, y, *also, test_size=val_fraction, stratify=y, random_state=seed)


def _check_images_per_digit(y: np.ndarray, needed: int, purpose: str, file: str,
                            among: str = "") -> None:
    """Raise DataError naming the digit with the fewest images when it has fewer than needed."""
    counts = np.bincount(y, minlength=NUM_CLASSES)
    digit = int(np.argmin(counts))
    if counts[digit] >= needed:
        return
    found = f"{counts[digit]} of digit {digit}" if counts[digit] else f"no image of digit {digit}"
    raise DataError(f"at least {needed} images of every digit for {purpose}", found + among,
                    file=file)


def plan_training_images(digits: Digits, size: int, seed: int, needed: int, purpose: str,
                         size_flag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stratified subsample of ``size`` labelled images (0: all) that a run trains on,
    as (images, labels, their row numbers among the labelled images),
    checked to hold ``needed`` images of every digit, as ``purpose`` needs (stratified
    folds, a stratified hold-out): too few is a DataError naming the digit, its count and
    the flag that sets the subsample."""
    x, y, file = digits.x_train, digits.y_train, digits.train_path
    _check_images_per_digit(y, needed, purpose, file)
    if size <= 0 or size >= len(y):
        return x, y, np.arange(len(y))
    if size < needed * NUM_CLASSES:
        raise DataError(f"0 (every image) or at least {needed * NUM_CLASSES}: {needed} of each "
                        f"digit for {purpose}", str(size), column=size_flag)
    rows = subsample_rows(y, size, seed)
    x, y = x[rows], y[rows]
    _check_images_per_digit(y, needed, purpose, file, among=f" in a subsample of {size} "
                            f"({size_flag})")
    return x, y, rows


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """A short hash of the training images and labels."""
    digest = hashlib.sha1(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()[:12]


def run_data_fingerprints(digits: Digits) -> dict[str, str]:
    """The training images and labels and the test images a run used, each as a short
    hash: what blend and compare check runs against (run_info.data)."""
    return {"train": data_fingerprint(digits.x_train, digits.y_train),
            "test": data_fingerprint(digits.x_test, np.zeros(0, np.uint8))}


def load_fold_digits(config: Config, folds: int | None = None,
                     folds_from: str = "--folds") -> Digits:
    """load_digits(config) with its training images cut to --train-samples and checked to
    fill the folds the run trains (config.folds unless given, as a budget's plan sets
    them: folds_from says which) as stratified folds: what k-fold training (submit,
    fidelity) trains on."""
    folds = folds or config.folds
    digits = load_digits(config)
    if config.train_samples:  # else the training images are all of them, fingerprinted later
        digits.labelled_fingerprint = data_fingerprint(digits.x_train, digits.y_train)
    digits.x_train, digits.y_train, digits.train_rows = plan_training_images(
        digits, config.train_samples, config.seed, needed=folds,
        purpose=f"{folds} stratified folds ({folds_from})", size_flag="--train-samples")
    return digits
