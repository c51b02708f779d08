"""Failed writes: a full disk or a read-only folder while a run writes is one error line
naming the path, exit code 2, and nothing half-written.

The full disk is a stand-in (a writer that writes half, then raises ENOSPC): tests
run as root, where a read-only folder does not stop a write.
"""

from __future__ import annotations

import errno
import pickle
import re
from pathlib import Path

import keras
import pytest
from matplotlib.figure import Figure

from src import bench, fidelity, plan_files, submit, tune, tuners, util
from src.config import run_cli
from src.errors import DataError
from tests.fixtures import disk_full

FULL_DISK = "expected a writable folder with free space, found No space left on device (ENOSPC)"
SUBMIT = ["--profile", "smoke", "--train-samples", "300"]


def _fill_disk_when_writing(monkeypatch, name: str) -> None:
    """Every write of a file whose name holds name writes half, then fails as on a full disk."""
    write_text, write_bytes, savefig = Path.write_text, Path.write_bytes, Figure.savefig

    def write_half_text(path, text, *args, **kwargs):
        if name not in Path(path).name:
            return write_text(path, text, *args, **kwargs)
        write_text(path, text[:len(text) // 2], *args, **kwargs)
        disk_full()

    def write_half_bytes(path, data, *args, **kwargs):
        if name not in Path(path).name:
            return write_bytes(path, data, *args, **kwargs)
        write_bytes(path, data[:len(data) // 2], *args, **kwargs)
        disk_full()

    def save_half_figure(figure, path, *args, **kwargs):
        if name not in Path(path).name:
            return savefig(figure, path, *args, **kwargs)
        Path(path).write_bytes(b"\x89PNG half")
        disk_full()

    monkeypatch.setattr(Path, "write_text", write_half_text)
    monkeypatch.setattr(Path, "write_bytes", write_half_bytes)
    monkeypatch.setattr(Figure, "savefig", save_half_figure)


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_write_atomically_reports_the_path_and_leaves_no_temporary_file(tmp_path,
                                                                        monkeypatch):
    _fill_disk_when_writing(monkeypatch, "out.json")
    with pytest.raises(DataError) as caught:
        util.write_atomically(tmp_path / "out.json", "{}" * 100)
    assert str(caught.value) == f"{tmp_path}/out.json: {FULL_DISK}"
    assert _files(tmp_path) == []
    monkeypatch.setattr(util.os, "replace", disk_full)  # the rename into place fails
    with pytest.raises(DataError, match="out.txt: expected a writable folder"):
        util.write_atomically(tmp_path / "out.txt", "text")
    assert _files(tmp_path) == []


def test_files_written_together_are_all_new_or_all_as_they_were(tmp_path, monkeypatch):
    # The search's best_hparams.json and trials.csv: a full disk on the second must not
    # leave a new first beside an old second.
    picks, trials = tmp_path / "best_hparams.json", tmp_path / "trials.csv"
    picks.write_text("old picks")
    trials.write_text("old trials")
    _fill_disk_when_writing(monkeypatch, "trials.csv")
    with pytest.raises(DataError, match=f"^{re.escape(str(trials))}: {re.escape(FULL_DISK)}$"):
        util.write_all_atomically({picks: "new picks", trials: "new trials"})
    assert (picks.read_text(), trials.read_text()) == ("old picks", "old trials")
    assert _files(tmp_path) == ["best_hparams.json", "trials.csv"]  # no partial file left


def test_a_rename_that_fails_takes_back_the_files_it_created(tmp_path, monkeypatch):
    first, second = tmp_path / "curve.md", tmp_path / "curve.json"
    replace = util.os.replace

    def fail_on_json(source, target):
        if str(target).endswith(".json"):
            raise OSError(errno.EIO, "Input/output error")
        replace(source, target)

    monkeypatch.setattr(util.os, "replace", fail_on_json)
    with pytest.raises(DataError, match=f"^{re.escape(str(second))}: "):
        util.write_all_atomically({first: "table", second: "{}"})
    assert _files(tmp_path) == []  # no .md without its .json, no partial file


def test_a_data_error_survives_the_trip_back_from_a_worker_process():
    error = DataError(util.WRITABLE, "No space left on device (ENOSPC)", file="fold-0.keras",
                      line=None, column=None, hint="free some space")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is DataError and str(copy) == str(error)


@pytest.fixture(scope="module")
def trained(kaggle_dir_readonly, tmp_path_factory):
    """Artifacts holding this module's fold models, so each run below only predicts
    and writes."""
    artifacts = tmp_path_factory.mktemp("trained") / "artifacts"
    argv = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(artifacts),
            "--submissions-dir", str(artifacts.parent / "submissions"), *SUBMIT]
    assert run_cli(submit.main, argv) == 0
    return artifacts


def _submit_args(kaggle_dir, artifacts, submissions):
    return ["--data-dir", str(kaggle_dir), "--artifacts-dir", str(artifacts),
            "--submissions-dir", str(submissions), *SUBMIT]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["submission.csv", "oof.csv.gz", "confusion_matrix.png",
                                  "metrics.json", "report.html"])
def test_adisk_full_while_writing_the_run_folder_is_one_line_and_leaves_nothing(
        kaggle_dir_readonly, trained, tmp_path, capsys, monkeypatch, name):
    submissions = tmp_path / "submissions"
    _fill_disk_when_writing(monkeypatch, name)
    assert run_cli(submit.main, _submit_args(kaggle_dir_readonly, trained, submissions)) == 2
    err = capsys.readouterr().err
    partial = re.escape(f"{submissions}/.partial-") + r"[^/]+"
    assert re.fullmatch(f"error: {partial}/{re.escape(name)}: {re.escape(FULL_DISK)}\n", err)
    assert _files(submissions) == []  # no run folder, no partial folder, no temporary file


@pytest.mark.slow
def test_adisk_full_while_saving_a_fold_model_is_one_line_and_leaves_no_partial_model(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch):
    def save_half(model, path, *args, **kwargs):
        Path(path).write_bytes(b"PK half a zip")
        disk_full()

    monkeypatch.setattr(keras.Model, "save", save_half)
    artifacts, submissions = tmp_path / "artifacts", tmp_path / "submissions"
    assert run_cli(submit.main, _submit_args(kaggle_dir_readonly, artifacts, submissions)) == 2
    err = capsys.readouterr().err
    model = re.escape(f"{artifacts}/models/") + r"default-\w+/fold-0\.keras"
    assert re.fullmatch(f"error: {model}: {re.escape(FULL_DISK)}\n", err), err
    assert not [name for name in _files(artifacts) if name.endswith(".keras")]
    assert not submissions.exists()


@pytest.mark.slow
def test_a_read_only_submissions_folder_is_one_line(kaggle_dir_readonly, trained, tmp_path,
                                                    capsys, monkeypatch):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    real_mkdir = Path.mkdir

    def denied(path, *args, **kwargs):  # as a folder without write permission does, even
        if path.parent == submissions:  # for root, who may write into any folder
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    assert run_cli(submit.main, _submit_args(kaggle_dir_readonly, trained, submissions)) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {submissions}: expected a writable folder with free space, found "
                   "Permission denied (EACCES)\n")  # the folder given, not a hidden name in it
    assert _files(submissions) == []


def test_a_folder_that_refuses_a_file_stops_submit_before_it_trains(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch):
    """The check makes a file: the mode bits (os.access) say yes to root on an NFS share
    that maps root to nobody, where every write is then refused."""
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    real_touch = Path.touch

    def refused(path, *args, **kwargs):
        if path.parent == submissions:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_touch(path, *args, **kwargs)

    monkeypatch.setattr(Path, "touch", refused)
    monkeypatch.setattr(util.os, "access", lambda *args, **kwargs: True)
    argv = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(tmp_path / "artifacts"),
            "--submissions-dir", str(submissions), *SUBMIT]
    assert run_cli(submit.main, argv) == 2
    assert capsys.readouterr().err == (f"error: {submissions}: expected a writable folder with "
                                       "free space, found Permission denied (EACCES)\n")
    assert _files(submissions) == [] and not (tmp_path / "artifacts").exists()


