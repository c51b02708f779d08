"""``python -m src.bench --curve``: out-of-fold accuracy against wall-clock minutes here.

Two kinds of point, scored the same way (accuracy of out-of-fold predictions
over every labelled image, with its 95% Wilson interval):

- the package's plans: ``python -m src.submit --minutes M`` for each budget M,
  in a subprocess, in a fresh folder (no search, no saved plan or model to
  reuse), with the bench's data, profile, seed and precision flags, timed from
  the shell; its accuracy, plan and what it trained come from its metrics.json;
- reference recipes (RECIPES), trained in this process one fold at a time as
  their authors wrote them: one network per fold of
  ``data.fold_splits(y, 3, seed)``, no TTA, in the dtype policy the package
  resolves, timed from the first fold's build to the last fold's prediction.

The table and a JSON of every figure go to ``<artifacts>/bench/curve-<UTC
time>.md`` and ``.json``, the figure to ``.png``, never over earlier files;
the plans' run folders stay under ``<artifacts>/bench/curve-<UTC time>/``, with
the points finished so far (POINTS_FILE): a killed curve, run again with the
same settings and the same package code, keeps them and measures the rest (a
point cut short is measured again from its start, in a fresh folder, as a timing
must be).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from src import bench_runs, figures
from src.config import MAX_MINUTES, Config, check_integer
from src.data import Digits, data_fingerprint, load_digits
from src.ensemble import training_code_version
from src.errors import DataError
from src.metrics import score
from src.model import use_precision
from src.pseudo_labels import PSEUDO_SUFFIX
from src.recipes import CURVE_FOLDS, RECIPES, Recipe, recipe_oof
from src.run_folders import latest_run
from src.util import (
    is_count,
    is_number,
    is_share,
    keras_verbosity,
    read_json,
    write_atomically,
)

DEFAULT_BUDGETS = (8.0, 15.0, 30.0)
POINTS_FILE = "points.json"  # in the curve's folder: its settings and every point finished
FINISHED = "finished"  # in POINTS_FILE once the curve's table is written: never resumed


def package_code_version(package_dir: Path = Path(__file__).parent) -> str:
    """A short hash of every module of the package and of the TensorFlow and Keras versions
    that run it: a curve's plans run the whole of src.submit (planner, pacing, training)
    and its recipes src.recipes, so a change to any module starts a new curve."""
    digest = hashlib.sha1(training_code_version().encode())  # the library versions
    for module in sorted(package_dir.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()[:10]


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


def _epochs_trained(info: dict) -> str:
    """The first round's epochs per fold model: "22", or "5-22" where a budget cut some."""
    cut = info.get("epochs_by_member")
    if not cut:
        return str(info["epochs"])
    epochs = [e for name, each in cut.items() if not name.endswith(PSEUDO_SUFFIX) for e in each]
    low, high = min(epochs), max(epochs)
    return f"{low}-{high}" if low != high else str(low)


def plan_details(metrics: dict) -> dict:
    """The score, the plan and what a run trained, from its metrics.json."""
    info, ensemble = metrics["run_info"], metrics["ensemble"]
    pseudo = (f", pseudo-labelled round {info['pseudo_epochs']} epochs"
              if info.get("pseudo_epochs") else "")
    repeats = info.get("repeats", 1)
    drawn = f" x {repeats} repeats" if repeats > 1 else ""
    trained = (f"{' + '.join(metrics['models'])} x {info['folds']} folds{drawn} x "
               f"{_epochs_trained(info)} epochs{', TTA' if info['tta'] else ''}{pseudo}, "
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
    run = bench_runs.run_summary(latest_run(folder / "submissions"), plan_details)
    if "note" in run:
        point.note = run["note"]
        return point
    for name in ("accuracy", "ci95_low", "ci95_high", "errors", "total", "trained", "plan"):
        setattr(point, name, run[name])
    return point


def recipe_point(recipe: Recipe, digits: Digits, seed: int, epochs: int | None,
                 policy: str) -> Point:
    """Train and score the recipe (its author's epochs unless epochs is given) and time it."""
    epochs = epochs or recipe.epochs
    tick = time.perf_counter()
    probs = recipe_oof(recipe, digits.x_train, digits.y_train, seed, epochs, keras_verbosity())
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
        if f"{minutes:g}" in {f"{budget:g}" for budget in budgets}:  # one plan's name twice
            raise DataError("each budget once", f"{text!r} again", column="--curve")
        budgets.append(minutes)
    return budgets or list(DEFAULT_BUDGETS)


def check_recipe_epochs(epochs: int | None) -> None:
    """DataError unless --recipe-epochs is absent or an integer 1..MAX_INTEGER."""
    if epochs is not None:
        check_integer("--recipe-epochs", epochs, 1)


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


# What each field of a kept point must hold: the table, JSON and figure print them all.
POINT_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "name": (lambda value: isinstance(value, str), "text"),
    "what": (lambda value: isinstance(value, str), "text"),
    "wall_seconds": (lambda value: is_number(value, 0), "seconds >= 0"),
    "trained": (lambda value: isinstance(value, str), "text"),
    "budget_minutes": (lambda value: value is None or is_number(value, 0), "minutes or null"),
    "accuracy": (partial(is_share, or_null=True), "a share 0..1 or null"),
    "ci95_low": (partial(is_share, or_null=True), "a share 0..1 or null"),
    "ci95_high": (partial(is_share, or_null=True), "a share 0..1 or null"),
    "errors": (lambda value: value is None or is_count(value), "an integer >= 0 or null"),
    "total": (lambda value: value is None or is_count(value), "an integer >= 0 or null"),
    "plan": (lambda value: value is None or isinstance(value, dict), "an object or null"),
    "note": (lambda value: isinstance(value, str), "text"),
}


