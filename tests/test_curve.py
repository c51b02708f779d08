"""python -m src.bench --curve: the recipes, the plans through a stand-in submit, the files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pytest

from src import bench, bench_runs, curve, recipes
from src.config import run_cli
from tests.fixtures import write_kaggle_csvs

TRAIN_IMAGES = 200  # about 20 of each digit: 3 stratified folds, seconds to train


@pytest.fixture(scope="module")
def tiny_kaggle_dir(tmp_path_factory) -> Path:
    """The fixture CSVs with only the first TRAIN_IMAGES training images."""
    folder = write_kaggle_csvs(tmp_path_factory.mktemp("tiny-kaggle"))
    header, *rows = (folder / "train.csv").read_text().splitlines()
    (folder / "train.csv").write_text("\n".join([header, *rows[:TRAIN_IMAGES]]) + "\n")
    return folder


def _args(tmp_path, *extra):
    return ["--artifacts-dir", str(tmp_path / "artifacts"),
            "--submissions-dir", str(tmp_path / "submissions"), *extra]


def _fake_metrics(minutes: float) -> dict:
    total, errors = 42_000, int(200 - minutes)
    score = {"accuracy": (total - errors) / total, "ci95_low": 0.99, "ci95_high": 0.999,
             "errors": errors, "total": total}
    return {"ensemble": score, "models": {"default": score}, "timings": {"total": minutes * 55},
            "plan": {"minutes": minutes, "epochs": 19, "eta_seconds": minutes * 58},
            "run_info": {"command": "python -m src.submit", "profile": "quick", "folds": 3,
                         "epochs": 19, "tta": True, "precision": "mixed_bfloat16",
                         "pseudo_epochs": None}}


def _stand_in_submit(calls: list, failing_minutes: str):
    """A bench_runs.run_stage that writes a fake metrics.json where python -m src.submit would,
    and exits 2 for the budget failing_minutes."""

    def run_stage(stage, flags):
        given = dict(zip(flags[::2], flags[1::2], strict=True))
        calls.append((stage, given))
        if given["--minutes"] == failing_minutes:
            return 2, 1.5
        latest = Path(given["--submissions-dir"]) / "latest"
        latest.mkdir(parents=True)
        (latest / "metrics.json").write_text(json.dumps(_fake_metrics(float(given["--minutes"]))))
        return 0, float(given["--minutes"]) * 60

    return run_stage


def _rows(text: str) -> dict[str, list[str]]:
    """name -> the other cells, for every data row of the curve's table."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and cells[0] != "Name":
            rows[cells[0]] = cells[1:]
    return rows


class _FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def test_recipe_networks_are_their_authors_and_augment_only_in_training():
    example, deotte = recipes.keras_example(), recipes.kaggle_one_network()
    assert example.count_params() == 34_826  # the Keras example's model.summary()
    flat = [layer for layer in deotte.layers if layer.name.startswith("flatten")][0]
    assert tuple(flat.input.shape[1:]) == (4, 4, 64)  # 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4
    images = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(deotte(images, training=False), deotte(images, training=False))
    augmentation = keras.Sequential(deotte.layers[:3])  # his ImageDataGenerator, as layers
    assert [type(layer).__name__ for layer in augmentation.layers] == [
        "RandomRotation", "RandomZoom", "RandomTranslation"]
    np.testing.assert_array_equal(augmentation(images, training=False), images)
    assert not np.allclose(augmentation(images, training=True), images)
    assert recipes.deotte_learning_rate(0) == 1e-3
    assert recipes.deotte_learning_rate(2) == pytest.approx(1e-3 * 0.95 ** 2)