def test_the_write_check_leaves_nothing_behind(tmp_path):
    util.check_writable_folder(tmp_path / "new" / "folders")
    assert list(tmp_path.iterdir()) == []


TUNE = ["--profile", "smoke", "--tune-samples", "300", "--tuner", "random", "--max-trials",
        "2", "--tune-epochs", "1"]


def _fill_disk_saving_the_checkpoint(monkeypatch) -> None:
    monkeypatch.setattr(keras.Model, "save_weights", disk_full)


@pytest.mark.slow
@pytest.mark.parametrize("fill_disk, written", [
    (_fill_disk_saving_the_checkpoint, ""),
    (lambda monkeypatch: _fill_disk_when_writing(monkeypatch, "holdout_probs"),
     r"/holdout_probs\.npy"),
], ids=["checkpoint", "hold-out probabilities"])
def test_adisk_full_while_a_trial_saves_stops_the_search_on_one_line(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch, fill_disk, written):
    fill_disk(monkeypatch)
    artifacts = tmp_path / "artifacts"
    argv = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(artifacts), *TUNE]
    assert run_cli(tune.main, argv) == 2
    out, err = capsys.readouterr()
    trial = re.escape(f"{artifacts}/tune/") + r"[^/]+/trial_0" + written
    assert re.fullmatch(f"error: {trial}: {re.escape(FULL_DISK)}\n", err), err
    assert "trial 1 of" not in out  # stopped there, not marked failed and on to the next
    assert not [name for name in _files(artifacts) if ".partial-" in name]