def restored_points(saved: list, settings: dict) -> list[Point]:
    """The points a killed curve of these settings kept; ValueError saying what in them
    cannot be used (a point of another curve, or twice, or figures no table can print)."""
    budgets = {f"plan {minutes:g} min": minutes for minutes in settings["budgets"]}
    budgets |= {name: None for name in settings["recipes"]}  # a recipe has no budget
    points: list[Point] = []
    for number, entry in enumerate(saved, start=1):
        if not isinstance(entry, dict) or not {"name", "what", "wall_seconds"} <= set(entry):
            raise ValueError(f"point {number}: expected an object with name, what and "
                             "wall_seconds")
        for field, value in entry.items():
            check, expected = POINT_FIELDS.get(field, (lambda value: False, "no such field"))
            if not check(value):
                raise ValueError(f"point {number}: {field}: expected {expected}, "
                                 f"found {value!r:.40}")
        name = entry["name"]
        if (name not in budgets or entry.get("budget_minutes") != budgets[name]
                or name in {point.name for point in points}):
            raise ValueError(f"point {number}: expected one of {', '.join(budgets)} (a plan's "
                             f"with its budget_minutes), each once, found {name!r:.40}")
        point = Point(**entry)
        if (point.ci95_low is None) != (point.ci95_high is None) or (
                point.ci95_low is not None and point.ci95_low > point.ci95_high):
            raise ValueError(f"point {number}: expected ci95_low <= ci95_high, or both null")
        if (point.errors is None) != (point.total is None) or (
                point.errors is not None and point.errors > point.total):
            raise ValueError(f"point {number}: expected errors <= total, or both null")
        points.append(point)
    return points


def _unfinished_curve(bench_dir: Path, settings: dict) -> tuple[Path, str, list[Point]] | None:
    """The newest curve folder of these settings that a killed curve left (its points so
    far in POINTS_FILE, its table never written), its start (UTC) and its points; or None.
    A file of these settings whose points cannot be used is passed over with a warning."""
    for folder in sorted(bench_dir.glob("curve-*/"), key=lambda path: path.name, reverse=True):
        if (bench_dir / f"{folder.name}.json").exists():
            continue  # finished (curves before FINISHED was kept said so only here)
        try:
            saved = read_json(folder / POINTS_FILE)
        except OSError:  # killed before its first point
            continue
        except ValueError as error:
            warnings.warn(f"{folder / POINTS_FILE}: {error}; its points are not kept (delete "
                          f"{folder} to be rid of this warning)", stacklevel=2)
            continue
        if not isinstance(saved, dict) or saved.get("settings") != settings or saved.get(FINISHED):
            continue
        try:
            if not isinstance(saved.get("utc"), str) or not isinstance(saved.get("points"), list):
                raise ValueError("expected text under utc and a list under points")
            points = restored_points(saved["points"], settings)
        except ValueError as error:
            warnings.warn(f"{folder / POINTS_FILE}: {error}; its points are not kept (delete "
                          f"{folder} to be rid of this warning)", stacklevel=2)
            continue
        return folder, saved["utc"], points
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
                "data": data_fingerprint(digits.x_train, digits.y_train),
                "code": package_code_version()}  # an upgrade starts a new curve
    resumed = _unfinished_curve(bench_dir, settings)
    if resumed:
        runs, utc, points = resumed
        points = [point for point in points if point.accuracy is not None]  # failed: again
        print(f"curve: going on with {runs}: {len(points)} point(s) kept", flush=True)
    else:
        started = datetime.now(UTC)
        runs = bench_runs.new_folder(bench_dir / f"curve-{started.strftime('%Y%m%d-%H%M%S')}")
        utc, points = started.strftime("%Y-%m-%d %H:%M UTC"), []

    def save_points(finished: bool = False) -> None:
        write_atomically(runs / POINTS_FILE, json.dumps(
            {"settings": settings, "utc": utc, "points": [asdict(p) for p in points],
             FINISHED: finished}))

    def keep(point: Point) -> None:  # each point as it ends: a killed curve goes on from it
        points.append(point)
        save_points()

    done = {point.name for point in points}
    for minutes in budgets:
        if f"plan {minutes:g} min" not in done:
            keep(plan_point(config, minutes, bench_runs.new_folder(runs / f"plan-{minutes:g}min")))
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
    try:
        save_points(finished=True)  # the table may move (to docs, say): the folder still knows
    except DataError as error:  # the curve is written: say what a rerun would do
        warnings.warn(f"{error}; a rerun of these flags would show this curve again",
                      stacklevel=2)
    return 0
