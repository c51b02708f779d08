"""python -m src.bench: the smoke run, its files, the notebook baseline and the profile figures."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from src import bench, bench_runs, bench_timing, notebook_way, processes, run_folders, util
from src.config import run_cli
from src.errors import DataError
from tests.conftest import REPO_ROOT
from tests.fixtures import disk_full, ended_pid, sleeping_stage, stage_outlives_its_parent

TRAIN_WAYS = ("package: uint8 → tf.data → fit", "package: src.model.fit, 6 epochs",
              "notebook: float32, SciPy augmentation")
PREDICT_WAYS = ("package: 1 model", "package: ensemble of 1, no TTA",
                "package: ensemble of 1, TTA", "notebook: 1 model")
CSV_WAYS = ("package: load_kaggle", "notebook: pd.read_csv")


def _args(tmp_path, *extra):
    return ["--profile", "smoke", "--artifacts-dir", str(tmp_path / "artifacts"),
            "--submissions-dir", str(tmp_path / "submissions"), *extra]


def _table_rows(text: str) -> dict[str, list[str]]:
    """'task | way' -> the other cells, for every data row of the printed tables."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] not in ("Task",) and len(cells) == 8:
            rows[f"{cells[0]} | {cells[1]}"] = cells[2:]
    return rows


def _row_key(rows: dict[str, list[str]], task: str, way: str) -> str:
    [key] = [key for key in rows if key.startswith(f"{task} | {way}")]
    return key


def _positive(cell: str) -> float:
    value = float(re.sub(r"[,×]", "", cell))
    assert value > 0, cell
    return value


def _bench_files(tmp_path):
    return sorted((tmp_path / "artifacts" / "bench").glob("bench-*"))


@pytest.mark.slow
def test_smoke_bench_prints_the_table_and_writes_new_files(kaggle_dir_readonly, tmp_path,
                                                           capsys, monkeypatch):
    assert run_cli(bench.main, _args(tmp_path, "--data-dir", str(kaggle_dir_readonly))) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    for task, ways in (("train", TRAIN_WAYS), ("predict", PREDICT_WAYS), ("load CSV", CSV_WAYS)):
        for way in ways:
            images, seconds, per_second, per_cpu_second, *ratio = rows[_row_key(rows, task, way)]
            for cell in (images, seconds, per_second, per_cpu_second):
                _positive(cell)
            if way.startswith("package"):
                _positive(ratio[0])
                _positive(ratio[1])
    assert rows[_row_key(rows, "load CSV", "package")][0] == "1,797"  # 1,497 train + 300 test
    assert "no finished run at" in out
    js, md = _bench_files(tmp_path)
    assert md.suffix == ".md" and js.suffix == ".json" and md.stem == js.stem
    assert md.read_text() in out
    figures = json.loads(js.read_text())
    assert len(figures["rows"]) == 9 and figures["machine"]["usable_cores"] >= 1
    assert all(row["images"] > 0 and row["wall_seconds"] > 0 and row["cpu_seconds"] > 0
               for row in figures["rows"])

    # Without data the bench still runs, on random images, says so, and writes new files;
    # a --precision, which only --run-quick's stages use, is said to leave the rows float32.
    monkeypatch.chdir(tmp_path)
    first = md.read_text()
    assert run_cli(bench.main, _args(tmp_path, "--precision", "mixed_bfloat16")) == 0
    out = capsys.readouterr().out
    assert "load CSV rows skipped: no train.csv found" in out and "random pixels" in out
    assert "--precision mixed_bfloat16 applies to --run-quick only" in out
    rows = _table_rows(out)
    assert len(rows) == 7 and not [key for key in rows if key.startswith("load CSV")]
    files = _bench_files(tmp_path)
    assert len(files) == 4 and md in files and js in files and md.read_text() == first


