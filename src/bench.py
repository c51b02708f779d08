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
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from src.bench_runs import (
    machine_info,
    machine_line,
    new_folder,
    run_profile,
    run_summary,
    write_new_files,
)
from src.bench_timing import (
    LEVER_BATCH_SIZES,
    Measurement,
    csv_rows,
    lever_rows,
    prediction_rows,
    ratios,
    training_images_needed,
    training_rows,
)
from src.config import (
    Config,
    add_override,
    build_parser,
    check_integer,
    config_from_args,
    run_cli,
)
from src.data import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    Digits,
    check_source_flags,
    find_data_dir,
    load_keras_mnist,
)
from src.errors import DataError
from src.run_folders import latest_run
from src.util import check_writable_folder, command_line, format_accuracy, format_duration

# Images per timed row; a GPU needs more of them for a stable figure.
BENCH_IMAGES = {"smoke": 256, "quick": 8192, "full": 32768}
MAX_BENCH_IMAGES = 1_000_000


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
    # From the shell where the bench ran it (as the search's); else its own metrics.json's,
    # which starts after the imports and ends before the files are written.
    submit_seconds = result.get("submit_wall_seconds", result["submit_seconds"])
    lines = [f"- ensemble CV (out-of-fold) accuracy: {format_accuracy(result['accuracy'])} "
             f"(profile {result['profile']})",
             f"- python -m src.submit wall time: {format_duration(submit_seconds)}"
             if result["profile"] != "blend" else  # its runs' minutes and its own
             f"- python -m src.blend, its runs' time and its own: "
             f"{format_duration(submit_seconds)}"]
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
                          "against the way popular notebooks do them.", download=False)
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
    if args.bench_images is not None:  # a million images: 0.8 GB, 3 GB as float32
        check_integer("--bench-images", args.bench_images, 1, MAX_BENCH_IMAGES)
    check_source_flags(config)  # before any timing, not in the runs it starts
    if args.recipe_epochs is not None and args.curve is None:  # else ignored without a word
        raise DataError("--curve with --recipe-epochs", "no --curve", column="--recipe-epochs")
    speed_flags = {"--levers": args.levers, "--run-quick": args.run_quick,
                   "--bench-images": args.bench_images is not None,
                   "--batch-size": "batch_size" in config.flags_given,
                   "--top-k": "top_k" in config.flags_given}
    for flag, given in speed_flags.items():  # the speed rows' flags: a curve has none
        if given and args.curve is not None:
            raise DataError(f"{flag} without --curve", "both", column=flag)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Time the package against the notebook way; print the table and write it with its JSON.
    With --curve, measure OOF accuracy against minutes instead (src.curve)."""
    args, config = parse_args(argv)
    command = command_line("src.bench", argv)
    bench_dir = Path(config.artifacts_dir) / "bench"
    check_writable_folder(bench_dir)  # before the timings (or the curve's trainings)
    notes: list[str] = []
    if "submissions_dir" in config.flags_given and (args.curve is not None or args.run_quick):
        notes.append(f"--submissions-dir is not used: the runs of --curve and --run-quick "
                     f"publish in a fresh folder under {bench_dir}")
    if args.curve is not None:
        from src import curve  # it trains for real: imported only when asked for

        for note in notes:
            print(f"note: {note}", flush=True)
        return curve.run_curve(config, args.curve, args.recipe_epochs, command)
    started = datetime.now(UTC)
    keras.utils.set_random_seed(config.seed)
    images = args.bench_images or BENCH_IMAGES[config.profile]
    if "precision" in config.flags_given:  # for the stages --run-quick runs
        notes.append(f"--precision {config.precision} applies to --run-quick only: the speed "
                     "rows are float32, as the notebook way trains (the levers time "
                     "mixed_bfloat16 beside it)")
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
    stamp = started.strftime("%Y%m%d-%H%M%S")
    profile_run = (run_profile(config, new_folder(bench_dir / f"run-{stamp}-{config.profile}"))
                   if args.run_quick else
                   run_summary(latest_run(Path(config.submissions_dir))))
    report = {"utc": started.strftime("%Y-%m-%d %H:%M UTC"),
              "command": command,
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
