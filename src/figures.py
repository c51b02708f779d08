"""The report's figures: PNG files drawn from the metrics and the out-of-fold arrays;
also the bench's accuracy-against-minutes curve (curve_png), the fidelity scatter
(fidelity_png) and the ledger's CV against the public score (cv_against_public_png).

Figures are drawn on matplotlib Figure objects with an Agg canvas, never through
pyplot: the global backend (a notebook's inline one, say) is left alone and no
figure outlives its save. FIGURE_CAPTIONS holds every file write_figures may
write, with its caption. src.report calls write_figures and links what it wrote;
this module imports nothing from src.report.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from src.metrics import DIGITS, ENSEMBLE, NUM_CLASSES
from src.util import format_accuracy, writing


def _without_seaborn_deprecations(plot):
    """plot, with the deprecation warnings seaborn 0.12 (Kaggle's image) raises on every
    call under pandas 2.1+ (is_categorical_dtype) silenced: a warning line per figure, in
    a notebook, about code that is not the user's."""
    @functools.wraps(plot)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings():
            for kind in (DeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=kind, module=r"seaborn\.")
            return plot(*args, **kwargs)
    return quiet

GALLERY_SIZE = 36
GALLERY_COLUMNS = 6
DPI = 110

FIGURE_CAPTIONS = {
    "model_accuracy.png": "Out-of-fold accuracy with its 95% interval, per configuration and "
                          "for the ensemble",
    "per_digit.png": "Precision, recall and F1 of the ensemble per digit (out of fold)",
    "confusion_matrix.png": "Confusion matrix of the ensemble (out of fold); red cells are errors",
    "misclassified.png": "Misclassified training digits, most confident mistakes first",
    "training_curves.png": "Accuracy and loss per epoch of every fold model",
    "class_balance.png": "Predicted class balance on the test set against the training labels",
}


def worst_misclassified(y_true: np.ndarray, probs: np.ndarray,
                        limit: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the misclassified images, most confident mistake first, at most ``limit``."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:limit]]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _plot_model_accuracy(metrics: dict) -> Figure:
    """Each configuration's and the ensemble's accuracy as a dot with its 95% interval."""
    rows = [(f"{name} (OOF)", score, "tab:blue") for name, score in metrics["models"].items()]
    rows.append(("ensemble (OOF)", metrics[ENSEMBLE], "tab:red"))
    if metrics["holdout"] is not None:
        rows.append(("ensemble (labelled test)", metrics["holdout"], "tab:purple"))
    figure = _new_figure(9, 1.2 + 0.55 * len(rows))
    ax = figure.subplots()
    lows = [100 * score["ci95_low"] for _, score, _ in rows]
    highs = [100 * score["ci95_high"] for _, score, _ in rows]
    for position, (_, score, colour) in enumerate(rows):
        accuracy = 100 * score["accuracy"]
        ax.errorbar(accuracy, position, xerr=[[accuracy - lows[position]],
                                              [highs[position] - accuracy]],
                    fmt="o", color=colour, capsize=5, markersize=7, linewidth=2)
    positions = range(len(rows))
    ax.set_yticks(positions, [label for label, _, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    # The values go in a right-hand column so the x-axis can stop at 100%.
    values = ax.secondary_yaxis("right")
    values.set_yticks(positions, [
        f"{format_accuracy(score['accuracy'])}  ({score['errors']:,} "
        f"error{'' if score['errors'] == 1 else 's'})"
        for _, score, _ in rows])
    values.tick_params(length=0)
    span = max(max(highs) - min(lows), 0.05)
    ax.set_xlim(min(lows) - 0.1 * span, min(max(highs) + 0.1 * span, 100 + 0.02 * span))
    ax.set_xlabel("accuracy (%), with 95% Wilson interval")
    ax.set_title("Accuracy per configuration and of the ensemble")
    ax.grid(axis="x", alpha=0.3)
    return figure


def _plot_per_digit(report: dict) -> Figure:
    """Precision, recall and F1 per digit as grouped bars, the y-axis zoomed onto the values."""
    measures = [("precision", "tab:blue"), ("recall", "tab:orange"), ("f1-score", "tab:green")]
    values = np.array([[report[str(digit)][measure] for digit in DIGITS]
                       for measure, _ in measures])
    figure = _new_figure(10, 4.5)
    ax = figure.subplots()
    width = 0.27
    for row, (measure, colour) in enumerate(measures):
        ax.bar(np.arange(NUM_CLASSES) + (row - 1) * width, values[row], width,
               label=measure.replace("-score", ""), color=colour)
    bottom = max(0.0, math.floor((values.min() - 0.005) * 100) / 100)
    ax.set_ylim(bottom, 1 + (1 - bottom) * 0.02)
    ax.set_xticks(range(NUM_CLASSES), [str(digit) for digit in DIGITS])
    ax.set_xlabel("digit")
    ax.set_ylabel("score")
    ax.set_title(f"Per-digit precision, recall and F1 (y-axis from {bottom:.2f})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


@_without_seaborn_deprecations
def _plot_confusion(matrix: list[list[int]]) -> Figure:
    """The confusion matrix with counts: diagonal in grey, errors on their own red scale."""
    counts = np.array(matrix)
    off_diagonal = ~np.eye(NUM_CLASSES, dtype=bool)
    labels = np.where(off_diagonal & (counts == 0), "", counts.astype(str))
    figure = _new_figure(8.5, 7)
    ax = figure.subplots()
    sns.heatmap(counts, mask=off_diagonal, annot=labels, fmt="", cmap=["#d9d9d9"], cbar=False,
                linewidths=0.5, linecolor="white", annot_kws={"fontsize": 9,
                                                              "fontweight": "bold"}, ax=ax)
    sns.heatmap(counts, mask=~off_diagonal, annot=labels, fmt="", cmap="Reds", vmin=0,
                vmax=max(1, int(counts[off_diagonal].max())), linewidths=0.5,
                linecolor="white", annot_kws={"fontsize": 10},
                cbar_kws={"label": "misclassified images"}, ax=ax)
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(f"Ensemble confusion matrix, out of fold ({int(counts.sum()):,} images)")
    return figure


def _plot_misclassified(images: np.ndarray, y_true: np.ndarray, probs: np.ndarray,
                        worst: np.ndarray, total_errors: int) -> Figure:
    """A gallery of misclassified digits titled "true 4 → pred 9 (0.97)"."""
    columns = min(GALLERY_COLUMNS, len(worst))
    rows = math.ceil(len(worst) / columns)
    figure = _new_figure(max(columns, 3) * 1.75, rows * 1.85 + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, index in zip(axes, worst, strict=False):  # spare axes stay blank
        predicted = int(probs[index].argmax())
        ax.imshow(images[index].squeeze(), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"true {int(y_true[index])} → pred {predicted} "
                     f"({probs[index, predicted]:.2f})", fontsize=9)
    figure.suptitle(f"Misclassified training digits: {len(worst)} most confident of "
                    f"{total_errors:,} error{'' if total_errors == 1 else 's'}", fontsize=12)
    return figure


def _plot_training_curves(histories: list[dict]) -> Figure:
    """Accuracy and loss per epoch, train solid and validation dashed, one colour per model."""
    models = list(dict.fromkeys(entry["model"] for entry in histories))
    colours = {model: matplotlib.colormaps["tab10"](rank % 10) for rank, model in enumerate(models)}
    figure = _new_figure(12, 4.5)
    axes = figure.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for entry in histories:
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                series = entry["history"].get(key)
                if series:
                    ax.plot(range(1, len(series) + 1), series, style,
                            color=colours[entry["model"]], alpha=0.75, linewidth=1.3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric.capitalize()} per epoch")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[model], label=model) for model in models]
    handles += [Line2D([], [], color="grey", linestyle="-", label="train"),
                Line2D([], [], color="grey", linestyle="--", label="validation")]
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1))
    folds = len(histories)
    figure.suptitle(f"Training curves of {folds} fold model{'s' if folds != 1 else ''}",
                    fontsize=12)
    return figure


def _plot_class_balance(test_counts: list[int], y_true: np.ndarray) -> Figure:
    """Share of each digit among test predictions beside its share among training labels."""
    test_share = 100 * np.array(test_counts) / max(1, sum(test_counts))
    train_share = 100 * np.bincount(y_true, minlength=NUM_CLASSES) / len(y_true)
    figure = _new_figure(10, 4.2)
    ax = figure.subplots()
    width = 0.4
    positions = np.arange(NUM_CLASSES)
    ax.bar(positions - width / 2, train_share, width, label="training labels", color="tab:gray")
    ax.bar(positions + width / 2, test_share, width, label="test predictions", color="tab:blue")
    ax.set_xticks(positions, [str(digit) for digit in DIGITS])
    ax.set_xlabel("digit")
    ax.set_ylabel("% of images")
    ax.set_title(f"Predicted class balance on the test set ({sum(test_counts):,} images)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def write_figures(run_dir: Path, metrics: dict, *, images: np.ndarray, y_true: np.ndarray,
                  ensemble_probs: np.ndarray, histories: list[dict]) -> list[str]:
    """Draw and save every figure the inputs allow; return the file names written.

    metrics is src.metrics.build_metrics' dict; images, y_true and ensemble_probs are the
    training set in out-of-fold order and histories the fold models' training histories, as
    in src.metrics.ReportInputs.
    """
    y_true = np.asarray(y_true)
    figures = {
        "model_accuracy.png": _plot_model_accuracy(metrics),
        "per_digit.png": _plot_per_digit(metrics["classification_report"]),
        "confusion_matrix.png": _plot_confusion(metrics["confusion_matrix"]),
    }
    worst = worst_misclassified(y_true, ensemble_probs)
    if len(worst):
        figures["misclassified.png"] = _plot_misclassified(
            images, y_true, ensemble_probs, worst, metrics[ENSEMBLE]["errors"])
    if histories:
        figures["training_curves.png"] = _plot_training_curves(histories)
    if metrics["test_predicted_counts"] is not None:
        figures["class_balance.png"] = _plot_class_balance(metrics["test_predicted_counts"],
                                                           y_true)
    for name, figure in figures.items():
        path = Path(run_dir) / name
        with writing(path):
            figure.savefig(path, dpi=DPI, facecolor="white")
    return list(figures)


@_without_seaborn_deprecations
def _plot_curve(points: list[dict]) -> Figure:
    """OOF accuracy against wall-clock minutes: the plans as a line with points, each recipe
    a labelled square; bars are 95% intervals where known. Unscored points are left out."""
    scored = [p for p in points if p["accuracy"] is not None]
    plans = sorted((p for p in scored if p["budget_minutes"] is not None),
                   key=lambda p: p["budget_minutes"])
    recipes = [p for p in scored if p["budget_minutes"] is None]
    figure = _new_figure(9, 5.5)
    ax = figure.subplots()
    for point in scored:
        if point.get("ci95_low") is not None:
            accuracy = 100 * point["accuracy"]
            ax.errorbar(point["wall_seconds"] / 60, accuracy, capsize=4, color="grey",
                        alpha=0.6, yerr=[[accuracy - 100 * point["ci95_low"]],
                                         [100 * point["ci95_high"] - accuracy]])
    if plans:
        sns.lineplot(x=[p["wall_seconds"] / 60 for p in plans],
                     y=[100 * p["accuracy"] for p in plans], marker="o", markersize=8,
                     estimator=None, sort=False, color="tab:blue", ax=ax,
                     label="package: python -m src.submit --minutes M")
        for point in plans:
            ax.annotate(f"{point['budget_minutes']:g} min",
                        (point["wall_seconds"] / 60, 100 * point["accuracy"]),
                        textcoords="offset points", xytext=(6, -12), fontsize=9)
    for rank, point in enumerate(recipes):
        sns.scatterplot(x=[point["wall_seconds"] / 60], y=[100 * point["accuracy"]],
                        marker="s", s=70, color=matplotlib.colormaps["tab10"](rank + 1), ax=ax,
                        label=f"recipe: {point['name']}")
        ax.annotate(point["name"], (point["wall_seconds"] / 60, 100 * point["accuracy"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=9)
    ax.margins(x=0.08)  # room for the labels right of the points
    ax.set_xlim(left=0)
    ax.set_xlabel("wall-clock minutes on this machine")
    ax.set_ylabel("out-of-fold accuracy (%), with 95% Wilson interval")
    ax.set_title("Accuracy against minutes: the package's plans and reference recipes")
    ax.grid(alpha=0.3)
    if scored:
        ax.legend(loc="lower right")
    return figure


def curve_png(points: list[dict]) -> bytes:
    """The curve as PNG bytes, for the caller to write (src.curve writes it beside its table).
    Each point is src.curve.Point as a dict: name, budget_minutes (None for a recipe),
    wall_seconds, accuracy (None when unscored), ci95_low and ci95_high (None when unknown)."""
    return _png_bytes(_plot_curve(points))


@_without_seaborn_deprecations
def fidelity_png(search_losses, oof_scores, search_ranks, agreement: str) -> bytes:
    """Each configuration's search score (hold-out log-loss, better to the right) against its
    out-of-fold accuracy after full training, numbered by search rank, as PNG bytes
    (src.fidelity writes them); agreement, "Spearman 0.77", ends the title."""
    search = np.asarray(search_losses, dtype=float)
    oof = 100 * np.asarray(oof_scores, dtype=float)
    figure = _new_figure(6.5, 4.5)
    ax = figure.subplots()
    sns.scatterplot(x=search, y=oof, ax=ax, s=60, color="tab:blue")
    for rank, x, y in zip(search_ranks, search, oof, strict=True):
        ax.annotate(str(rank), (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("search score: hold-out log-loss of the trial (lower, to the right, is better)")
    ax.invert_xaxis()
    ax.set_ylabel("out-of-fold accuracy after full training (%)")
    ax.set_title(f"Search against full training, numbered by search rank ({agreement})")
    ax.grid(alpha=0.3)
    return _png_bytes(figure)


def run_label(run: str) -> str:
    """A run's label on runs.png: its UTC time, and the number a run of the same second
    got (20261206-101500-2); the profile is the dot's colour."""
    number = run.rsplit("-", 1)[-1] if len(run) > 15 else ""
    return f"{run[:15]}-{number}" if number.isdigit() and len(number) < 4 else run[:15]


@_without_seaborn_deprecations
def cv_against_public_png(frame: pd.DataFrame) -> bytes | None:
    """The ledger's runs.png (src.runs writes it): OOF accuracy (with its 95% interval)
    against the public score, one dot a scored run, and the line where they agree, as PNG
    bytes; None when no run of the ledger frame has a public score."""
    scored = frame[frame["public_score"].notna()]
    if scored.empty:
        return None
    oof, public = 100 * scored["oof"], 100 * scored["public_score"].astype(float)
    figure = _new_figure(7.5, 6)
    ax = figure.subplots()
    below = (oof - 100 * scored["oof_low"]).clip(lower=0)
    above = (100 * scored["oof_high"] - oof).clip(lower=0)
    ax.errorbar(oof, public, xerr=[below, above], fmt="none", ecolor="grey", alpha=0.6,
                capsize=3)
    sns.scatterplot(x=oof, y=public, hue=scored["profile"], s=60, ax=ax, zorder=3)
    for run, x, y in zip(scored["run"], oof, public, strict=True):
        ax.annotate(run_label(run), (x, y), xytext=(4, 4), textcoords="offset points",
                    fontsize=7)
    low = min(100 * scored["oof_low"].min(), public.min()) - 0.05
    high = max(100 * scored["oof_high"].max(), public.max()) + 0.05
    ax.plot([low, high], [low, high], "--", color="tab:red", linewidth=1, label="public = OOF")
    ax.set(xlim=(low, high), ylim=(low, high), aspect="equal",
           xlabel="OOF accuracy (%), with 95% interval", ylabel="public leaderboard score (%)",
           title=f"CV against the public leaderboard ({len(scored)} scored "
                 f"run{'' if len(scored) == 1 else 's'})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png_bytes(figure)
