"""The timed sections of ``python -m src.bench``: training (steady state and a whole fit),
prediction, CSV loading and the training levers, each a Measurement of images, wall-clock
seconds and CPU seconds of this process.
"""

from __future__ import annotations

import multiprocessing
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from src.data import Digits, find_csv, load_kaggle
from src.model import DEFAULT_HPARAMS, PREDICT_BATCH, RandomAffine, fit, make_dataset
from src.notebook_way import (
    NotebookBatches,
    compile_like,
    float_input_model,
    package_model,
    read_like_a_notebook,
)
from src.predict import TTA_SHIFTS, predict_probs

WARMUP_BATCHES = 4
LEVER_BATCH_SIZES = (64, 128, 256)


@dataclass
class Measurement:
    """One timed section: what ran, how many images, its wall-clock and CPU seconds."""

    task: str
    way: str
    images: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    compared_to: str = ""  # the way of the row the ratio is against
    failure: str = ""  # why a lever could not run on this machine

    def rates(self) -> tuple[float, float]:
        """Images per wall-clock second and per CPU second."""
        return self.images / self.wall_seconds, self.images / self.cpu_seconds


def timed(work: Callable[[], object]) -> tuple[object, float, float]:
    """work's result, with the wall-clock and process CPU seconds it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def ratios(row: Measurement, rows: list[Measurement]) -> tuple[float, float] | None:
    """(wall, CPU) images/s of row over those of the row it is compared to."""
    reference = next((r for r in rows if r.way == row.compared_to and not r.failure), None)
    if reference is None or row.failure:
        return None
    (wall, cpu), (ref_wall, ref_cpu) = row.rates(), reference.rates()
    return wall / ref_wall, cpu / ref_cpu


# ---------------------------------------------------------------- measurements


class BatchClock(keras.callbacks.Callback):
    """Wall-clock and CPU readings at the end of every training batch."""

    def __init__(self):
        super().__init__()
        self.readings: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.readings.append((time.perf_counter(), time.process_time()))


def time_training(model: keras.Model, batches: Callable[[int], object], images: int,
                  batch_size: int, way: str, task: str = "train") -> Measurement:
    """Train img/s in the steady state: one epoch of WARMUP_BATCHES batches then `images`
    (whole batches), timed from the end of the warm-up to the end of the last batch.

    Tracing and fit's start-up and tear-down stay out: a one-epoch fit over tf.data can
    spend seconds returning, which a real, many-epoch fit pays once, not per epoch.
    batches(n) is the input pipeline over the first n images.
    """
    (wall, cpu), (wall_end, cpu_end) = _steady_state(model, batches, images, batch_size)
    return Measurement(task, way, images, wall_end - wall, cpu_end - cpu)


def _steady_state(model: keras.Model, batches: Callable[[int], object], images: int,
                  batch_size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Train as time_training says; the (perf_counter, process CPU) readings at the start
    and the end of its timed stretch."""
    clock = BatchClock()
    model.fit(batches(images + WARMUP_BATCHES * batch_size), epochs=1, verbose=0,
              shuffle=False, callbacks=[clock])
    return clock.readings[WARMUP_BATCHES - 1], clock.readings[-1]


def package_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """batches(n) for the package pipeline: uint8 arrays through src.model.make_dataset."""
    return lambda n: make_dataset(x[:n], y[:n], batch_size, shuffle=True, seed=seed)


def mapped_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, strength: float):
    """batches(n) with the augmentation in a tf.data map (scaled to [0, 1] there) instead."""
    augment = RandomAffine(strength, seed=seed)

    def scale_and_augment(images, labels):
        return augment(tf.cast(images, tf.float32) / 255, training=True), labels

    return lambda n: (make_dataset(x[:n], y[:n], batch_size, shuffle=True, seed=seed)
                      .map(scale_and_augment, num_parallel_calls=tf.data.AUTOTUNE)
                      .prefetch(tf.data.AUTOTUNE))