@pytest.mark.slow
def test_levers_time_every_lever_against_the_batch_size_in_use():
    rng = np.random.default_rng(0)
    count = bench_timing.training_images_needed(256, bench_timing.LEVER_BATCH_SIZES)
    x = rng.integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)
    rows = bench_timing.lever_rows(x, rng.integers(0, 10, count), batch_size=64, images=256,
                                   seed=0)
    assert [row.way for row in rows][:3] == ["batch 64", "batch 128", "batch 256"]
    assert len(rows) == 8 and all(row.compared_to == "batch 64" for row in rows[1:])
    [parallel] = [row for row in rows if row.way.startswith("2 worker processes")]
    for row in rows:
        if row.failure:  # XLA cannot compile the in-graph augmentation on a CPU
            assert row.way == "XLA (jit_compile=True)"
            assert "ImageProjectiveTransformV3" in row.failure
        else:
            # the parallel row counts both workers' images
            assert row.images == (512 if row is parallel else 256)
            assert row.wall_seconds > 0 and row.cpu_seconds > 0
            assert row.way == "batch 64" or bench_timing.ratios(row, rows)[1] > 0
    assert keras.mixed_precision.global_policy().name == "float32"
    table = bench.markdown_table(rows)
    assert "| train (lever) | batch 64 | 256 |" in table and "| baseline |" in table


def test_workers_at_once_are_timed_over_the_span_of_their_stretches():
    # Worker A trains 0-10 s, worker B 2-13 s: 13 s for both, not the longest stretch's 11.
    row = bench_timing.together("train (lever)", "2 workers", 256,
                                [((0.0, 1.0), (10.0, 9.0)), ((2.0, 0.5), (13.0, 10.5))])
    assert (row.images, row.wall_seconds, row.cpu_seconds) == (512, 13.0, 18.0)


def test_notebook_model_is_the_package_model_on_scaled_pixels():
    package = notebook_way.package_model(augment=0)
    notebook = notebook_way.float_input_model()
    assert notebook.count_params() == package.count_params()
    notebook.set_weights(package.get_weights())
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_allclose(notebook(images.astype(np.float32) / 255), package(images),
                               atol=1e-5)


def test_notebook_augmentation_moves_pixels_and_zero_strength_does_not():
    image = np.zeros((28, 28, 1), np.float32)
    image[8:20, 12:16] = 1.0
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(notebook_way.augment_image(image, rng, 0.0), image, atol=1e-6)
    moved = notebook_way.augment_image(image, rng, 0.1)
    assert moved.shape == image.shape and not np.allclose(moved, image)
    assert 0.7 < moved.sum() / image.sum() < 1.3  # zoom at most 10%: the digit's ink stays


def test_notebook_batches_are_whole_and_cover_the_images():
    x = np.zeros((10, 28, 28, 1), np.float32)
    batches = notebook_way.NotebookBatches(x, np.arange(10), batch_size=4, strength=0.1, seed=0)
    assert len(batches) == 2
    images, labels = batches[1]
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.float32
    assert len(set(batches[0][1]) | set(labels)) == 8


