"""The evaluation report: exact metrics, every file written, figures that are real images,
escaped HTML, and the Markdown linking every figure.

``synthetic_inputs`` also serves the benchmark (README):
``python -c "from tests.test_report import benchmark; benchmark()"``.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from html import escape
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from src import kaggle_record, report
from src.document import render_markdown
from src.figures import worst_misclassified
from src.metrics import ReportInputs, accuracy_interval, build_metrics
from src.util import format_accuracy
from tests.fixtures import ended_pid, handwritten_digits

SIZE = 600
# (true digit, predicted digit): how many images the ensemble gets wrong that way.
ENSEMBLE_CONFUSIONS = {(4, 9): 5, (7, 1): 3}
RANK1_EXTRA = {(2, 3): 4}
RANK2_EXTRA = {(8, 0): 6}
HOLDOUT_CONFUSIONS = {(5, 3): 2}
INJECTED = "<script>alert('x')</script>"


def confused_probs(labels: np.ndarray, confusions: dict[tuple[int, int], int]) -> np.ndarray:
    """Probabilities that are right for every image except, per (true, predicted) pair, the
    first ``count`` images of the true digit, predicted wrongly with falling confidence."""
    probs = np.full((len(labels), 10), 0.01)
    probs[np.arange(len(labels)), labels] = 0.91
    for (true, predicted), count in confusions.items():
        chosen = np.flatnonzero(labels == true)[:count]
        assert len(chosen) == count, "not enough images of that digit"
        confidence = np.linspace(0.95, 0.55, count)
        probs[chosen] = (1 - confidence[:, None]) / 9
        probs[chosen, predicted] = confidence
    return probs


def _history(epochs: int, shift: float) -> dict:
    epoch = np.arange(1, epochs + 1)
    accuracy = 1 - 0.2 * np.exp(-epoch / 2) - shift
    loss = 0.6 * np.exp(-epoch / 2) + 0.03
    return {"accuracy": accuracy.tolist(), "val_accuracy": (accuracy - 0.004).tolist(),
            "loss": loss.tolist(), "val_loss": (loss + 0.01).tolist()}


def synthetic_inputs(size: int = SIZE, confusions=None, folds: int = 3,
                     with_extras: bool = True) -> ReportInputs:
    """ReportInputs on real handwriting (scikit-learn's digits, repeated to ``size``) whose
    ensemble makes exactly the mistakes in ``confusions``; each model makes a few more."""
    images, labels = handwritten_digits()
    order = np.arange(size) % len(labels)
    images, labels = images[order][..., None], labels[order]
    confusions = ENSEMBLE_CONFUSIONS if confusions is None else confusions
    models = ("rank1", "rank2")
    extras = (RANK1_EXTRA, RANK2_EXTRA)
    inputs = ReportInputs(
        y_true=labels,
        images=images,
        model_probs={name: confused_probs(labels, {**confusions, **extra})
                     for name, extra in zip(models, extras, strict=True)},
        ensemble_probs=confused_probs(labels, confusions),
        ensemble_weights={"rank1": 0.6, "rank2": 0.4},
        histories=[{"model": name, "fold": fold, "history": _history(8 + fold, 0.002 * rank)}
                   for rank, name in enumerate(models) for fold in range(folds)],
        timings={"load": 1.25, "train": 754.0, "predict": 5.5, "total": 761.0},
        run_info={"command": f"python -m src.submit --note {INJECTED}", "profile": "quick",
                  "seed": np.int64(42), "folds": folds, "source": "kaggle", "tta": False,
                  "versions": {"tensorflow": "2.21.0", "keras": "3.15.0"},
                  "hparams": {"rank1": {"conv_blocks": 3, "learning_rate": 0.002},
                              "rank2": {"conv_blocks": 2, "learning_rate": 0.001}}},
    )
    if with_extras:
        holdout_true = labels[:300]
        inputs.leaderboard = pd.DataFrame({"trial": [f"t{i:02d}" for i in range(15)],
                                           "score": np.linspace(0.995, 0.95, 15)})
        inputs.holdout_true = holdout_true
        inputs.holdout_probs = confused_probs(holdout_true, HOLDOUT_CONFUSIONS)
        inputs.test_predictions = labels[::-1][:280]
    return inputs


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict, ReportInputs]:
    run_dir = tmp_path_factory.mktemp("run")
    inputs = synthetic_inputs()
    return run_dir, report.write_report(run_dir, inputs), inputs


def test_wilson_interval_matches_hand_computed_values():
    z2 = scipy.stats.norm.ppf(0.975) ** 2  # 1.95996...²
    # Closed forms at the edges: 0/n has upper bound z²/(n+z²), n/n has lower bound n/(n+z²).
    assert accuracy_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert accuracy_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    assert accuracy_interval(0, 10)[1] == pytest.approx(0.277533, abs=1e-6)
    # In between: the interval's ends are the roots of (p̂ - p)² = z² p (1 - p) / n.
    correct, total = 592, 600
    share = correct / total
    roots = np.roots([1 + z2 / total, -(2 * share + z2 / total), share ** 2])
    assert accuracy_interval(correct, total) == pytest.approx(tuple(sorted(roots)))
    with pytest.raises(ValueError):
        accuracy_interval(0, 0)


def test_metrics_count_exactly_the_injected_mistakes(written):
    _, metrics, inputs = written
    ensemble_errors = sum(ENSEMBLE_CONFUSIONS.values())
    assert metrics["num_images"] == SIZE
    assert metrics[report.ENSEMBLE]["errors"] == ensemble_errors
    assert metrics[report.ENSEMBLE]["accuracy"] == (SIZE - ensemble_errors) / SIZE
    low, high = accuracy_interval(SIZE - ensemble_errors, SIZE)
    assert (metrics[report.ENSEMBLE]["ci95_low"], metrics[report.ENSEMBLE]["ci95_high"]) == (low,
                                                                                           high)
    assert low < (SIZE - ensemble_errors) / SIZE < high
    assert metrics["models"]["rank1"]["errors"] == ensemble_errors + 4
    assert metrics["models"]["rank2"]["errors"] == ensemble_errors + 6
    assert metrics["ensemble_weights"] == {"rank1": 0.6, "rank2": 0.4}


def test_confusion_matrix_and_report_agree_with_the_labels(written):
    _, metrics, inputs = written
    matrix = np.array(metrics["confusion_matrix"])
    support = np.bincount(inputs.y_true, minlength=10)
    assert matrix.shape == (10, 10) and matrix.sum() == SIZE
    np.testing.assert_array_equal(matrix.sum(axis=1), support)
    assert matrix[4, 9] == 5 and matrix[7, 1] == 3
    assert np.trace(matrix) == SIZE - 8
    assert metrics["most_confused"] == [{"true": 4, "predicted": 9, "count": 5},
                                        {"true": 7, "predicted": 1, "count": 3}]
    per_digit = metrics["classification_report"]
    assert [per_digit[str(digit)]["support"] for digit in range(10)] == support.tolist()
    assert per_digit["4"]["recall"] == (support[4] - 5) / support[4]
    assert per_digit["9"]["precision"] == support[9] / (support[9] + 5)
    assert per_digit["accuracy"] == (SIZE - 8) / SIZE


def test_optional_inputs_reach_the_metrics(written):
    _, metrics, inputs = written
    assert metrics["holdout"]["errors"] == 2 and metrics["holdout"]["total"] == 300
    assert np.array(metrics["holdout"]["confusion_matrix"])[5, 3] == 2
    assert metrics["test_predicted_counts"] == np.bincount(inputs.test_predictions,
                                                           minlength=10).tolist()
    assert metrics["run_info"]["seed"] == 42 and metrics["timings"]["train"] == 754.0


def test_the_ensemble_is_also_scored_without_the_images_the_search_chose_it_on():
    inputs = synthetic_inputs()
    wrong = np.flatnonzero(inputs.ensemble_probs.argmax(axis=1) != inputs.y_true)
    right = np.flatnonzero(inputs.ensemble_probs.argmax(axis=1) == inputs.y_true)
    inputs.search_holdout = np.isin(np.arange(SIZE), np.concatenate([wrong[:2], right[:10]]))
    metrics = build_metrics(inputs)
    outside = metrics["ensemble_outside_search_holdout"]
    assert (outside["errors"], outside["total"], outside["left_out"]) == (
        len(wrong) - 2, SIZE - 12, 12)
    assert outside["accuracy"] == (SIZE - 12 - len(wrong) + 2) / (SIZE - 12)
    text = render_markdown(report.report_blocks(inputs, metrics, figures=[]))
    assert (f"The same, without the 12 images the search chose the members on: "
            f"{outside['accuracy']:.2%}") in text
    assert synthetic_inputs().search_holdout is None  # no search: no such line
    assert build_metrics(synthetic_inputs())["ensemble_outside_search_holdout"] is None
    # A hold-out none of whose images is here (a --train-samples subsample that missed
    # them): "without the 0 images" repeated the headline.
    inputs.search_holdout = np.zeros(SIZE, bool)
    assert build_metrics(inputs)["ensemble_outside_search_holdout"] is None


def test_metrics_json_is_strict_json_equal_to_the_returned_metrics(written):
    run_dir, metrics, _ = written

    def no_constants(name):
        raise AssertionError(f"metrics.json holds {name}, which is not JSON")

    loaded = json.loads((run_dir / "metrics.json").read_text(), parse_constant=no_constants)
    assert loaded == metrics


def test_every_file_is_written_and_every_figure_is_an_image(written):
    run_dir, _, _ = written
    figures = ["model_accuracy.png", "per_digit.png", "confusion_matrix.png",
               "misclassified.png", "training_curves.png", "class_balance.png"]
    assert sorted(path.name for path in run_dir.iterdir()) == sorted(
        ["metrics.json", "report.md", "report.html", *figures])
    for name in figures:
        pixels = matplotlib.image.imread(run_dir / name)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 600, name
        assert pixels.std() > 0.05, f"{name} is blank"


def test_an_accuracy_with_an_error_never_reads_100_percent():
    low, high = accuracy_interval(41_999, 42_000)
    score = {"accuracy": 41_999 / 42_000, "errors": 1, "total": 42_000, "ci95_low": low,
             "ci95_high": high}
    assert report._accuracy_line("Ensemble", score) == (
        "Ensemble: 99.99% (95% CI 99.99–100.00%, 1 error of 42,000)")
    assert [format_accuracy(share) for share in (1.0, 0.99995, 0.98666)] == [
        "100.00%", "99.99%", "98.67%"]
    assert format_accuracy(0.999999, decimals=3) == "99.999%"


def test_a_failed_trial_does_not_put_the_leaderboard_in_scientific_notation():
    # Its blank cells make the columns floats, which .4g printed as 1.235e+06.
    leaderboard = pd.DataFrame({"trial": ["0003", "0004"], "status": ["COMPLETED", "FAILED"],
                                "val_accuracy": [0.99571, None], "params": [1_234_567, None],
                                "seconds": [12_345.0, None]})
    _, table = report._leaderboard_section(leaderboard)
    assert table.rows == [["0003", "COMPLETED", "0.9957", "1,234,567", "12,345"],
                          ["0004", "FAILED", "—", "—", "—"]]


def test_markdown_shows_user_text_as_written():
    # A message "5* ensemble" left the bold Kaggle line half-italic; a UNC path lost a
    # backslash; a seed of 2024 read 2,024, which --seed does not take.
    from src.document import Paragraph

    markdown_it = pytest.importorskip("markdown_it")  # Keras' rich brings it

    texts = ["5* ensemble", r"\\nas\digits\train.csv", r"C:\runs\[old]", "a *c* d",
             "_x_", "val_log_loss", "`code`", "~~gone~~", "a<b & c"]
    page = markdown_it.MarkdownIt("commonmark").enable("table").enable("strikethrough")
    for text in texts:
        rendered = page.render(render_markdown([Paragraph(text, strong=True)]))
        assert rendered == f"<p><strong>{escape(text, quote=False)}</strong></p>\n", text
    table = report._mapping_table({"seed": 2024, "images": 42000, "train_file": texts[1],
                                   "batch_size": 1024, "train_samples": 12000})
    assert table.rows == [["seed", "2024"], ["images", "42,000"],
                          ["train_file", texts[1]], ["batch_size", "1024"],
                          ["train_samples", "12000"]]
    assert report._format_value(999.96) == "1,000" == report._format_value(1000.0)


def test_markdown_has_the_headline_and_links_every_figure(written):
    run_dir, metrics, _ = written
    text = (run_dir / "report.md").read_text()
    low, high = accuracy_interval(SIZE - 8, SIZE)
    headline = (f"Ensemble out-of-fold accuracy: {(SIZE - 8) / SIZE:.2%} "
                f"(95% CI {100 * low:.2f}–{100 * high:.2f}%, 8 errors of 600)")
    assert headline == ("Ensemble out-of-fold accuracy: 98.67% "
                        "(95% CI 97.39–99.32%, 8 errors of 600)")
    assert f"**{headline}**" in text
    for png in run_dir.glob("*.png"):
        assert f"]({png.name})" in text
    assert "| rank1 | 98.00% | " in text  # (600 - 12) / 600
    assert "t09" in text and "t10" not in text  # the leaderboard's top 10 rows only
    assert "| train | 754.0 | 12m34s |" in text  # durations read as the commands print them
    assert "Ensemble test-set accuracy: 99.33%" in text
    assert "&lt;script&gt;" in text and INJECTED not in text


def test_html_is_standalone_and_escapes_run_info(written):
    run_dir, _, _ = written
    page = (run_dir / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page and "://" not in page
    for png in run_dir.glob("*.png"):
        assert f'<img src="{png.name}"' in page
    assert "Ensemble out-of-fold accuracy: 98.67%" in page


def test_a_perfect_run_without_extras_still_reports(tmp_path):
    inputs = synthetic_inputs(size=200, confusions={}, with_extras=False)
    inputs.histories = []
    metrics = report.write_report(tmp_path, inputs)
    assert metrics[report.ENSEMBLE]["errors"] == 0 and metrics["most_confused"] == []
    assert metrics["holdout"] is None and metrics["test_predicted_counts"] is None
    names = {path.name for path in tmp_path.iterdir()}
    assert names == {"metrics.json", "report.md", "report.html", "model_accuracy.png",
                     "per_digit.png", "confusion_matrix.png"}
    text = (tmp_path / "report.md").read_text()
    assert "No training digit is misclassified" in text and "No training histories" in text


def test_gallery_order_is_most_confident_mistake_first():
    labels = np.array([0, 1, 2, 3, 4])
    probs = np.eye(10)[labels] * 0.9 + 0.01
    probs[1] = np.eye(10)[7] * 0.6 + 0.04  # wrong, confidence 0.64
    probs[3] = np.eye(10)[8] * 0.8 + 0.02  # wrong, confidence 0.82
    assert worst_misclassified(labels, probs).tolist() == [3, 1]
    assert worst_misclassified(labels, probs, limit=1).tolist() == [3]


def test_mismatched_lengths_are_refused(tmp_path):
    inputs = synthetic_inputs(size=100, confusions={}, with_extras=False)
    inputs.model_probs["rank1"] = inputs.model_probs["rank1"][:-1]
    with pytest.raises(ValueError, match=r"model_probs\['rank1'\] has 99 rows"):
        report.write_report(tmp_path, inputs)
    assert list(tmp_path.iterdir()) == []


def benchmark(size: int = 42_000) -> None:
    """Print how long write_report takes for ``size`` images (181 ensemble errors, 2 models
    x 5 folds of 12 epochs), the real training set's size."""
    confusions = {(4, 9): 80, (7, 1): 60, (3, 5): 41}
    inputs = synthetic_inputs(size, confusions, folds=5)
    inputs.histories = [{**entry, "history": _history(12, 0)} for entry in inputs.histories]
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        metrics = report.write_report(Path(run_dir), inputs)
        seconds = time.perf_counter() - start
    print(f"write_report: {size:,} images, {metrics['ensemble']['errors']} errors: "
          f"{seconds:.2f} s")


def _kaggle_record(status: str, score: float | None = None, message: str = "quick <b>run</b>"):
    return {"ref": 7, "message": message, "file_name": "submission.csv",
            "date": "2026-11-24T10:01:00+00:00", "status": status, "public_score": score,
            "error": "", "competition": "digit-recognizer"}


def test_kaggle_score_goes_under_the_headline_and_replaces_the_pending_line(tmp_path):
    inputs = synthetic_inputs(size=200, confusions={}, with_extras=False)
    before = report.write_report(tmp_path, inputs)
    figures = {path.name: path.read_bytes() for path in tmp_path.glob("*.png")}
    # An earlier record killed mid-write left its partial file: the next record removes it.
    stale = tmp_path / f".partial-{ended_pid()}@{socket.gethostname()}@metrics.json"
    stale.write_text("{")
    kaggle_record.record_kaggle(tmp_path, _kaggle_record("pending"))
    assert not stale.exists()
    assert "has not scored the submission yet" in (tmp_path / "report.md").read_text()
    metrics = kaggle_record.record_kaggle(tmp_path, _kaggle_record("complete", 0.99567))

    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == {**before, "kaggle": _kaggle_record("complete", 0.99567)}
    line = ("Kaggle public score: 0.99567 (99.567%) beside 100.000% out of fold; submitted "
            "2026-11-24 10:01 UTC as ")
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.count("<!-- kaggle -->") == 1 and "has not scored" not in markdown
    headline, kaggle, models = markdown.index("**Ensemble out-of-fold"), markdown.index(
        line), markdown.index("## Models")
    assert headline < kaggle < models and "&lt;b&gt;run&lt;/b&gt;" in markdown
    page = (tmp_path / "report.html").read_text()
    assert page.count(line) == 1 and page.index(line) < page.index("<h2>Models</h2>")
    assert "<b>run</b>" not in page and "&lt;b&gt;run&lt;/b&gt;" in page  # escaped
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.png")} == figures
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_a_gallery_of_one_mistake_says_one_error():
    """Its title read "1 most confident of 1 errors"."""
    from src import figures

    images = np.zeros((2, 28, 28, 1), np.uint8)
    probs = np.array([[0.9, 0.1] + [0.0] * 8, [0.2, 0.8] + [0.0] * 8])
    figure = figures._plot_misclassified(images, np.array([1, 1]), probs, np.array([0]), 1)
    assert figure._suptitle.get_text().endswith("1 most confident of 1 error")


def test_runs_of_one_second_keep_their_numbers_on_runs_png():
    """Labelled by their first 15 characters, both read 20261206-101500."""
    from src import figures

    assert figures.run_label("20261206-101500-quick-kaggle") == "20261206-101500"
    assert figures.run_label("20261206-101500-quick-kaggle-2") == "20261206-101500-2"
    assert figures.run_label("20261206-101500-blend-kaggle") == "20261206-101500"