@pytest.mark.slow
def test_curve_scores_plans_and_recipes_and_never_overwrites(tiny_kaggle_dir, tmp_path, capsys,
                                                            monkeypatch):
    calls = []
    monkeypatch.setattr(bench_runs, "run_stage", _stand_in_submit(calls, failing_minutes="15"))
    monkeypatch.setattr(curve, "datetime", _FixedClock)
    argv = _args(tmp_path, "--data-dir", str(tiny_kaggle_dir), "--seed", "3", "--curve", "8",
                 "15", "2.5", "--recipe-epochs", "1")
    assert run_cli(bench.main, argv) == 0
    out = capsys.readouterr().out
    bench_dir = tmp_path / "artifacts" / "bench"
    assert out.startswith("note: --submissions-dir is not used: the runs of --curve and "
                          f"--run-quick publish in a fresh folder under {bench_dir}\n")

    # Each budget ran python -m src.submit on the bench's data, seed and precision, in its
    # own fresh folder under the bench's.
    assert [(stage, given["--minutes"]) for stage, given in calls] == [
        ("submit", "8"), ("submit", "15"), ("submit", "2.5")]
    folders = {given["--artifacts-dir"] for _, given in calls}
    assert len(folders) == 3
    assert all(folder.startswith(str(bench_dir / "curve-20261125-120000" / "plan-"))
               for folder in folders)
    for _, given in calls:
        assert given["--data-dir"] == str(tiny_kaggle_dir) and given["--seed"] == "3"
        assert given["--precision"] == "auto"

    rows = _rows(out)
    assert list(rows) == ["plan 8 min", "plan 15 min", "plan 2.5 min", "keras-example",
                          "kaggle-one-network"]
    assert rows["plan 8 min"] == [
        "python -m src.submit --minutes 8", "8.0", f"{100 * (42_000 - 192) / 42_000:.3f}",
        "99.00–99.90%", "192 of 42,000",
        "default x 3 folds x 19 epochs, TTA, mixed_bfloat16"]
    assert rows["plan 15 min"][2:] == ["—", "", "", "python -m src.submit exited with code 2"]
    for name in ("keras-example", "kaggle-one-network"):
        assert rows[name][-2].endswith(f" of {TRAIN_IMAGES}")
        assert "x 1 epoch," in rows[name][-1] and "no TTA" in rows[name][-1]

    md, js, png = (bench_dir / f"curve-20261125-120000{suffix}" for suffix in (".md", ".json",
                                                                              ".png"))
    assert md.read_text() in out and str(png) in out
    assert png.read_bytes().startswith(b"\x89PNG")
    report = json.loads(js.read_text())
    points = {point["name"]: point for point in report["points"]}
    assert points["plan 8 min"]["plan"]["epochs"] == 19
    assert points["plan 15 min"]["accuracy"] is None
    for name in ("keras-example", "kaggle-one-network"):
        point = points[name]  # an OOF prediction for every training image
        assert point["total"] == TRAIN_IMAGES and 0 <= point["accuracy"] <= 1
        assert point["wall_seconds"] > 0 and point["budget_minutes"] is None
        assert report["policy"] in point["trained"]

    # A second curve in the same second writes beside the first, never over it.
    before = {path: path.read_bytes() for path in (md, js, png)}
    monkeypatch.setattr(curve, "RECIPES", ())
    assert run_cli(bench.main, _args(tmp_path, "--data-dir", str(tiny_kaggle_dir),
                                     "--curve", "8")) == 0
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in bench_dir.glob("curve-*-2*")) == [
        "curve-20261125-120000-2", "curve-20261125-120000-2.json",
        "curve-20261125-120000-2.md", "curve-20261125-120000-2.png"]
    assert calls[-1][1]["--artifacts-dir"].startswith(
        str(bench_dir / "curve-20261125-120000-2" / "plan-8min"))
    assert not (tmp_path / "submissions").exists()  # the user's own runs are left alone


def test_a_killed_curve_run_again_keeps_its_finished_points(tiny_kaggle_dir, tmp_path,
                                                           capsys, monkeypatch):
    calls = []
    finishing = _stand_in_submit(calls, failing_minutes="none")

    def killed_at_15(stage, flags):
        if dict(zip(flags[::2], flags[1::2], strict=True))["--minutes"] == "15":
            raise KeyboardInterrupt  # Ctrl-C, or a kill, during the second budget
        return finishing(stage, flags)

    monkeypatch.setattr(curve, "RECIPES", ())
    monkeypatch.setattr(curve, "datetime", _FixedClock)
    argv = _args(tmp_path, "--data-dir", str(tiny_kaggle_dir), "--curve", "8", "15", "30")
    monkeypatch.setattr(bench_runs, "run_stage", killed_at_15)
    assert run_cli(bench.main, argv) == 130
    bench_dir = tmp_path / "artifacts" / "bench"
    kept = json.loads((bench_dir / "curve-20261125-120000" / curve.POINTS_FILE).read_text())
    assert [point["name"] for point in kept["points"]] == ["plan 8 min"]
    # Other settings start a curve of their own; the same ones go on with the killed one.
    monkeypatch.setattr(bench_runs, "run_stage", finishing)
    assert run_cli(bench.main, _args(tmp_path, "--data-dir", str(tiny_kaggle_dir),
                                     "--curve", "8")) == 0
    assert "going on with" not in capsys.readouterr().out
    calls.clear()
    assert run_cli(bench.main, argv) == 0
    out = capsys.readouterr().out
    assert f"curve: going on with {bench_dir / 'curve-20261125-120000'}: 1 point(s) kept" in out
    assert [given["--minutes"] for _, given in calls] == ["15", "30"]  # not 8 again
    assert calls[0][1]["--artifacts-dir"].startswith(
        str(bench_dir / "curve-20261125-120000" / "plan-15min-2"))  # fresh: a timing's start
    assert list(_rows(out)) == ["plan 8 min", "plan 15 min", "plan 30 min"]
    report = json.loads((bench_dir / "curve-20261125-120000.json").read_text())
    assert [point["wall_seconds"] for point in report["points"]] == [480.0, 900.0, 1800.0]
    # Finished: a new curve, not that one again, even with its files moved away (to a docs
    # folder, say): the folder's points.json says it finished.
    (tmp_path / "docs").mkdir()
    for path in bench_dir.glob("curve-20261125-120000.*"):
        path.rename(tmp_path / "docs" / path.name)
    assert run_cli(bench.main, argv) == 0
    assert "going on with" not in capsys.readouterr().out


