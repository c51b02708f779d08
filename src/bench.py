"""``python -m src.bench``: how fast the package trains, predicts and loads, beside notebooks.

Every speed row is one timed section after a warm-up, reported as images per
wall-clock second (what you wait) and images per CPU second of this process
(all threads: the work done, whoever else runs). Both move when other work
shares the machine, so the figures to compare are the ratios within one run:
the package and the notebook way (src.notebook_way) run in one process on the
same CNN and the same augmentation, and the ratio is package over notebook.
The tables are printed as Markdown and written, with a JSON of every figure, to
``<artifacts>/bench/bench-<UTC time>.md`` and ``.json``, never over earlier ones.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from src.bench_runs import (
    machine_info,
    machine_line,
    read_run_metrics,
    run_profile,
    write_new_files,
)
from src.config import (
    Config,
    add_override,
    build_parser,
    config_from_args,
    run_cli,
)
from src.data import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    Digits,
    find_csv,
    find_data_dir,
    load_kaggle,
    load_keras_mnist,
)
from src.ensemble import TTA_SHIFTS, predict_probs
from src.errors import DataError
from src.model import (
    DEFAULT_HPARAMS,
    RandomAffine,
    fit,
    make_dataset,
)
from src.notebook_way import (
    NotebookBatches,
    compile_like,
    float_input_model,
    package_model,
    read_like_a_notebook,
)
from src.util import format_duration

# Images per timed row; a GPU needs more of them for a stable figure.
BENCH_IMAGES = {"smoke": 256, "quick": 8192, "full": 32768}
WARMUP_BATCHES = 4
PREDICT_BATCH = 1024  # what src.model.predict uses
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
    clock = BatchClock()
    model.fit(batches(images + WARMUP_BATCHES * batch_size), epochs=1, verbose=0,
              shuffle=False, callbacks=[clock])
    (wall, cpu), (wall_end, cpu_end) = clock.readings[WARMUP_BATCHES - 1], clock.readings[-1]
    return Measurement(task, way, images, wall_end - wall, cpu_end - cpu)


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
                             seed: int) -> Measurement:
    model = package_model()
    batches = package_batches(x, y, batch_size, seed)
    _start_together["barrier"].wait()  # every worker's timed stretch overlaps the others'
    return time_training(model, batches, images, batch_size, "worker")


def time_parallel_training(x: np.ndarray, y: np.ndarray, batch_size: int, images: int,
                           seed: int, workers: int, way: str, task: str) -> Measurement:
    """Train img/s of `workers` processes training at once, as ``python -m src.submit
    --jobs`` trains fold models: all start together, each times its steady state as
    time_training does, and the row is every worker's images over the slowest one's
    wall time."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_bench_worker,
                             initargs=(context.Barrier(workers),)) as pool:
        futures = [pool.submit(_time_training_in_worker, x, y, batch_size, images, seed)
                   for _ in range(workers)]
        parts = [future.result() for future in futures]
    return Measurement(task, way, sum(p.images for p in parts),
                       max(p.wall_seconds for p in parts), sum(p.cpu_seconds for p in parts))


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


# ---------------------------------------------------------------- output


def _cells(row: Measurement, rows: list[Measurement]) -> list[str]:
    if row.failure:
        return [row.task, f"{row.way}: {row.failure}", "", "", "", "", "", ""]
    wall_rate, cpu_rate = row.rates()
    ratio = ratios(row, rows)
    ratio_cells = ([f"{ratio[0]:.2f}×", f"{ratio[1]:.2f}×"] if ratio else
                   ["baseline" if any(r.compared_to == row.way for r in rows) else "", ""])
    return [row.task, row.way, f"{row.images:,}", f"{row.wall_seconds:.2f}",
            f"{wall_rate:,.0f}", f"{cpu_rate:,.0f}", *ratio_cells]


def markdown_table(rows: list[Measurement]) -> str:
    """The rows as a Markdown table; ratios are this row's images/s over its baseline's."""
    header = ["Task", "Way", "Images", "Wall s", "Images/s", "Images per CPU s", "Ratio",
              "Ratio (CPU)"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(_cells(row, rows)) + " |" for row in rows]
    return "\n".join(lines)


def profile_lines(result: dict) -> list[str]:
    """The quick-profile figures (or why there are none) as Markdown lines."""
    if "note" in result:
        return [f"- {result['note']}"]
    lines = [f"- ensemble CV (out-of-fold) accuracy: {result['accuracy']:.2%} "
             f"(profile {result['profile']})",
             f"- python -m src.submit wall time: {format_duration(result['submit_seconds'])}"]
    if "tune_wall_seconds" in result:
        lines.append(f"- python -m src.tune wall time: "
                     f"{format_duration(result['tune_wall_seconds'])}")
    return [*lines, f"- from {result['source']}"]


