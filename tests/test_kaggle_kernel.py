"""The Kaggle kernel: metadata, the one-file bundle of src/, a smoke run laid out like Kaggle."""

from __future__ import annotations

import _thread
import base64
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from src import config, processes
from tests.fixtures import sleeping_stage, stage_outlives_its_parent

REPO_ROOT = Path(__file__).resolve().parents[1]
KAGGLE_DIR = REPO_ROOT / "kaggle"
METADATA = json.loads((KAGGLE_DIR / "kernel-metadata.json").read_text())
STAGES_PRESENT = all((REPO_ROOT / "src" / f"{stage}.py").is_file() for stage in ("tune", "submit"))


def _load(path: Path):
    """A module from a file of kaggle/ (not a package: it would hide the kaggle library)."""
    spec = importlib.util.spec_from_file_location(f"kernel_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load(KAGGLE_DIR / "build.py")
entry = _load(KAGGLE_DIR / "entry.py")


@pytest.fixture(scope="module")
def kernel_script(tmp_path_factory) -> Path:
    """The built kernel script, in a folder of its own."""
    return build.build(tmp_path_factory.mktemp("kernel-build"))


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float):
    """Run command in its own process group; kill the group (stages included) if it outlives us."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_metadata_is_a_gpu_script_on_the_competition_data_without_internet():
    assert METADATA["competition_sources"] == ["digit-recognizer"]
    assert (METADATA["kernel_type"], METADATA["language"]) == ("script", "python")
    assert (METADATA["enable_gpu"], METADATA["enable_internet"]) == ("true", "false")
    _, slug = METADATA["id"].split("/")
    # kaggle kernels push warns when the title does not turn into the id's slug
    assert slug == re.sub(r"[^a-z0-9]+", "-", METADATA["title"].lower()).strip("-")
    assert re.fullmatch(r"[\w-]+\.py", METADATA["code_file"])


def test_build_writes_metadata_and_one_script_holding_all_of_src(kernel_script, tmp_path):
    folder = kernel_script.parent
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        ["kernel-metadata.json", METADATA["code_file"]])
    assert json.loads((folder / "kernel-metadata.json").read_text()) == METADATA
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(_package_zip(kernel_script)))) as archive:
        names = archive.namelist()
    assert "src/__init__.py" in names and "src/data.py" in names
    assert names == [path.relative_to(REPO_ROOT).as_posix() for path in build.package_files()]
    assert not any("__pycache__" in name for name in names)
    assert build.build(tmp_path).read_bytes() == kernel_script.read_bytes()  # reproducible


@pytest.mark.parametrize("metadata, found", [
    ('{"id": "me/k", "code_file": "k.py"', "expected kernel-metadata.json, a JSON object, "
                                           "found JSONDecodeError: "),
    ('["k.py"]', "expected a JSON object, found a JSON list"),
    ('{"id": "me/k"}', "expected a code_file like entry.py (letters, digits, - and _), found "
                       "None"),
    # it named a file outside the build folder, and the build wrote it there
    ('{"id": "me/k", "code_file": "../escaped.py"}', "found '../escaped.py'"),
    ('{"id": 5, "code_file": "k.py"}', 'expected an "id" like YOU/digit-recognizer-cnn-ensemble, '
                                       "found 5"),
])
def test_damaged_metadata_is_one_line_and_builds_nothing(tmp_path, metadata, found):
    path = tmp_path / "kernel-metadata.json"
    path.write_text(metadata)
    with pytest.raises(build.BuildError) as caught:
        build.build(tmp_path / "out", path)
    assert str(caught.value).startswith(f"{path}: expected ") and found in str(caught.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escaped.py").exists()


@pytest.mark.parametrize("where, found", [
    ("empty", "--out: expected a folder for the build, found ''"),
    ("out is a file", "out: expected a folder to build into, found a file"),
    ("script is a folder", f"out/{METADATA['code_file']}: expected a file or nothing, found a "
                           "folder"),
])
def test_a_bad_out_folder_is_one_line_exit_2(tmp_path, capsys, where, found):
    out = tmp_path / "out"
    if where == "out is a file":
        out.write_text("mine")
    if where == "script is a folder":
        (out / METADATA["code_file"]).mkdir(parents=True)
    assert build.main(["--out", "" if where == "empty" else str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith(found + "\n") and err.count("\n") == 1
    assert where != "out is a file" or out.read_text() == "mine"


def test_a_failed_write_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def disk_full(source, target):
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(build.os, "replace", disk_full)
    with pytest.raises(build.BuildError, match="expected a writable folder with free space, "
                                               "found No space left on device"):
        build.build(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def _one_run(tmp_path) -> tuple[Path, Path]:
    """A submissions folder holding run-1 with its submission.csv, and an empty working one."""
    runs, working = tmp_path / "submissions", tmp_path / "working"
    (runs / "run-1").mkdir(parents=True)
    working.mkdir()
    (runs / "run-1" / "submission.csv").write_text("ImageId,Label\n1,7\n")
    return runs, working


def test_the_kernel_publishes_the_submission_whole_and_drops_latest(tmp_path, monkeypatch,
                                                                    capsys):
    runs, working = _one_run(tmp_path)
    (runs / "latest").symlink_to("run-1")
    assert entry.publish_submission(runs, working) == working / "submission.csv"
    assert (working / "submission.csv").read_text() == "ImageId,Label\n1,7\n"
    assert not (runs / "latest").exists() and [p.name for p in working.iterdir()] == [
        "submission.csv"]

    def disk_full(source, target):
        Path(target).write_text("ImageId,La")
        raise OSError(28, "No space left on device")

    (working / "submission.csv").unlink()
    (runs / "latest").symlink_to("run-1")
    monkeypatch.setattr(entry.shutil, "copyfile", disk_full)
    with pytest.raises(SystemExit, match="2"):  # one line after hours of training
        entry.publish_submission(runs, working)
    assert list(working.iterdir()) == []  # no half-written submission.csv, no partial
    assert capsys.readouterr().err == (
        f"error: {working / 'submission.csv'}: could not publish the run's submission.csv (No "
        f"space left on device); it is under {runs}\n")


def test_the_kernel_publishes_a_run_named_in_latest_txt(tmp_path, capsys):
    # src.submit names its run in latest.txt where the file system refuses symlinks.
    runs, working = _one_run(tmp_path)
    (runs / "latest.txt").write_text("run-1\n")
    assert entry.publish_submission(runs, working) == working / "submission.csv"
    assert (working / "submission.csv").read_text() == "ImageId,Label\n1,7\n"
    (runs / "latest.txt").unlink()  # neither: one line, not a traceback
    with pytest.raises(SystemExit, match="2"):
        entry.publish_submission(runs, working)
    assert capsys.readouterr().err.startswith(
        f"error: {working / 'submission.csv'}: could not publish the run's submission.csv (No "
        "such file or directory)")


@pytest.mark.parametrize("damage", ["no placeholder", "unreadable"])
def test_a_damaged_template_is_one_line_exit_2_and_builds_nothing(tmp_path, monkeypatch,
                                                                   capsys, damage):
    entry = tmp_path / "entry.py"
    if damage == "no placeholder":
        entry.write_text("print('no package here')\n")
        found = f"{entry}: expected the line {build.PLACEHOLDER_LINE!r} once, found it 0 times"
    else:
        entry.mkdir()  # reading a folder fails as reading an unreadable file does
        found = f"{entry}: expected a readable UTF-8 file, found Is a directory"
    monkeypatch.setattr(build, "ENTRY", entry)
    assert build.main(["--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {found}\n"
    assert not (tmp_path / "out").exists()


def _package_zip(script: Path) -> str:
    """The PACKAGE_ZIP value of a built script, read without running it."""
    match = re.search(r'^PACKAGE_ZIP = """(.*?)"""', script.read_text(), re.S | re.M)
    assert match, "no PACKAGE_ZIP in the built script"
    return match.group(1)


def test_bundled_src_imports_from_a_foreign_cwd(kernel_script, tmp_path):
    """Every src module a fresh interpreter loads comes out of the bundle, none from the repo."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import runpy, sys\n"
        "from pathlib import Path\n"
        "root = runpy.run_path(sys.argv[1])['unpack_package'](Path(sys.argv[2]))\n"
        "sys.path.insert(0, str(root))\n"
        "import src.config, src.data, src.errors\n"
        "for name, module in sorted(sys.modules.items()):\n"
        "    if name.split('.')[0] == 'src':\n"
        "        print('loaded', name, module.__file__)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    code, output = _run([sys.executable, "-c", script, str(kernel_script), str(tmp_path / "pkg")],
                        cwd=elsewhere, env=env, timeout=120)
    assert code == 0, output
    loaded = dict(line.split(" ", 2)[1:] for line in output.splitlines()
                  if line.startswith("loaded "))
    assert {"src", "src.config", "src.data", "src.errors"} <= set(loaded)
    assert all(Path(file).is_relative_to(tmp_path / "pkg" / "src") for file in loaded.values())