def _curve_killed_at_15(tiny_kaggle_dir, tmp_path, monkeypatch, calls: list,
                        failing_minutes: str) -> list[str]:
    """Run a curve of 8 and 15 minutes (no recipes) killed during its 15-minute budget,
    its submits stand-ins (failing_minutes' exits 2); its command line."""
    stand_in = _stand_in_submit(calls, failing_minutes)

    def killed_at_15(stage, flags):
        if dict(zip(flags[::2], flags[1::2], strict=True))["--minutes"] == "15":
            raise KeyboardInterrupt  # Ctrl-C, or a kill
        return stand_in(stage, flags)

    monkeypatch.setattr(curve, "RECIPES", ())
    monkeypatch.setattr(curve, "datetime", _FixedClock)
    argv = _args(tmp_path, "--data-dir", str(tiny_kaggle_dir), "--curve", "8", "15")
    monkeypatch.setattr(bench_runs, "run_stage", killed_at_15)
    assert run_cli(bench.main, argv) == 130
    return argv


def test_a_point_that_failed_is_measured_again_when_a_killed_curve_goes_on(
        tiny_kaggle_dir, tmp_path, capsys, monkeypatch):
    calls = []
    argv = _curve_killed_at_15(tiny_kaggle_dir, tmp_path, monkeypatch, calls, "8")
    monkeypatch.setattr(bench_runs, "run_stage", _stand_in_submit(calls, failing_minutes="none"))
    calls.clear()
    capsys.readouterr()
    assert run_cli(bench.main, argv) == 0
    out = capsys.readouterr().out
    assert "1 point(s) kept" not in out and "0 point(s) kept" in out
    assert [given["--minutes"] for _, given in calls] == ["8", "15"]
    assert "exited with code" not in out


def test_a_killed_curve_is_not_resumed_by_another_version_of_the_package(
        tiny_kaggle_dir, tmp_path, capsys, monkeypatch):
    # The curve's plans run the planner and its recipes src.recipes, not only the code
    # that shapes a fold model: an edit to either must not mix two versions in one table.
    package = tmp_path / "package"
    package.mkdir()
    for name in ("plan.py", "recipes.py"):
        (package / name).write_text(f"# {name}\n")
    monkeypatch.setattr(curve, "package_code_version",
                        partial(curve.package_code_version, package))
    calls = []
    for edited in ("plan.py", "recipes.py"):
        _curve_killed_at_15(tiny_kaggle_dir, tmp_path, monkeypatch, calls, "none")
        assert "going on with" not in capsys.readouterr().out
        (package / edited).write_text(f"# {edited}, edited\n")
    argv = _curve_killed_at_15(tiny_kaggle_dir, tmp_path, monkeypatch, calls, "none")
    assert "going on with" not in capsys.readouterr().out
    monkeypatch.setattr(bench_runs, "run_stage", _stand_in_submit(calls, failing_minutes="none"))
    assert run_cli(bench.main, argv) == 0  # the same code goes on with its killed curve
    assert "going on with" in capsys.readouterr().out


def _kept_point(points: list[dict], damage: str) -> None:
    """Damage the one kept point (plan 8 min) of a killed curve's points.json in place."""
    point = points[0]
    if damage == "wall_seconds_text":
        point["wall_seconds"] = "abc"
    elif damage == "accuracy_nan":
        point["accuracy"] = float("nan")
    elif damage == "accuracy_above_1":
        point["accuracy"] = 5.0
    elif damage == "name_a_number":
        point["name"] = 8
    elif damage == "another_budget":
        point["name"], point["budget_minutes"] = "plan 99 min", 99
    elif damage == "twice":
        points.append(dict(point))
    elif damage == "a_recipe_name_on_a_plan":
        point["name"] = "keras-example"
    elif damage == "unknown_field":
        point["colour"] = "red"
    elif damage == "one_bound_null":
        point["ci95_high"] = None
    elif damage == "errors_without_total":
        point["total"] = None
    elif damage == "a_plan_without_its_budget":
        point["budget_minutes"] = None