def test_profile_figures_come_from_the_latest_metrics(tmp_path):
    run_dir = tmp_path / "latest"
    path = run_dir / "metrics.json"
    assert "no finished run at" in bench_runs.run_summary(run_dir)["note"]
    run_dir.mkdir()
    metrics = {"ensemble": {"accuracy": 0.9931, "ci95_low": 0.992, "ci95_high": 0.994},
               "models": {"default": {}}, "timings": {"total": 754.2},
               "run_info": {"profile": "quick", "command": "python -m src.submit", "folds": 3}}
    path.write_text(json.dumps(metrics))
    result = bench_runs.run_summary(run_dir)
    assert result == {"source": str(path), "profile": "quick", "accuracy": 0.9931,
                      "submit_seconds": 754.2}
    lines = "\n".join(bench.profile_lines(result))
    assert "99.31% (profile quick)" in lines and "12m34s" in lines and str(path) in lines
    # --run-quick timed it from the shell, as the search: that time, not metrics.json's
    lines = bench.profile_lines({**result, "tune_wall_seconds": 90, "submit_wall_seconds": 800})
    assert "- python -m src.submit wall time: 13m20s" in lines
    # latest a blend: its time is its runs' and its own, not a submit's
    assert "- python -m src.blend, its runs' time and its own: 12m34s" in bench.profile_lines(
        {**result, "profile": "blend"})
    # Where links cannot be made, latest.txt names the run.
    (tmp_path / "20261206-000000-quick-kaggle").mkdir()
    path.rename(tmp_path / "20261206-000000-quick-kaggle" / "metrics.json")
    run_dir.rmdir()
    (tmp_path / "latest.txt").write_text("20261206-000000-quick-kaggle\n")
    found = bench_runs.run_summary(run_folders.latest_run(tmp_path))
    assert found["accuracy"] == 0.9931
    (tmp_path / "20261206-000000-quick-kaggle" / "metrics.json").rename(path.parent.mkdir() or path)
    (tmp_path / "latest.txt").unlink()
    path.write_text(json.dumps({**metrics, "ensemble": {}}))  # checked as src.runs checks it
    assert bench_runs.run_summary(run_dir)["note"].startswith(
        f"{path}: ensemble.accuracy: expected a share 0..1")
    path.write_text(json.dumps(metrics))  # a field only the curve's details read
    note = bench_runs.run_summary(run_dir, lambda m: {"plan": m["run_info"]["plan"]})["note"]
    assert note == (f"{path} is not a metrics.json of python -m src.submit "
                    "(KeyError: 'plan')")


def test_write_new_files_never_overwrites(tmp_path):
    first = bench_runs.write_new_files(tmp_path, "bench-x", {".md": "one", ".json": "{}"})
    second = bench_runs.write_new_files(tmp_path, "bench-x", {".md": "two", ".json": "{}"})
    assert [p.name for p in second] == ["bench-x-2.md", "bench-x-2.json"]
    assert first[0].read_text() == "one" and second[0].read_text() == "two"
    assert not list(tmp_path.glob(".partial-*"))


def test_write_new_files_takes_the_next_name_when_another_run_takes_it_meanwhile(
        tmp_path, monkeypatch):
    """The names were checked free, then another run of the same second wrote its record:
    os.replace overwrote it. Linked into place, the record takes the next name."""
    link = os.link

    def another_run_first(source, target):
        if Path(target).name == "bench-x.json" and not Path(target).exists():
            Path(target).write_text("the other run's")
        return link(source, target)

    monkeypatch.setattr(util.os, "link", another_run_first)
    written = bench_runs.write_new_files(tmp_path, "bench-x", {".md": "one", ".json": "{}"})
    assert [p.name for p in written] == ["bench-x-2.md", "bench-x-2.json"]
    assert (tmp_path / "bench-x.json").read_text() == "the other run's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-x-2.json", "bench-x-2.md",
                                                          "bench-x.json"]