def _stopped(capsys, call) -> str:
    """The one error line the kernel stopped with, exit code 2."""
    with pytest.raises(SystemExit) as stopped:
        call()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.removeprefix("error: ").removesuffix("\n")


def test_template_refuses_to_run_unbuilt(capsys):
    assert "run `python kaggle/build.py`" in _stopped(
        capsys, lambda: entry.unpack_package(Path("unused")))


def test_kernel_finds_the_competition_data_where_kaggle_mounts_it(tmp_path, capsys):
    mounted = tmp_path / "input" / "digit-recognizer"
    assert "add the digit-recognizer competition as input data" in _stopped(
        capsys, lambda: entry.find_input_dir(mounted))
    elsewhere = tmp_path / "input" / "competitions" / "digit-recognizer"
    for folder in (elsewhere, mounted):
        folder.mkdir(parents=True)
        (folder / "train.csv").touch()
        (folder / "test.csv").touch()
        assert entry.find_input_dir(mounted) == folder
    # A folder given by DIGITS_KERNEL_INPUT is used as it is, not swapped for one beside it.
    given = tmp_path / "input" / "digits"
    assert _stopped(capsys, lambda: entry.find_input_dir(given, search_beside=False)) == (
        f"no train.csv and test.csv in {given} (DIGITS_KERNEL_INPUT)")