@pytest.mark.slow
def test_adisk_full_while_the_search_saves_its_state_is_one_line(kaggle_dir_readonly,
                                                                   tmp_path, capsys,
                                                                   monkeypatch):
    _fill_disk_when_writing(monkeypatch, "oracle.json")
    artifacts = tmp_path / "artifacts"
    argv = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(artifacts), *TUNE]
    assert run_cli(tune.main, argv) == 2
    err = capsys.readouterr().err
    oracle = re.escape(f"{artifacts}/tune/") + r"[^/]+/oracle\.json"
    assert re.fullmatch(f"error: {oracle}: {re.escape(FULL_DISK)}\n", err), err
    assert not [name for name in _files(artifacts) if name.endswith(".tmp")]


def test_a_plan_under_a_file_is_one_line_naming_its_folder(tmp_path):
    (tmp_path / "artifacts").write_text("a file, not a folder")  # --artifacts-dir mistyped
    plans = tmp_path / "artifacts" / "plans"
    with pytest.raises(DataError) as caught:
        plan_files.save_plan(plans / "submit-0123.json", "{}")
    assert str(caught.value).startswith(f"{plans}: expected a writable folder with free space")


@pytest.mark.parametrize("error, where, found", [
    (OSError(errno.ENOSPC, "No space left on device"), "project/trial_0005",
     "expected a writable folder with free space, found No space left on device (ENOSPC)"),
    # Hyperband reloads the trial it continues: its checkpoint was deleted by hand
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), "project",
     "expected the search state python -m src.tune saved (an earlier trial's checkpoint), "
     "found No such file or directory (ENOENT) (rerun with --overwrite to start the search "
     "over)"),
])
def test_an_os_error_in_a_trial_names_a_write_or_the_search_state(error, where, found):
    """A missing checkpoint read as a full disk in the new trial's folder."""
    failed = tuners.trial_os_error(error, "project/trial_0005", "project")
    assert str(failed) == f"{where}: {found}"


@pytest.mark.parametrize("where", ["under_a_file", "a_file"])
def test_a_submissions_folder_that_cannot_be_made_stops_the_run_before_training(
        kaggle_dir_readonly, tmp_path, capsys, where):
    """It was named only after every fold model had trained (in the Kaggle kernel, whose
    models live in a temporary folder, the whole run was lost)."""
    (tmp_path / "a-file").write_text("")
    submissions = tmp_path / "a-file" / "sub" if where == "under_a_file" else tmp_path / "a-file"
    artifacts = tmp_path / "artifacts"
    assert run_cli(submit.main, _submit_args(kaggle_dir_readonly, artifacts, submissions)) == 2
    assert capsys.readouterr().err == (f"error: {submissions}: expected a writable folder with "
                                       "free space, found Not a directory (ENOTDIR)\n")
    assert not artifacts.exists()  # nothing trained


@pytest.mark.parametrize("stage, work", [(fidelity, "measure"), (bench, "training_rows")])
def test_fidelity_and_bench_name_an_output_folder_they_cannot_make_before_any_work(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch, stage, work):
    """Both named it only once every configuration had trained (hours on the full profile),
    as "File exists" for a file where their folder goes."""
    def never(*args, **kwargs):
        raise AssertionError("trained or timed before the output folder was checked")

    monkeypatch.setattr(stage, work, never)
    name = stage.__name__.removeprefix("src.")
    (tmp_path / name).write_text("")  # a file where <artifacts>/<name>/ goes
    args = ["--profile", "smoke", "--data-dir", str(kaggle_dir_readonly),
            "--artifacts-dir", str(tmp_path)]
    assert run_cli(stage.main, args) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / name}: expected a writable folder "
                                       "with free space, found Not a directory (ENOTDIR)\n")
