"""The evaluation report: metrics.json, report.md, report.html and PNG figures.

The numbers come from src.metrics, computed on out-of-fold (OOF) probabilities;
the figures are drawn and saved by src.figures; the report links them with
their captions. The Markdown and the HTML come from one list of blocks
(src.document), so they always agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from src.document import Heading, Image, Paragraph, Table, render_html, render_markdown
from src.figures import FIGURE_CAPTIONS, write_figures
from src.metrics import DIGITS, ENSEMBLE, ReportInputs, build_metrics
from src.util import LEADERBOARD_ROWS, format_accuracy, format_duration, write_atomically

AS_TYPED = {"seed", "batch_size", "epochs", "folds", "repeats", "train_samples", "jobs",
            "pseudo_epochs"}  # run info a user copies back into a flag: --seed 2024, not 2,024
# run info for programs, not readers: the digests of every run a blend's blends hold
FOR_PROGRAMS = {"holds"}


def _format_value(value: object) -> str:
    """A value as a table cell: numbers to 4 significant digits, from 1,000 on whole with
    thousands separators (a column of parameter counts that a failed trial left blank is
    floats: 1,234,567, not 1.235e+06), lists and dicts inline."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer, float, np.floating)):
        if math.isnan(value):
            return "—"
        # From 999.5 on: 4 significant digits would print 999.96 as 1000, beside 1,000
        return f"{value:,.0f}" if math.isfinite(value) and abs(value) >= 999.5 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    return str(value)


def _interval(score: dict) -> str:
    return f"{100 * score['ci95_low']:.2f}–{100 * score['ci95_high']:.2f}%"


def _accuracy_line(label: str, score: dict) -> str:
    """e.g. "...: 99.57% (95% CI 99.50–99.63%, 181 errors of 42,000)"."""
    errors = f"{score['errors']:,} error{'' if score['errors'] == 1 else 's'}"
    return (f"{label}: {format_accuracy(score['accuracy'])} (95% CI {_interval(score)}, "
            f"{errors} of {score['total']:,})")


def _figure_blocks(figures: list[str], *names: str) -> list:
    return [Image(name, FIGURE_CAPTIONS[name]) for name in names if name in figures]


def _outside_search_holdout(score: dict | None) -> list:
    if not score:
        return []
    return [Paragraph(_accuracy_line(
        f"The same, without the {score['left_out']:,} images the search chose the members on",
        score))]


def _models_section(metrics: dict, figures: list[str]) -> list:
    weights = metrics["ensemble_weights"]
    rows = [[name, format_accuracy(score['accuracy']), _interval(score), f"{score['errors']:,}",
             _format_value(weights.get(name))] for name, score in metrics["models"].items()]
    ensemble = metrics[ENSEMBLE]
    rows.append([ENSEMBLE, format_accuracy(ensemble['accuracy']), _interval(ensemble),
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
                Paragraph("No training histories in this run: no fold model was trained "
                          "for it (a blend averages finished runs, whose reports show "
                          "theirs).")]
    return [Heading(2, "Training curves"), *_figure_blocks(figures, "training_curves.png")]


def _holdout_section(metrics: dict) -> list:
    holdout = metrics["holdout"]
    if holdout is None:
        return []
    return [Heading(2, f"Labelled test set (MNIST's {holdout['total']:,} test images)"),
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


def _plan_section(plan: dict | None) -> list:
    """The --minutes plan: what it chose, the speeds it was priced with, planned and actual
    seconds per stage."""
    if plan is None:
        return []
    repeats = plan.get("repeats", 1)
    chosen = (f"{', '.join(plan['members'])} x {plan['folds']} folds"
              f"{f' x {repeats} repeats' if repeats > 1 else ''} x {plan['epochs']} epochs"
              f"{', TTA' if plan['tta'] else ''}")
    if plan["pseudo_epochs"]:  # none in the shipped profiles
        epochs = plan["pseudo_epochs"]
        chosen += f"; pseudo-labelled round planned at {epochs} epoch{'s' * (epochs != 1)}"
    reused = " (the plan of an earlier run with these settings, reused)" if (
        plan["reused_plan"]) else ""
    stages = [[row["stage"], *("—" if seconds is None else f"{seconds:,.1f}" for seconds in
                               (row["planned_seconds"], row["actual_seconds"]))]
              for row in plan["stages"]]
    speeds = [[name, f"{speed['train_images_per_second']:,.0f}",
               f"{speed['predict_images_per_second']:,.0f}", f"{speed['startup_seconds']:.1f}"]
              for name, speed in plan["speeds"].items()]
    return [Heading(2, f"Plan for {plan['minutes']:g} minutes"),
            Paragraph(f"Planned: {chosen}{reused}; PLAN_TABLE row from "
                      f"{plan['table_row']:g} minutes, {plan['jobs']} fold model(s) at once; "
                      f"ETA {format_duration(plan['eta_seconds'])} "
                      f"of {format_duration(plan['seconds'])}."),
            Table(["stage", "planned seconds", "actual seconds"], stages),
            Paragraph("Speeds measured on this machine, one process:"),
            Table(["network", "training images/s", "prediction images/s",
                   "seconds to start a fold model"], speeds),
            *([Paragraph("Decided as the run went (TTA and the pseudo-labelled round at "
                         "stage boundaries; fewer epochs for the fold models a late round had "
                         "not yet started):"), _mapping_table(plan["decisions"])]
              if plan["decisions"] else [])]


def _timings_section(timings: dict) -> list:
    rows = [[step, f"{seconds:,.1f}", format_duration(seconds)]
            for step, seconds in timings.items()]
    return [Heading(2, "Timings"), Table(["step", "seconds", "duration"], rows)]


def _mapping_table(mapping: dict) -> Table:
    """A dict as a name/value table; a dict of dicts (hparams per model) as a matrix."""
    if mapping and all(isinstance(value, dict) for value in mapping.values()):
        names = list(dict.fromkeys(name for inner in mapping.values() for name in inner
                                   if name not in FOR_PROGRAMS))
        rows = [[name, *(_format_value(inner.get(name)) for inner in mapping.values())]
                for name in names]
        return Table(["name", *map(str, mapping)], rows)
    return Table(["name", "value"], [[str(key), str(value) if key in AS_TYPED
                                      and value is not None else _format_value(value)]
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
        *_outside_search_holdout(metrics.get("ensemble_outside_search_holdout")),
        *_models_section(metrics, figures),
        *_per_digit_section(metrics, figures),
        *_errors_section(metrics, figures),
        *_training_section(figures),
        *_holdout_section(metrics),
        *_test_section(figures),
        *_leaderboard_section(inputs.leaderboard),
        *_plan_section(metrics["plan"]),
        *_timings_section(metrics["timings"]),
        *_run_info_section(metrics["run_info"]),
    ]


def write_report(run_dir: Path, inputs: ReportInputs) -> dict:
    """Write into run_dir (which exists): metrics.json, report.md, report.html and PNG figures;
    return the metrics."""
    run_dir = Path(run_dir)
    metrics = build_metrics(inputs)
    figures = write_figures(run_dir, metrics, images=inputs.images, y_true=inputs.y_true,
                            ensemble_probs=inputs.ensemble_probs,
                            histories=inputs.histories)
    write_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False)
                     + "\n")
    blocks = report_blocks(inputs, metrics, figures)
    write_atomically(run_dir / "report.md", render_markdown(blocks))
    title = f"Digit Recognizer report: {format_accuracy(metrics[ENSEMBLE]['accuracy'])} out of fold"
    write_atomically(run_dir / "report.html", render_html(blocks, title))
    return metrics