def test_version_tuple_reads_release_candidates_and_short_versions():
    assert entry.version_tuple("2.17.0rc1") == (2, 17, 0)
    assert entry.version_tuple("3.3") == (3, 3, 0) < entry.version_tuple("3.3.1")
    assert entry.version_tuple("1.26.4.post1") == (1, 26, 4)


def test_this_environment_passes_the_check_with_every_version():
    versions = entry.check_environment()
    assert list(versions) == ["python", *entry.REQUIREMENTS]
    assert all(re.match(r"\d+\.\d+", version) for version in versions.values())


def test_a_missing_package_stops_the_kernel_with_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    assert _stopped(capsys, entry.check_environment) == (
        "this image lacks keras_tuner (>= 1.4.7), which the kernel needs: pick the latest "
        "environment in the kernel's settings")


def test_a_broken_or_too_new_package_stops_the_kernel_with_one_line(monkeypatch, capsys):
    def numpy_of_another_abi(name):
        raise AttributeError("_ARRAY_API not found")

    monkeypatch.setattr(entry.importlib, "import_module", numpy_of_another_abi)
    assert _stopped(capsys, entry.check_environment) == (
        "this image cannot import tensorflow (AttributeError: _ARRAY_API not found): pick the "
        "latest environment in the kernel's settings")
    monkeypatch.undo()
    import keras_tuner

    monkeypatch.setitem(entry.TOO_NEW, "keras_tuner", keras_tuner.__version__)
    assert _stopped(capsys, entry.check_environment) == (
        f"this image has keras_tuner {keras_tuner.__version__}, the kernel needs < "
        f"{keras_tuner.__version__}: pick an older environment in the kernel's settings")


def test_a_too_old_python_stops_the_kernel_with_one_line(monkeypatch, capsys):
    # src imports datetime.UTC (3.11): every stage failed with an ImportError traceback.
    monkeypatch.setattr(entry, "PYTHON", "99.1")
    assert _stopped(capsys, entry.check_environment) == (
        f"this image has python {platform.python_version()}, the kernel needs >= 99.1: pick "
        "the latest environment in the kernel's settings")