def render(report: dict) -> str:
    """The whole benchmark as Markdown."""
    rows = [Measurement(**row) for row in report["rows"]]
    levers = [Measurement(**row) for row in report["levers"]]
    parts = [f"## python -m src.bench, {report['utc']}", "",
             f"Machine: {machine_line(report['machine'])}", "",
             f"Profile {report['profile']}: batch {report['batch_size']}, ensemble of "
             f"{report['top_k']}, about {report['images']:,} images per timed row, each after "
             f"an untimed warm-up; images from {report['images_from']}.", "",
             markdown_table(rows)]
    if levers:
        parts += ["", "Levers: package training, ratio against the package at batch "
                  f"{report['batch_size']}.", "", markdown_table(levers)]
    parts += ["", "End to end:", "", *profile_lines(report["profile_run"])]
    if report["notes"]:
        parts += ["", *(f"- {note}" for note in report["notes"])]
    parts += ["", "Images/s is what you wait; Images per CPU s divides by this process's CPU "
              "seconds (all threads). Both move when other work shares the machine: compare the "
              "ratios within one run."]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    """The command line of python -m src.bench: flags and a validated Config."""
    parser = build_parser("python -m src.bench", "Time training, prediction and CSV loading "
                          "against the way popular notebooks do them.")
    bench = parser.add_argument_group("benchmark")
    add_override(bench, "batch_size", "training batch size")
    add_override(bench, "top_k", "models in the timed ensemble")
    bench.add_argument("--bench-images", type=int, metavar="N",
                       help="images per timed row (default: from --profile: "
                       + ", ".join(f"{k} {v}" for k, v in BENCH_IMAGES.items()) + ")")
    bench.add_argument("--levers", action="store_true",
                       help="also time batch sizes, XLA, mixed precision, parallel workers "
                       "and tf.data augmentation")
    bench.add_argument("--run-quick", action="store_true",
                       help="run python -m src.tune and python -m src.submit with --profile "
                       "(quick by default) in a fresh folder under <artifacts>/bench and time "
                       "them, instead of reading <submissions>/latest/metrics.json")
    bench.add_argument("--curve", nargs="*", metavar="MINUTES",
                       help="instead of the speed rows: OOF accuracy against wall-clock "
                       "minutes, python -m src.submit --minutes M for each budget (default: "
                       "8 15 30) beside two reference recipes (src.curve); it trains for real")
    bench.add_argument("--recipe-epochs", type=int, metavar="N",
                       help="with --curve: train each reference recipe N epochs instead of "
                       "its author's number")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.bench_images is not None and args.bench_images < 1:
        raise DataError("an integer >= 1", str(args.bench_images), column="--bench-images")
    return args, config


def random_digits(seed: int, count: int = 1000) -> Digits:
    """Random pixels and labels in place of the data: speed does not depend on content."""
    rng = np.random.default_rng(seed)
    return Digits(x_train=rng.integers(0, 256, (count, *IMAGE_SHAPE), dtype=np.uint8),
                  y_train=rng.integers(0, NUM_CLASSES, count),
                  x_test=rng.integers(0, 256, (count, *IMAGE_SHAPE), dtype=np.uint8),
                  test_ids=np.arange(1, count + 1), source="random",
                  train_path="random pixels (no data found)")


def load_bench_data(config: Config, notes: list[str]) -> tuple[Digits, list[Measurement]]:
    """The data to time on, with the CSV load rows when the Kaggle CSVs are found; random
    pixels, and a note, when they are not (a --data-dir without them is an error)."""
    if config.source == "keras":
        notes.append("load CSV rows skipped: --source keras reads no CSV")
        return load_keras_mnist(config.keras_npz), []
    try:
        folder = find_data_dir(config.data_dir)
    except DataError:
        if config.data_dir:
            raise
        notes.append("load CSV rows skipped: no train.csv found (pass --data-dir DIR)")
        return random_digits(config.seed), []
    rows, digits = csv_rows(folder)
    return digits, rows


def repeat_to(x: np.ndarray, count: int) -> np.ndarray:
    """The first count items of x, cycling through x as often as needed."""
    return x[np.arange(count) % len(x)]


def bench_command(argv: Sequence[str] | None) -> str:
    """The command line this bench runs, for its report."""
    return "python -m src.bench " + shlex.join(sys.argv[1:] if argv is None else argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Time the package against the notebook way; print the table and write it with its JSON.
    With --curve, measure OOF accuracy against minutes instead (src.curve)."""
    args, config = parse_args(argv)
    if args.curve is not None:
        from src import curve  # it trains for real: imported only when asked for

        return curve.run_curve(config, args.curve, args.recipe_epochs, bench_command(argv))
    started = datetime.now(timezone.utc)
    keras.utils.set_random_seed(config.seed)
    images = args.bench_images or BENCH_IMAGES[config.profile]
    notes: list[str] = []
    digits, load_rows = load_bench_data(config, notes)
    most = training_images_needed(images, (*LEVER_BATCH_SIZES, config.batch_size))
    x_train, y_train = repeat_to(digits.x_train, most), repeat_to(digits.y_train, most)
    print(f"timing training on {images:,} images ...", flush=True)
    rows = training_rows(x_train, y_train, config.batch_size, images, config.seed)
    print(f"timing prediction on {images:,} images ...", flush=True)
    rows += prediction_rows(repeat_to(digits.x_test, images), config.top_k)
    rows += load_rows
    levers = []
    if args.levers:
        print("timing the levers ...", flush=True)
        levers = lever_rows(x_train, y_train, config.batch_size, images, config.seed)
    bench_dir = Path(config.artifacts_dir) / "bench"
    stamp = started.strftime("%Y%m%d-%H%M%S")
    profile_run = (run_profile(config, bench_dir / f"run-{stamp}-{config.profile}")
                   if args.run_quick else
                   read_run_metrics(Path(config.submissions_dir) / "latest" / "metrics.json"))
    report = {"utc": started.strftime("%Y-%m-%d %H:%M UTC"),
              "command": bench_command(argv),
              "profile": config.profile, "batch_size": config.batch_size, "top_k": config.top_k,
              "images": images, "images_from": digits.train_path, "machine": machine_info(),
              "rows": [asdict(row) for row in rows], "levers": [asdict(row) for row in levers],
              "profile_run": profile_run, "notes": notes}
    text = render(report)
    print(text)
    md, js = write_new_files(bench_dir, f"bench-{stamp}",
                             {".md": text, ".json": json.dumps(report, indent=2) + "\n"})
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