@pytest.mark.parametrize("damage", [
    "no_utc", "wall_seconds_text", "accuracy_nan", "accuracy_above_1", "name_a_number",
    "another_budget", "twice", "a_recipe_name_on_a_plan", "unknown_field", "one_bound_null",
    "errors_without_total", "a_plan_without_its_budget", "not_json"])
def test_a_killed_curve_whose_points_cannot_be_used_starts_anew_with_a_warning(
        tiny_kaggle_dir, tmp_path, capsys, monkeypatch, damage):
    """Each was a traceback on every rerun (no utc: KeyError; text or a number out of range:
    while printing the table or the figure), or printed a row of another curve (exit 0)."""
    calls = []
    argv = _curve_killed_at_15(tiny_kaggle_dir, tmp_path, monkeypatch, calls, "none")
    finishing = _stand_in_submit(calls, failing_minutes="none")
    points_file = tmp_path / "artifacts" / "bench" / "curve-20261125-120000" / curve.POINTS_FILE
    kept = json.loads(points_file.read_text())
    if damage == "no_utc":
        del kept["utc"]
    elif damage != "not_json":
        _kept_point(kept["points"], damage)
    points_file.write_text(json.dumps(kept)[:-20] if damage == "not_json" else json.dumps(kept))
    monkeypatch.setattr(bench_runs, "run_stage", finishing)
    calls.clear()
    capsys.readouterr()
    with pytest.warns(UserWarning) as caught:
        assert run_cli(bench.main, argv) == 0
    out = capsys.readouterr().out
    assert "going on with" not in out
    (message,) = [str(warning.message) for warning in caught]
    assert message.startswith(f"{points_file}: ") and message.endswith(
        f"; its points are not kept (delete {points_file.parent} to be rid of this warning)")
    assert "\n" not in message
    assert [given["--minutes"] for _, given in calls] == ["8", "15"]  # both measured anew
    assert list(_rows(out)) == ["plan 8 min", "plan 15 min"]


BUDGET = "minutes > 0 up to 525600, such as 8 15 30"


@pytest.mark.parametrize("flags, message", [
    (["--curve", "0"], f"--curve: expected {BUDGET}, found '0'"),
    (["--curve", "8", "-3"], f"--curve: expected {BUDGET}, found '-3'"),
    (["--curve", "ten"], f"--curve: expected {BUDGET}, found 'ten'"),
    (["--curve", "nan"], f"--curve: expected {BUDGET}, found 'nan'"),
    (["--curve", "1e308"], f"--curve: expected {BUDGET}, found '1e308'"),
    (["--curve", "8", "15", "8.0"], "--curve: expected each budget once, found '8.0' again"),
    (["--curve", "8.0000001", "8.0000002"],  # both would be the point "plan 8 min"
     "--curve: expected each budget once, found '8.0000002' again"),
    (["--recipe-epochs", "3"], "--recipe-epochs: expected --curve with --recipe-epochs, "
                               "found no --curve"),
    (["--keras-npz", "mnist.npz"], "--keras-npz: expected --source keras with --keras-npz, "
                                   "found --source kaggle"),
    (["--curve", "--recipe-epochs", "0"],
     "--recipe-epochs: expected an integer 1..2147483647, found 0"),
    # the speed rows' flags: a curve ignored them without a word
    (["--curve", "8", "--levers"], "--levers: expected --levers without --curve, found both"),
    (["--run-quick", "--curve"], "--run-quick: expected --run-quick without --curve, found both"),
    (["--curve", "--bench-images", "500"],
     "--bench-images: expected --bench-images without --curve, found both"),
    (["--curve", "8", "--batch-size", "256"],
     "--batch-size: expected --batch-size without --curve, found both"),
])
def test_bad_curve_flags_are_one_line_exit_2(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(bench_runs, "run_stage", lambda *args: pytest.fail("nothing may run"))
    assert run_cli(bench.main, _args(tmp_path, *flags)) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "artifacts").exists()


def test_curve_figure_draws_plans_recipes_and_unscored_points():
    points = [{"name": "plan 8 min", "budget_minutes": 8.0, "wall_seconds": 470.0,
               "accuracy": 0.99567, "ci95_low": 0.9950, "ci95_high": 0.9963},
              {"name": "plan 15 min", "budget_minutes": 15.0, "wall_seconds": 2.0,
               "accuracy": None, "ci95_low": None, "ci95_high": None},
              {"name": "keras-example", "budget_minutes": None, "wall_seconds": 200.0,
               "accuracy": 0.991, "ci95_low": None, "ci95_high": None}]
    assert curve.figures.curve_png(points).startswith(b"\x89PNG")
    assert curve.figures.curve_png([]).startswith(b"\x89PNG")