def test_the_kernels_python_floor_is_pyprojects():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'requires-python = ">={entry.PYTHON}"' in text


def test_a_too_old_package_stops_the_kernel_with_one_line(monkeypatch, capsys):
    import tensorflow as tf

    monkeypatch.setitem(entry.REQUIREMENTS, "tensorflow", "99.1")
    assert _stopped(capsys, entry.check_environment).startswith(
        f"this image has tensorflow {tf.__version__}, the kernel needs >= 99.1: pick the latest")


def _sleeper(tmp_path, ignore_ctrl_c: bool) -> list[str]:
    """A child that says it is ready, then sleeps (ignoring Ctrl-C if asked); interrupted
    by Ctrl-C, it says so before it exits."""
    # Ctrl-C set either way: a child inherits an ignored SIGINT, as every command of a
    # shell's background job (`pytest &`) has, and this one would then ignore it too.
    handler = "signal.SIG_IGN" if ignore_ctrl_c else "signal.default_int_handler"
    script = ("import pathlib, signal, sys, time\n"
              + f"signal.signal(signal.SIGINT, {handler})\n"
              + "try:\n    pathlib.Path(sys.argv[1]).touch()\n    time.sleep(120)\n"
              + "except KeyboardInterrupt:\n    pathlib.Path(sys.argv[2]).touch()\n    raise\n")
    return [sys.executable, "-c", script, str(tmp_path / "ready"), str(tmp_path / "interrupted")]


@pytest.mark.parametrize("ignore_ctrl_c", [False, True])
def test_a_stage_past_its_time_limit_is_stopped(tmp_path, monkeypatch, ignore_ctrl_c):
    """Interrupted as by Ctrl-C; killed when it ignores that for GRACE_SECONDS."""
    monkeypatch.setattr(entry, "GRACE_SECONDS", 1.0)
    command = _sleeper(tmp_path, ignore_ctrl_c)
    assert entry.run_with_time_limit(command, tmp_path, 3.0) == entry.TIMED_OUT
    assert (tmp_path / "ready").is_file()  # it was sleeping (and ignoring Ctrl-C) when stopped
    # Ctrl-C first, so a stage stops cleanly; a kill only for one that ignores it
    assert (tmp_path / "interrupted").is_file() is not ignore_ctrl_c
    assert entry.run_with_time_limit([sys.executable, "-c", "raise SystemExit(3)"], tmp_path,
                                     60) == 3


def test_a_stage_stops_on_ctrl_c_also_when_the_kernel_ignores_it(tmp_path, monkeypatch):
    """A process started with SIGINT ignored (a shell's background job) passes that on: the
    stage must still get Ctrl-C's default action, and stop cleanly."""
    monkeypatch.setattr(entry, "GRACE_SECONDS", 1.0)
    script = ("import pathlib, sys, time\n"
              "try:\n    pathlib.Path(sys.argv[1]).touch()\n    time.sleep(120)\n"
              "except KeyboardInterrupt:\n    pathlib.Path(sys.argv[2]).touch()\n")
    command = [sys.executable, "-c", script, str(tmp_path / "ready"), str(tmp_path / "stopped")]
    started_with = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started_with.append(kwargs)
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert entry.run_with_time_limit(command, tmp_path, 3.0) == entry.TIMED_OUT
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the kernel's own, kept
    finally:
        signal.signal(signal.SIGINT, before)
    assert (tmp_path / "ready").is_file() and (tmp_path / "stopped").is_file()
    # no preexec_fn: it can deadlock the child of a threaded parent, as the kernel is
    assert [kwargs.get("preexec_fn") for kwargs in started_with] == [None]