def whole_batches(images: int, batch_size: int) -> int:
    """images rounded down to whole batches (at least one): a last, smaller batch would retrace."""
    return max(1, images // batch_size) * batch_size


def training_images_needed(images: int, batch_sizes: Sequence[int]) -> int:
    """Images the longest training row reads: its whole batches plus the warm-up batches."""
    return max(whole_batches(images, size) + WARMUP_BATCHES * size for size in batch_sizes)


def training_rows(x: np.ndarray, y: np.ndarray, batch_size: int, images: int,
                  seed: int) -> list[Measurement]:
    """Train img/s of the package pipeline and of the notebook way, same CNN and augmentation."""
    images = whole_batches(images, batch_size)
    strength = DEFAULT_HPARAMS["augment"]
    package_way = "package: uint8 → tf.data → fit, augmentation in the graph"
    notebook_way = "notebook: float32, SciPy augmentation per image → PyDataset → fit"
    package = time_training(package_model(), package_batches(x, y, batch_size, seed), images,
                            batch_size, package_way)
    scaled = x.astype(np.float32) / 255  # the notebook scales once, before training
    notebook = time_training(
        float_input_model(),
        lambda n: NotebookBatches(scaled[:n], y[:n], batch_size, strength, seed),
        images, batch_size, notebook_way)
    package.compared_to = notebook_way
    whole = time_whole_fit(x, y, batch_size, images, seed)
    whole.compared_to = package_way
    return [package, whole, notebook]


def time_whole_fit(x: np.ndarray, y: np.ndarray, batch_size: int, images: int,
                   seed: int) -> Measurement:
    """Train img/s of src.model.fit as a fold calls it, 6 epochs with validation, timed from
    the call to its return: start-up, validation and tear-down all count. Against the
    steady-state row it shows what a fit pays around its batches (tf.data's autotune
    thread once made that 10-25 s a fit, README)."""
    model = package_model()
    held = max(1, images // 4)  # validation on training images: only its time matters here
    _, wall, cpu = timed(lambda: fit(model, x[:images], y[:images], x[:held], y[:held],
                                     epochs=6, batch_size=batch_size, seed=seed,
                                     verbose=0))
    return Measurement("train", "package: src.model.fit, 6 epochs + validation, call to "
                       "return", 6 * images, wall, cpu)


def prediction_rows(x: np.ndarray, models: int) -> list[Measurement]:
    """Predict img/s of one package model, the ensemble, the ensemble with TTA, and the
    notebook way (one model, model.predict on a float32 array with its default batch)."""
    ensemble = [package_model() for _ in range(models)]
    scaled = x.astype(np.float32) / 255
    notebook = float_input_model()
    notebook_way = "notebook: 1 model, model.predict(float32 array), batch 32"
    for model in ensemble:
        predict_probs(model, x[:PREDICT_BATCH], tta=False)  # warm-up: traces predict
    notebook.predict(scaled[:PREDICT_BATCH], verbose=0)

    def ensemble_probs(tta: bool):
        return np.mean([predict_probs(model, x, tta) for model in ensemble], axis=0)

    work = {
        "package: 1 model, tf.data batches of 1024":
            lambda: predict_probs(ensemble[0], x, tta=False),
        f"package: ensemble of {models}, no TTA": lambda: ensemble_probs(tta=False),
        f"package: ensemble of {models}, TTA ({len(TTA_SHIFTS)} passes each)":
            lambda: ensemble_probs(tta=True),
        notebook_way: lambda: notebook.predict(scaled, verbose=0),
    }
    rows = []
    for way, run in work.items():
        _, wall, cpu = timed(run)
        rows.append(Measurement("predict", way, len(x), wall, cpu,
                                "" if way == notebook_way else notebook_way))
    return rows


def csv_rows(folder: Path) -> tuple[list[Measurement], Digits]:
    """Load time of train.csv + test.csv, the package's validated way and the notebook way;
    also the loaded Digits."""
    train_path, test_path = find_csv(folder, "train"), find_csv(folder, "test")
    for path in (train_path, test_path):
        if path is not None:  # one not there: load_kaggle below says so in one line
            path.read_bytes()  # into the page cache, so the first reader is not the only cold one
    digits, wall, cpu = timed(lambda: load_kaggle(folder))
    images = len(digits.x_train) + len(digits.x_test)
    notebook_way = "notebook: pd.read_csv defaults, .values → float32"
    package = Measurement("load CSV", "package: load_kaggle, validated, uint8", images, wall,
                          cpu, notebook_way)
    _, wall, cpu = timed(lambda: read_like_a_notebook(train_path, test_path))
    return [package, Measurement("load CSV", notebook_way, images, wall, cpu)], digits


_start_together: dict[str, object] = {}


def _start_bench_worker(barrier) -> None:
    _start_together["barrier"] = barrier


def _time_training_in_worker(x: np.ndarray, y: np.ndarray, batch_size: int, images: int,
                             seed: int) -> tuple[tuple[float, float], tuple[float, float]]:
    model = package_model()
    batches = package_batches(x, y, batch_size, seed)
    _start_together["barrier"].wait()  # every worker's timed stretch overlaps the others'
    return _steady_state(model, batches, images, batch_size)


def time_parallel_training(x: np.ndarray, y: np.ndarray, batch_size: int, images: int,
                           seed: int, workers: int, way: str, task: str) -> Measurement:
    """Train img/s of `workers` processes training at once, as ``python -m src.submit
    --jobs`` trains fold models: all start together, each times its steady state as
    time_training does, and the row is every worker's images over the span from the first
    stretch's start to the last one's end (perf_counter is one clock for the machine's
    processes): a worker's own stretch leaves out the time another trains alone."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_bench_worker,
                             initargs=(context.Barrier(workers),)) as pool:
        futures = [pool.submit(_time_training_in_worker, x, y, batch_size, images, seed)
                   for _ in range(workers)]
        stretches = [future.result() for future in futures]
    return together(task, way, images, stretches)


def together(task: str, way: str, images: int,
             stretches: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> Measurement:
    """The Measurement of workers that each trained `images` in its stretch ((wall, CPU) at
    its start, at its end): all their images over the span of all the stretches."""
    span = max(end for _, (end, _) in stretches) - min(start for (start, _), _ in stretches)
    cpu = sum(cpu_end - cpu_start for (_, cpu_start), (_, cpu_end) in stretches)
    return Measurement(task, way, images * len(stretches), span, cpu)


def lever(task: str, way: str, measure: Callable[[], Measurement]) -> Measurement:
    """measure(), or a row saying why this lever cannot run here."""
    try:
        return measure()
    except tf.errors.InvalidArgumentError as error:  # e.g. an op XLA cannot compile
        found = re.search(r"No registered '(\w+)' OpKernel for (\w+)", str(error))
        why = (f"no {found.group(1)} kernel for {found.group(2)}" if found
               else str(error).strip().splitlines()[0])
        return Measurement(task, way, failure=f"failed: {why}")


def lever_rows(x: np.ndarray, y: np.ndarray, batch_size: int, images: int,
               seed: int) -> list[Measurement]:
    """Train img/s of the package pipeline under each lever: batch size, XLA, mixed precision,
    parallel worker processes, augmentation in the tf.data pipeline instead of the model."""
    task, strength = "train (lever)", DEFAULT_HPARAMS["augment"]
    baseline = f"batch {batch_size}"

    def run(way, model, batches, batch=batch_size):
        return lever(task, way, lambda: time_training(
            model, batches, whole_batches(images, batch), batch, way, task))

    rows = [run(f"batch {size}", package_model(), package_batches(x, y, size, seed), size)
            for size in sorted({*LEVER_BATCH_SIZES, batch_size})]
    xla = package_model()
    compile_like(xla, xla, jit_compile=True)
    rows.append(run("XLA (jit_compile=True)", xla, package_batches(x, y, batch_size, seed)))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        rows.append(run("mixed_bfloat16 policy", package_model(),
                        package_batches(x, y, batch_size, seed)))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    workers = 2
    parallel = f"{workers} worker processes at once (--jobs {workers})"
    rows.append(lever(task, parallel, lambda: time_parallel_training(
        x, y, batch_size, whole_batches(images, batch_size), seed, workers, parallel, task)))
    mapped = mapped_batches(x, y, batch_size, seed, strength)
    rows.append(run("augmentation in a tf.data map", float_input_model(), mapped))
    rows.append(run("XLA + augmentation in a tf.data map", float_input_model(jit_compile=True),
                    mapped))
    for row in rows:
        if row.way != baseline:
            row.compared_to = baseline
    return rows
