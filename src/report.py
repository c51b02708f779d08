"""The evaluation report: metrics.json, report.md, report.html and PNG figures.

Everything is computed from out-of-fold (OOF) probabilities, so every number
is an honest cross-validated estimate. Figures are drawn on matplotlib Figure
objects with an Agg canvas, never through pyplot: the global backend (a
notebook's inline one, say) is left alone and no figure outlives its save.
The Markdown and the HTML come from one list of blocks, so they always agree.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import classification_report, confusion_matrix

from src.util import write_atomically, writing

NUM_CLASSES = 10  # as src.data; not imported from there to keep this module free of TensorFlow
DIGITS = list(range(NUM_CLASSES))
GALLERY_SIZE = 36
GALLERY_COLUMNS = 6
LEADERBOARD_ROWS = 10
MOST_CONFUSED_PAIRS = 10
DPI = 110
ENSEMBLE = "ensemble"

FIGURE_CAPTIONS = {
    "model_accuracy.png": "Out-of-fold accuracy with its 95% interval, per configuration and "
                          "for the ensemble",
    "per_digit.png": "Precision, recall and F1 of the ensemble per digit (out of fold)",
    "confusion_matrix.png": "Confusion matrix of the ensemble (out of fold); red cells are errors",
    "misclassified.png": "Misclassified training digits, most confident mistakes first",
    "training_curves.png": "Accuracy and loss per epoch of every fold model",
    "class_balance.png": "Predicted class balance on the test set against the training labels",
}


@dataclass
class ReportInputs:
    """Everything the report shows; gathered by src.submit."""

    y_true: np.ndarray  # (N,) int labels of the training set (OOF order)
    images: np.ndarray  # (N, 28, 28, 1) uint8 training images, same order
    model_probs: dict[str, np.ndarray]  # OOF class probabilities (N, 10) per configuration
    ensemble_probs: np.ndarray  # (N, 10) OOF probabilities of the ensemble
    ensemble_weights: dict[str, float]  # weight of each configuration in the ensemble
    histories: list[dict]  # {"model": "rank1", "fold": 0, "history": {"accuracy": [...], ...}}
    timings: dict[str, float]  # seconds per step, e.g. {"load": 1.2, ..., "total": 310.0}
    run_info: dict  # command, profile, seed, folds, source, versions, hparams, TTA
    leaderboard: pd.DataFrame | None = None  # the tuner's trials.csv, best first
    holdout_true: np.ndarray | None = None  # --source keras: labels of MNIST's 10k test set
    holdout_probs: np.ndarray | None = None  # ensemble probabilities on that test set
    test_predictions: np.ndarray | None = None  # (M,) predicted labels of the unlabelled test set


# ---------------------------------------------------------------- metrics


def accuracy_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy."""
    if total <= 0:
        raise ValueError(f"an accuracy interval needs at least one image, got total={total}")
    share = correct / total
    shrink = 1 + z * z / total
    centre = (share + z * z / (2 * total)) / shrink
    half_width = z / shrink * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def worst_misclassified(y_true: np.ndarray, probs: np.ndarray,
                        limit: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the misclassified images, most confident mistake first, at most ``limit``."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:limit]]


def _check_inputs(inputs: ReportInputs) -> None:
    """Raise ValueError when the arrays disagree in length or shape (a caller's bug)."""
    size = len(inputs.y_true)
    arrays = {"images": inputs.images, "ensemble_probs": inputs.ensemble_probs,
              **{f"model_probs[{name!r}]": probs for name, probs in inputs.model_probs.items()}}
    for name, array in arrays.items():
        if len(array) != size:
            raise ValueError(f"report: {name} has {len(array)} rows, y_true has {size}")
        if name != "images" and array.shape[1:] != (NUM_CLASSES,):
            raise ValueError(f"report: {name} has shape {array.shape}, expected ({size}, 10)")
    if (inputs.holdout_true is None) != (inputs.holdout_probs is None):
        raise ValueError("report: holdout_true and holdout_probs come together or not at all")
    if inputs.holdout_true is not None and len(inputs.holdout_true) != len(inputs.holdout_probs):
        raise ValueError(f"report: holdout_probs has {len(inputs.holdout_probs)} rows, "
                         f"holdout_true has {len(inputs.holdout_true)}")


def _score(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, its 95% interval and the error count of argmax predictions."""
    total = len(y_true)
    correct = int(np.sum(probs.argmax(axis=1) == y_true))
    low, high = accuracy_interval(correct, total)
    return {"accuracy": correct / total, "ci95_low": low, "ci95_high": high,
            "errors": total - correct, "total": total}


def _classification_report(y_true: np.ndarray, predicted: np.ndarray) -> dict:
    return classification_report(y_true, predicted, labels=DIGITS, output_dict=True,
                                 zero_division=0)


def _most_confused(matrix: np.ndarray, limit: int = MOST_CONFUSED_PAIRS) -> list[dict]:
    """The largest off-diagonal cells of a confusion matrix, biggest first."""
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    order = np.argsort(-errors, axis=None, kind="stable")[:limit]
    pairs = [np.unravel_index(flat, errors.shape) for flat in order]
    return [{"true": int(true), "predicted": int(predicted), "count": int(errors[true, predicted])}
            for true, predicted in pairs if errors[true, predicted] > 0]


def _plain(value: object) -> object:
    """``value`` as plain JSON types: numpy scalars and arrays, paths, tuples converted;
    NaN and infinity become None (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def build_metrics(inputs: ReportInputs) -> dict:
    """metrics.json content: per configuration and for the ensemble, OOF accuracy with its 95%
    interval and error count; the ensemble's per-digit classification report, confusion matrix
    and most confused pairs; holdout scores when given; timings; run_info; ensemble weights."""
    _check_inputs(inputs)
    y_true = np.asarray(inputs.y_true)
    predicted = inputs.ensemble_probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, predicted, labels=DIGITS)
    holdout = None
    if inputs.holdout_true is not None:
        holdout_predicted = inputs.holdout_probs.argmax(axis=1)
        holdout = {**_score(inputs.holdout_true, inputs.holdout_probs),
                   "classification_report": _classification_report(inputs.holdout_true,
                                                                    holdout_predicted),
                   "confusion_matrix": confusion_matrix(inputs.holdout_true, holdout_predicted,
                                                        labels=DIGITS)}
    test_counts = None
    if inputs.test_predictions is not None:
        test_counts = np.bincount(inputs.test_predictions, minlength=NUM_CLASSES)
    return _plain({
        "num_images": len(y_true),
        "models": {name: _score(y_true, probs) for name, probs in inputs.model_probs.items()},
        ENSEMBLE: _score(y_true, inputs.ensemble_probs),
        "ensemble_weights": inputs.ensemble_weights,
        "classification_report": _classification_report(y_true, predicted),
        "confusion_matrix": matrix,
        "most_confused": _most_confused(matrix),
        "holdout": holdout,
        "test_predicted_counts": test_counts,
        "timings": inputs.timings,
        "run_info": inputs.run_info,
    })


# ---------------------------------------------------------------- figures


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


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
    values.set_yticks(positions, [f"{score['accuracy']:.2%}  ({score['errors']:,} errors)"
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
                    f"{total_errors:,} errors", fontsize=12)
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


def write_figures(run_dir: Path, inputs: ReportInputs, metrics: dict) -> list[str]:
    """Draw and save every figure the inputs allow; return the file names written."""
    y_true = np.asarray(inputs.y_true)
    figures = {
        "model_accuracy.png": _plot_model_accuracy(metrics),
        "per_digit.png": _plot_per_digit(metrics["classification_report"]),
        "confusion_matrix.png": _plot_confusion(metrics["confusion_matrix"]),
    }
    worst = worst_misclassified(y_true, inputs.ensemble_probs)
    if len(worst):
        figures["misclassified.png"] = _plot_misclassified(
            inputs.images, y_true, inputs.ensemble_probs, worst, metrics[ENSEMBLE]["errors"])
    if inputs.histories:
        figures["training_curves.png"] = _plot_training_curves(inputs.histories)
    if metrics["test_predicted_counts"] is not None:
        figures["class_balance.png"] = _plot_class_balance(metrics["test_predicted_counts"],
                                                           y_true)
    for name, figure in figures.items():
        path = Path(run_dir) / name
        with writing(path):
            figure.savefig(path, dpi=DPI, facecolor="white")
    return list(figures)


# ---------------------------------------------------------------- document


def _md_text(text: str) -> str:
    """Text for Markdown: HTML-special characters escaped, so values show as written."""
    return html.escape(text, quote=False)


@dataclass
class Heading:
    """A section title; level 1 is the page title."""

    level: int
    text: str

    def markdown(self) -> str:
        return f"{'#' * self.level} {_md_text(self.text)}"

    def html(self) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass
class Paragraph:
    """A line of text, optionally bold."""

    text: str
    strong: bool = False

    def markdown(self) -> str:
        return f"**{_md_text(self.text)}**" if self.strong else _md_text(self.text)

    def html(self) -> str:
        text = html.escape(self.text)
        return f"<p><strong>{text}</strong></p>" if self.strong else f"<p>{text}</p>"


@dataclass
class Table:
    """A table of already formatted cells."""

    header: list[str]
    rows: list[list[str]]
    align: str = ""  # one letter per column, "l" or "r"; default: first left, the rest right

    def _alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)

    def markdown(self) -> str:
        def line(cells):
            cells = [_md_text(cell).replace("|", "\\|").replace("\n", " ") for cell in cells]
            return "| " + " | ".join(cells) + " |"

        rule = "|" + "|".join("---:" if side == "r" else ":---" for side in self._alignment()) + "|"
        return "\n".join([line(self.header), rule, *(line(row) for row in self.rows)])

    def html(self) -> str:
        classes = [' class="num"' if side == "r" else "" for side in self._alignment()]

        def line(cells, tag):
            return "<tr>" + "".join(f"<{tag}{css}>{html.escape(cell)}</{tag}>"
                                    for css, cell in zip(classes, cells, strict=True)) + "</tr>"

        body = "\n".join(line(row, "td") for row in self.rows)
        return (f"<table>\n<thead>{line(self.header, 'th')}</thead>\n"
                f"<tbody>\n{body}\n</tbody>\n</table>")


@dataclass
class Image:
    """A figure file in the run folder, linked relatively, with its caption."""

    file: str
    caption: str

    def markdown(self) -> str:
        return f"![{_md_text(self.caption)}]({self.file})"

    def html(self) -> str:
        return (f'<figure><img src="{html.escape(self.file)}" alt="{html.escape(self.caption)}">'
                f"<figcaption>{html.escape(self.caption)}</figcaption></figure>")


def _format_value(value: object) -> str:
    """A value as a table cell: floats to 4 significant digits, lists and dicts inline."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "—" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    return str(value)


def _interval(score: dict) -> str:
    return f"{100 * score['ci95_low']:.2f}–{100 * score['ci95_high']:.2f}%"


def _accuracy_line(label: str, score: dict) -> str:
    """e.g. "...: 99.57% (95% CI 99.50–99.63%, 181 errors of 42,000)"."""
    return (f"{label}: {score['accuracy']:.2%} (95% CI {_interval(score)}, "
            f"{score['errors']:,} errors of {score['total']:,})")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _figure_blocks(figures: list[str], *names: str) -> list:
    return [Image(name, FIGURE_CAPTIONS[name]) for name in names if name in figures]


def _models_section(metrics: dict, figures: list[str]) -> list:
    weights = metrics["ensemble_weights"]
    rows = [[name, f"{score['accuracy']:.2%}", _interval(score), f"{score['errors']:,}",
             _format_value(weights.get(name))] for name, score in metrics["models"].items()]
    ensemble = metrics[ENSEMBLE]
    rows.append([ENSEMBLE, f"{ensemble['accuracy']:.2%}", _interval(ensemble),
                 f"{ensemble['errors']:,}", _format_value(sum(weights.values()))])
    return [Heading(2, "Models"),
            Table(["configuration", "OOF accuracy", "95% CI", "errors", "weight"], rows),
            *_figure_blocks(figures, "model_accuracy.png")]


def _report_table(report: dict) -> Table:
    """A scikit-learn classification report (output_dict) as a table, digits then averages."""
    keys = [str(digit) for digit in DIGITS] + ["macro avg", "weighted avg"]
    rows = [[key, *(f"{report[key][measure]:.4f}" for measure in ("precision", "recall",
                                                                  "f1-score")),
             f"{int(report[key]['support']):,}"] for key in keys]
    return Table(["digit", "precision", "recall", "F1", "support"], rows)


def _per_digit_section(metrics: dict, figures: list[str]) -> list:
    return [Heading(2, "Per-digit precision, recall and F1 (ensemble, out of fold)"),
            _report_table(metrics["classification_report"]),
            *_figure_blocks(figures, "per_digit.png")]


def _errors_section(metrics: dict, figures: list[str]) -> list:
    blocks = [Heading(2, "Confusion matrix and errors"),
              *_figure_blocks(figures, "confusion_matrix.png")]
    pairs = metrics["most_confused"]
    if pairs:
        blocks += [Paragraph("Most confused pairs:"),
                   Table(["true", "predicted as", "count"],
                         [[str(pair["true"]), str(pair["predicted"]), str(pair["count"])]
                          for pair in pairs], align="rrr")]
    if "misclassified.png" in figures:
        blocks += _figure_blocks(figures, "misclassified.png")
    else:
        blocks.append(Paragraph("No training digit is misclassified out of fold."))
    return blocks


def _training_section(figures: list[str]) -> list:
    if "training_curves.png" not in figures:
        return [Heading(2, "Training curves"),
                Paragraph("No training histories were recorded in this run "
                          "(every fold model was loaded from an earlier run).")]
    return [Heading(2, "Training curves"), *_figure_blocks(figures, "training_curves.png")]


def _holdout_section(metrics: dict) -> list:
    holdout = metrics["holdout"]
    if holdout is None:
        return []
    return [Heading(2, "Labelled test set (MNIST's 10k test images)"),
            Paragraph(_accuracy_line("Ensemble test-set accuracy", holdout), strong=True),
            _report_table(holdout["classification_report"])]


def _test_section(figures: list[str]) -> list:
    if "class_balance.png" not in figures:
        return []
    return [Heading(2, "Test-set predictions"), *_figure_blocks(figures, "class_balance.png")]


def _leaderboard_section(leaderboard: pd.DataFrame | None) -> list:
    if leaderboard is None or leaderboard.empty:
        return []
    top = leaderboard.head(LEADERBOARD_ROWS)
    rows = [[_format_value(value) for value in row] for row in top.itertuples(index=False)]
    return [Heading(2, f"Tuner leaderboard (top {len(top)} of {len(leaderboard)} trials)"),
            Table([str(column) for column in top.columns], rows)]


def _timings_section(timings: dict) -> list:
    rows = [[step, f"{seconds:,.1f}", _duration(seconds)] for step, seconds in timings.items()]
    return [Heading(2, "Timings"), Table(["step", "seconds", "duration"], rows)]


def _mapping_table(mapping: dict) -> Table:
    """A dict as a name/value table; a dict of dicts (hparams per model) as a matrix."""
    if mapping and all(isinstance(value, dict) for value in mapping.values()):
        names = list(dict.fromkeys(name for inner in mapping.values() for name in inner))
        rows = [[name, *(_format_value(inner.get(name)) for inner in mapping.values())]
                for name in names]
        return Table(["name", *map(str, mapping)], rows)
    return Table(["name", "value"], [[str(key), _format_value(value)]
                                     for key, value in mapping.items()], align="ll")


def _run_info_section(run_info: dict) -> list:
    flat = {key: value for key, value in run_info.items() if not isinstance(value, dict)}
    blocks: list = [Heading(2, "Run info")]
    if flat:
        blocks.append(_mapping_table(flat))
    for key, value in run_info.items():
        if isinstance(value, dict):
            blocks += [Heading(3, str(key)), _mapping_table(value)]
    return blocks


def report_blocks(inputs: ReportInputs, metrics: dict, figures: list[str]) -> list:
    """The report as a list of blocks (headings, paragraphs, tables, images), in order."""
    return [
        Heading(1, "Digit Recognizer: evaluation report"),
        Paragraph(_accuracy_line("Ensemble out-of-fold accuracy", metrics[ENSEMBLE]),
                  strong=True),
        *_models_section(metrics, figures),
        *_per_digit_section(metrics, figures),
        *_errors_section(metrics, figures),
        *_training_section(figures),
        *_holdout_section(metrics),
        *_test_section(figures),
        *_leaderboard_section(inputs.leaderboard),
        *_timings_section(metrics["timings"]),
        *_run_info_section(metrics["run_info"]),
    ]


HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 62rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #eee; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; }
th, td { padding: .25rem .75rem; border-bottom: 1px solid #e3e3e3; text-align: left; }
th { background: #f4f5f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 1.6rem; }
img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9rem; }
"""


def render_markdown(blocks: list) -> str:
    """The blocks as a Markdown document."""
    return "\n\n".join(block.markdown() for block in blocks) + "\n"


def render_html(blocks: list, title: str) -> str:
    """The blocks as one standalone HTML page: inline CSS, figures as relative links."""
    body = "\n".join(block.html() for block in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def write_report(run_dir: Path, inputs: ReportInputs) -> dict:
    """Write into run_dir (which exists): metrics.json, report.md, report.html and PNG figures;
    return the metrics."""
    run_dir = Path(run_dir)
    metrics = build_metrics(inputs)
    figures = write_figures(run_dir, inputs, metrics)
    write_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False)
                     + "\n")
    blocks = report_blocks(inputs, metrics, figures)
    write_atomically(run_dir / "report.md", render_markdown(blocks))
    title = f"Digit Recognizer report: {metrics[ENSEMBLE]['accuracy']:.2%} out of fold"
    write_atomically(run_dir / "report.html", render_html(blocks, title))
    return metrics