def test_a_stage_does_not_outlive_a_ctrl_c_of_the_kernel(tmp_path, monkeypatch):
    """Ctrl-C reaching the kernel alone (not the stage's process group) stops the stage too."""
    monkeypatch.setattr(entry, "GRACE_SECONDS", 5.0)
    command = _sleeper(tmp_path, ignore_ctrl_c=False)

    def ctrl_c_once_the_stage_sleeps():
        while not (tmp_path / "ready").is_file():
            time.sleep(0.05)
        _thread.interrupt_main()

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=ctrl_c_once_the_stage_sleeps, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            entry.run_with_time_limit(command, tmp_path, 60.0)
    finally:
        signal.signal(signal.SIGINT, before)
    assert (tmp_path / "interrupted").is_file()  # stopped as by Ctrl-C, and waited for


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_stage_does_not_outlive_a_killed_kernel(tmp_path):
    """A SIGKILL leaves a process's children running: the stage follows the kernel's pid."""
    assert entry.PARENT_PID_ENV == processes.PARENT_PID_ENV
    pid_file = tmp_path / "stage.pid"
    entry_path = str(KAGGLE_DIR / "entry.py")
    kernel_stand_in = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('entry', {entry_path!r})\n"
        "entry = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(entry)\n"
        f"entry.run_with_time_limit([sys.executable, '-c', {sleeping_stage(pid_file)!r}], "
        f"{str(REPO_ROOT)!r}, 120)\n")
    if stage_outlives_its_parent(kernel_stand_in, pid_file, REPO_ROOT):
        pytest.fail("the stage outlived the kernel that started it")


class _Stages:
    """Stand-in stages: each takes the minutes given and ends with the code given."""

    def __init__(self, outcomes: dict[str, tuple[float, int]]):
        self.now = 0.0
        self.outcomes = outcomes
        self.limits: dict[str, float] = {}
        self.budgets: dict[str, float] = {}  # what each stage's --minutes says

    def clock(self) -> float:
        return self.now

    def run_stage(self, module, package_root, data_dir, artifacts_dir, submissions_dir, seconds,
                  budget_minutes):
        minutes, code = self.outcomes[module]
        self.limits[module] = seconds / 60
        self.budgets[module] = budget_minutes
        self.now += min(minutes * 60, seconds)
        return code


@pytest.mark.parametrize("tune, submit, code, said", [
    ((30, 0), (100, 0), 0, "wrote "),
    ((165, entry.TIMED_OUT), (100, 0), 0, "src.tune stopped at its share of the time budget"),
    ((20, 0), (700, entry.TIMED_OUT), entry.TIMED_OUT,
     "error: src.submit did not finish within the time budget of 660 min"),
    ((20, 2), (100, 0), 2, "error: src.tune failed with exit code 2"),
])
def test_kernel_splits_its_time_budget_between_the_stages(tmp_path, monkeypatch, capsys,
                                                          tune, submit, code, said):
    stages = _Stages({"src.tune": tune, "src.submit": submit})
    monkeypatch.setattr(entry, "run_stage", stages.run_stage)
    monkeypatch.setattr(entry, "find_input_dir", lambda preferred, search_beside: preferred)
    monkeypatch.setattr(entry, "unpack_package", lambda folder: folder)
    monkeypatch.setattr(entry, "publish_submission", lambda runs, working: working / "x.csv")
    monkeypatch.setattr(entry, "BUDGET_MINUTES", 660.0)
    monkeypatch.setattr(entry, "WORKING_DIR", tmp_path / "working")
    assert entry.main(clock=stages.clock) == code
    out, err = capsys.readouterr()
    assert said in out + err
    assert out.splitlines()[0].startswith("kernel: python ")
    assert stages.limits["src.tune"] == 165  # a quarter of the budget
    assert stages.budgets["src.tune"] == 660  # its plan: a share of the whole budget
    if "src.submit" in stages.limits:
        # It plans what is left less 5%, and is stopped at what is left: a search stopped
        # at its limit never recorded its minutes.
        assert stages.limits["src.submit"] == 660 - tune[0]
        assert stages.budgets["src.submit"] == pytest.approx(0.95 * (660 - tune[0]), abs=0.1)
        assert stages.budgets["src.submit"] <= 0.95 * (660 - tune[0])


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not STAGES_PRESENT, reason="src/tune.py and src/submit.py not written yet")
def test_kernel_runs_tune_and_submit_into_working(kernel_script, kaggle_dir_readonly, tmp_path):
    """The built script alone, run away from the repo with Kaggle's folder layout, smoke profile."""
    input_dir = tmp_path / "input" / "digit-recognizer"
    input_dir.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy(kaggle_dir_readonly / name, input_dir / name)
    working = tmp_path / "working"
    working.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # Relative, as a user running it locally may give them: the stages run elsewhere.
    env.update(DIGITS_KERNEL_PROFILE="smoke", DIGITS_KERNEL_INPUT="input/digit-recognizer",
               DIGITS_KERNEL_WORKING="working")

    code, output = _run([sys.executable, str(kernel_script)], cwd=tmp_path, env=env, timeout=540)

    assert code == 0, output[-4000:]
    submission = working / "submission.csv"
    assert submission.read_text().splitlines()[0] == "ImageId,Label"
    frame = pd.read_csv(submission)
    assert len(frame) == 300
    assert frame["ImageId"].tolist() == list(range(1, 301))
    assert frame["Label"].between(0, 9).all()
    runs = list((working / "submissions").iterdir())
    assert len(runs) == 1 and runs[0].is_dir() and not runs[0].is_symlink()
    assert (runs[0] / "submission.csv").read_bytes() == submission.read_bytes()
    assert sorted(path.name for path in working.iterdir()) == ["submission.csv", "submissions"]