def test_write_new_files_without_hard_links_still_writes(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(util.os, "link", no_links)
    written = bench_runs.write_new_files(tmp_path, "bench-x", {".md": "one"})
    assert [p.read_text() for p in written] == ["one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-x.md"]


def test_write_new_files_fails_in_one_line_and_writes_none(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(DataError, match=f"^{not_a_folder / 'bench'}: expected a writable"):
        bench_runs.write_new_files(not_a_folder / "bench", "bench-x", {".md": "one"})
    real_write = Path.write_text

    def full_disk_at_json(path, text, *args, **kwargs):
        if path.name.endswith(".json"):  # its partial file
            disk_full()
        return real_write(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk_at_json)
    with pytest.raises(DataError, match="bench-x.json: expected a writable folder"):
        bench_runs.write_new_files(tmp_path, "bench-x", {".md": "one", ".json": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_folder_without_test_csv_is_one_line_exit_2(kaggle_dir, tmp_path, capsys):
    (kaggle_dir / "test.csv").unlink()  # the folder is found by its train.csv
    assert run_cli(bench.main, _args(tmp_path, "--data-dir", str(kaggle_dir))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {kaggle_dir / 'test.csv'}: expected a CSV file, found no "
                          "such file")
    assert err.count("\n") == 1


@pytest.mark.parametrize("images", ["0", "1000000000000"])  # no MemoryError for a trillion
def test_bad_bench_images_is_one_line_exit_2(tmp_path, capsys, images):
    assert run_cli(bench.main, _args(tmp_path, "--bench-images", images)) == 2
    assert capsys.readouterr().err == (
        f"error: --bench-images: expected an integer 1..1000000, found {images}\n")
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_run_quick_times_tune_and_submit_in_a_fresh_folder(kaggle_dir_readonly, tmp_path,
                                                           capsys):
    argv = _args(tmp_path, "--data-dir", str(kaggle_dir_readonly), "--run-quick",
                 "--bench-images", "64")
    assert run_cli(bench.main, argv) == 0
    out = capsys.readouterr().out
    assert "python -m src.tune wall time" in out and "(profile smoke)" in out
    [figures] = [json.loads(p.read_text()) for p in _bench_files(tmp_path) if p.suffix == ".json"]
    run = figures["profile_run"]
    assert 0 <= run["accuracy"] <= 1 and run["tune_wall_seconds"] > 0
    assert run["source"].startswith(str(tmp_path / "artifacts" / "bench" / "run-"))
    assert not (tmp_path / "submissions").exists()  # the user's own runs are left alone
    assert "--submissions-dir is not used: the runs of --curve and --run-quick" in out  # given


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_stage_the_bench_runs_ends_when_the_bench_is_killed(tmp_path):
    # A SIGKILL leaves a process's children running: a killed --curve left python -m
    # src.submit training beside the resumed curve. A stand-in bench starts a stand-in stage
    # the way run_stage does; then it is killed.
    pid_file = tmp_path / "stage.pid"
    bench_stand_in = ("import subprocess, sys; from src.processes import child_environment; "
                      f"subprocess.run([sys.executable, '-c', {sleeping_stage(pid_file)!r}], "
                      "env=child_environment())")
    if stage_outlives_its_parent(bench_stand_in, pid_file, REPO_ROOT):
        pytest.fail("the stage outlived the bench that started it")


def test_a_parent_pid_set_by_hand_is_ignored_with_a_warning(monkeypatch):
    watched = []
    monkeypatch.setattr(processes, "watch_parent", watched.append)
    monkeypatch.setenv(processes.PARENT_PID_ENV, str(os.getpid()))  # alive, and not our parent
    with pytest.warns(UserWarning, match=f"^{processes.PARENT_PID_ENV}={os.getpid()} names a "
                                         "process that is not this one's parent: ignored$"):
        processes.follow_parent()
    assert watched == [] and processes.PARENT_PID_ENV not in os.environ
    gone = ended_pid()  # a bench killed before its stage started: the stage ends at once
    monkeypatch.setenv(processes.PARENT_PID_ENV, str(gone))
    processes.follow_parent()
    assert watched == [gone]
    processes.follow_parent()  # popped: the stage's own children do not inherit it
    assert watched == [gone]
    # not a pid: ignored, as none ('²'.isdigit() is true; no process is 0 or 2**31)
    for text in ("²", "12a", "-5", "", "0", str(2**31)):
        monkeypatch.setenv(processes.PARENT_PID_ENV, text)
        processes.follow_parent()
    assert watched == [gone]


def test_run_stage_starts_its_stage_with_the_bench_s_pid(monkeypatch):
    seen = {}
    monkeypatch.setattr(subprocess, "run", lambda command, check, env: (
        seen.update(command=command, env=env), subprocess.CompletedProcess(command, 0))[1])
    assert bench_runs.run_stage("submit", ["--profile", "smoke"])[0] == 0
    assert seen["command"][1:] == ["-m", "src.submit", "--profile", "smoke"]
    assert seen["env"][processes.PARENT_PID_ENV] == str(os.getpid())
    assert seen["env"]["PATH"] == os.environ["PATH"]
