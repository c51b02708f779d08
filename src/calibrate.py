"""How fast this machine trains and predicts a network: the figures a plan is priced with.

A few seconds of training per network, timed after a warm-up, in the dtype
policy the run uses, give its training images per second (one process), its
prediction images per second (as a fold's validation and the ensemble predict:
batches of 1024) and the fixed seconds a fold model pays besides (building,
tracing training and prediction). src.plan scales these to the worker processes
of ``--jobs`` and to each stage's images. resolve_jobs says how many fold models
this machine trains at once, which the search's plan and submit's both need.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from src import model as cnn

CALIBRATION_SECONDS = 3.0  # timed training per network, after the warm-up batches
# A time-based search trial (src.tune --trial-seconds) times its own network first:
# shorter, since every trial pays it.
TRIAL_CALIBRATION_SECONDS = 1.5
WARMUP_BATCHES = 3  # the first batches trace the training step: never timed
CALIBRATION_IMAGES = 4096  # the images a calibration draws its batches from
PREDICT_IMAGES = 4096  # images in the timed prediction


def resolve_jobs(jobs: int) -> int:
    """How many fold models train at once: --jobs, or for 0 (auto) two on a CPU-only
    machine with two or more cores and one otherwise.

    On a 2-core CPU two processes train 1.1-1.3x the images per second of one
    (README, measured figures): one process leaves part of the second core idle
    between TensorFlow's small ops.
    """
    if jobs:
        return jobs
    import tensorflow as tf

    return 1 if tf.config.list_physical_devices("GPU") or available_cores() < 2 else 2


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> dict:
    """What a plan's speeds belong to: the CPU, the cores this process may use and the
    GPUs, so that a plan (and its timing) is not reused on another machine."""
    import tensorflow as tf

    return {"cpu": cpu_model(), "cores": available_cores(),
            "gpus": [device.name for device in tf.config.list_physical_devices("GPU")]}


@dataclass
class Speed:
    """One network's measured speed on this machine, in one process."""

    train_images_per_second: float
    predict_images_per_second: float
    startup_seconds: float  # per fold model: build, trace training and prediction

    def as_dict(self) -> dict:
        """The speed for the plan record."""
        return {"train_images_per_second": round(self.train_images_per_second, 1),
                "predict_images_per_second": round(self.predict_images_per_second, 1),
                "startup_seconds": round(self.startup_seconds, 2)}


class _StopAfter(keras.callbacks.Callback):
    """Note when the warm-up batches end and when each batch after them ends; stop
    training `seconds` after the warm-up."""

    def __init__(self, warmup_batches: int, seconds: float):
        super().__init__()
        self.warmup_batches = warmup_batches
        self.seconds = seconds
        self.batch_ends: list[float] = []  # the warm-up's end, then each timed batch's

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch + 1 >= self.warmup_batches:
            self.batch_ends.append(now)
            if len(self.batch_ends) > 1 and now - self.batch_ends[0] >= self.seconds:
                self.model.stop_training = True


def images_per_second(batch_ends: Sequence[float], batch_size: int) -> float:
    """Training images per second from the end times of consecutive batches, at the median
    batch's time: a stall of the machine in part of the timing does not price the whole
    run. (Timed as batches over seconds, one quick run's network read 34% slow, its plan
    left 8m47s of 26m23s unused, and nothing in a run gives unused minutes back; a plan
    priced a little fast is caught by src.budget.RoundPace's cuts. README, Prices.)"""
    return batch_size / float(np.median(np.diff(batch_ends)))


def training_speed(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
                   seconds: float, seed: int = 0) -> tuple[float, float]:
    """Train model on batches of x for `seconds` after WARMUP_BATCHES; return its training
    images per second and the time.perf_counter() at which the warm-up ended."""
    timer = _StopAfter(WARMUP_BATCHES, seconds)
    # Whole batches only: a pass that ends in a short batch (4,096 images in batches of
    # 3,000) would time that batch as a full one, and the median of two batches a pass
    # would price the run fast.
    images = -(-CALIBRATION_IMAGES // batch_size) * batch_size  # a whole number of batches
    sample = np.arange(images) % len(x)
    model.fit(cnn.make_dataset(x[sample], y[sample], batch_size, shuffle=True, seed=seed,
                               repeat=True),
              steps_per_epoch=10**9, epochs=1, callbacks=[timer], shuffle=False, verbose=0)
    return images_per_second(timer.batch_ends, batch_size), timer.batch_ends[0]


def measure_speed(hparams: dict, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                  batch_size: int, precision: str, seed: int = 0) -> Speed:
    """Train the network of hparams for CALIBRATION_SECONDS after a warm-up, then predict
    PREDICT_IMAGES test images; return its speed."""
    cnn.use_precision(precision)
    keras.utils.set_random_seed(seed)
    tick = time.perf_counter()
    model = cnn.build_cnn(cnn.hparams_from_dict(hparams))
    train_rate, warm_at = training_speed(model, x, y, batch_size, CALIBRATION_SECONDS, seed)
    startup = warm_at - tick - WARMUP_BATCHES * batch_size / train_rate
    images = x_test[np.arange(PREDICT_IMAGES) % len(x_test)]
    traced = time.perf_counter()
    cnn.predict(model, images[:cnn.PREDICT_BATCH])  # the first batch traces the prediction step
    first_batch = time.perf_counter() - traced
    predicted = time.perf_counter()
    cnn.predict(model, images)
    predict_rate = PREDICT_IMAGES / (time.perf_counter() - predicted)
    startup += first_batch - cnn.PREDICT_BATCH / predict_rate
    cnn.clear_session()
    return Speed(train_rate, predict_rate, max(startup, 0.0))