@pytest.mark.parametrize("text", ["soon", "0", "-5", "inf", "nan", "1e308", "525601"])
def test_a_bad_kernel_budget_stops_in_one_line(capsys, text):
    """1e308 minutes was taken, printed as 300 digits, and refused by each stage in turn."""
    assert entry.budget_minutes("90") == 90
    assert entry.budget_minutes("525600") == entry.MAX_MINUTES == config.MAX_MINUTES
    assert _stopped(capsys, lambda: entry.budget_minutes(text)) == (
        f"DIGITS_KERNEL_MINUTES: expected minutes > 0 up to 525600, found {text!r}")


@pytest.mark.parametrize("text", ["bogus", "", "Full"])
def test_a_bad_kernel_profile_stops_in_one_line(capsys, text):
    """It went to each stage, which refused it in argparse's two lines, then the kernel's."""
    assert [entry.kernel_profile(profile) for profile in config.PROFILES] == list(entry.PROFILES)
    assert _stopped(capsys, lambda: entry.kernel_profile(text)) == (
        f"DIGITS_KERNEL_PROFILE: expected one of smoke, quick, full, found {text!r}")


def test_an_output_folder_that_cannot_be_made_stops_the_kernel_before_any_stage(tmp_path,
                                                                              capsys):
    """A file there was found only by src.submit, after the whole search."""
    (tmp_path / "a-file").write_text("")
    entry.check_working_dir(tmp_path / "working")
    assert (tmp_path / "working").is_dir()
    entry.check_working_dir(tmp_path / "working")  # there already: fine
    for where, found in ((tmp_path / "a-file", "a file"),
                         (tmp_path / "a-file" / "working", "Not a directory")):
        assert _stopped(capsys, lambda where=where: entry.check_working_dir(where)) == (
            f"{where}: expected a folder the kernel can write its output in "
            f"(DIGITS_KERNEL_WORKING), found {found}")


def test_a_read_only_output_folder_stops_the_kernel_before_any_stage(tmp_path, capsys,
                                                                     monkeypatch):
    def denied(*args, **kwargs):  # as a folder without write permission does (not for root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(entry.tempfile, "TemporaryFile", denied)
    assert _stopped(capsys, lambda: entry.check_working_dir(tmp_path)) == (
        f"{tmp_path}: expected a folder the kernel can write its output in "
        "(DIGITS_KERNEL_WORKING), found Permission denied")


@pytest.mark.parametrize("profile, planned", [("full", True), ("quick", True), ("smoke", False)])
def test_stages_plan_to_the_kernels_budget(tmp_path, monkeypatch, profile, planned):
    commands = []
    monkeypatch.setattr(entry, "run_with_time_limit",
                        lambda command, cwd, seconds: commands.append(command) or 0)
    monkeypatch.setattr(entry, "PROFILE", profile)
    monkeypatch.setattr(entry, "BUDGET_MINUTES", 660.0)
    entry.run_stage("src.submit", tmp_path, tmp_path, tmp_path, tmp_path, 60, 42.5)
    [command] = commands
    assert ("--minutes" in command) == planned
    if planned:  # the minutes it is given (what is left), not the kernel's whole budget
        assert command[command.index("--minutes") + 1] == "42.5"
