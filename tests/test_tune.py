"""python -m src.tune: the smoke search and its outputs, repeatability, resume after a real
SIGKILL, a chief with two workers, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import filelock
import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest

from src import (
    data,
    search_chief,
    search_ensemble,
    search_results,
    search_state,
    submit,
    tune,
    tuners,
    util,
)
from src.config import Config, run_cli
from src.errors import DataError
from src.model import DEFAULT_HPARAMS, build_cnn, define_search_space
from tests.conftest import REPO_ROOT
from tests.fixtures import ended_pid, keep_only

SMOKE = ["--profile", "smoke", "--tune-samples", "300"]
ONE_EPOCH_RANDOM = ["--tuner", "random", "--max-trials", "2", "--tune-epochs", "1"]
DISTRIBUTED = ["--precision", "float32"]  # auto is refused: each machine resolves its own
MEASURED = ["seconds"]  # trials.csv columns read off the clock: no run repeats them


@pytest.fixture(autouse=True)
def _one_machine(monkeypatch):
    """Tests choose chief/worker mode explicitly; a developer's KERASTUNER_* must not leak in."""
    for name in (tune.ENV_TUNER_ID, tune.ENV_ORACLE_IP, tune.ENV_ORACLE_PORT):
        monkeypatch.delenv(name, raising=False)


def _args(data_dir: Path, artifacts: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data_dir), "--artifacts-dir", str(artifacts), *SMOKE, *extra]


def _trials(artifacts: Path) -> pd.DataFrame:
    return pd.read_csv(artifacts / "tune" / "trials.csv", dtype={"trial_id": str})


def _project(artifacts: Path) -> Path:
    (project,) = [path for path in (artifacts / "tune").iterdir() if path.is_dir()]
    return project


def _trial_files(project: Path) -> dict[str, dict]:
    states = [json.loads(path.read_text()) for path in project.glob("trial_*/trial.json")]
    return {state["trial_id"]: state for state in states}


def test_smoke_search_writes_best_configurations_trials_and_leaderboard(
        kaggle_dir_readonly, tmp_path, capsys):
    artifacts = tmp_path / "artifacts"
    args = _args(kaggle_dir_readonly, artifacts)
    assert tune.main(args) == 0
    out = capsys.readouterr().out
    assert "trial 1 of ~2 done in" in out and "trial 2 of ~2 done in" in out and "ETA ~" in out
    assert f"search: starting in {_project(tmp_path / 'artifacts')}\n" in out
    assert "Leaderboard (hyperband, 2 trials, best first" in out
    header = out.split("Leaderboard")[1].splitlines()[1].split()
    assert header[:8] == ["rank", "trial", "log_loss", "val_accuracy", "params", "epochs",
                          "seconds", "filters"]

    best = json.loads((artifacts / "tune" / "best_hparams.json").read_text())
    assert (best["tuner"], best["objective"], best["profile"], best["seed"]) == (
        "hyperband", "val_log_loss", "smoke", 42)
    labelled = data.load_kaggle(kaggle_dir_readonly)
    assert best["data"] == {
        "source": "kaggle", "train_path": str(kaggle_dir_readonly / "train.csv"),
        "labelled_images": 1497, "test_images": 300,
        "labelled_fingerprint": data.data_fingerprint(labelled.x_train, labelled.y_train),
        "searched_images": 300, "train_images": 240, "val_images": 60}
    # The rows of the labelled images the search scored on, which submit scores apart.
    assert list(best)[-1] == "holdout_rows" and len(set(best["holdout_rows"])) == 60
    config = tune.parse_args(["--data-dir", str(kaggle_dir_readonly), *SMOKE])
    x_val = tune.load_search_data(config)[1][0]
    assert (sorted(image.tobytes() for image in labelled.x_train[best["holdout_rows"]])
            == sorted(image.tobytes() for image in x_val))
    assert Path(best["project"]).parent == artifacts / "tune"
    top = best["top"]
    assert [entry["rank"] for entry in top] == [1, 2]
    assert top[0]["val_log_loss"] <= top[1]["val_log_loss"]  # the objective: lowest first
    for entry in top:
        assert 0 < entry["val_accuracy"] <= 1 and entry["params"] > 10_000
        assert entry["epochs"] == 2  # every epoch of the rung: no early stopping
        assert entry["val_loss"] > 0 and entry["seconds"] > 0
        assert list(entry["hparams"]) == search_results.search_space_names()

    # Each trial is scored by its last epoch, whose hold-out probabilities it saved; the
    # ensemble is chosen from them, from the costliest network the best does not beat.
    project = Path(best["project"])
    y_val = _search_holdout_labels(kaggle_dir_readonly)
    for entry in top:
        probs = np.load(project / f"trial_{entry['trial_id']}" / search_ensemble.HOLDOUT_PROBS)
        assert np.mean(probs.argmax(axis=1) == y_val) == pytest.approx(entry["val_accuracy"])
        assert search_ensemble.holdout_log_loss(probs, y_val) == pytest.approx(
            entry["val_log_loss"])
    chosen = best["ensemble"]
    probs = [np.load(project / f"trial_{entry['trial_id']}" / search_ensemble.HOLDOUT_PROBS)
             for entry in top]
    p_values = search_ensemble.tie_p_values(probs, y_val)
    costs = [search_ensemble.network_cost(entry["hparams"]) for entry in top]
    first = top[search_ensemble.first_member(p_values, costs)]
    assert {key: value for key, value in chosen[0].items() if key in first} == first
    assert chosen[0]["multiply_adds"] == max(costs[index] for index, p in enumerate(p_values)
                                             if p >= search_ensemble.TIE_P_VALUE)
    assert chosen[0]["tie_p_value"] >= search_ensemble.TIE_P_VALUE
    assert chosen[0]["log_loss_gain"] is None and chosen[0]["holdout_log_loss"] > 0
    assert all(entry["log_loss_gain"] >= search_ensemble.MIN_ENSEMBLE_GAIN for entry in chosen[1:])
    assert "Ensemble chosen on the hold-out" in out

    trials = _trials(artifacts)
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
    assert list(trials["trial_id"]) == [entry["trial_id"] for entry in top]
    assert list(trials["val_log_loss"]) == pytest.approx([entry["val_log_loss"] for entry in top])
    assert not list((artifacts / "tune").glob(".partial-*"))

    assert tune.main(args) == 0  # the same command again: the finished search, reloaded
    out = capsys.readouterr().out
    assert "Reloading Tuner" in out and "Running Trial" not in out
    pd.testing.assert_frame_equal(_trials(artifacts), trials)


def _search_holdout_labels(data_dir: Path):
    """The labels of the smoke search's hold-out, as src.tune splits them."""
    config = tune.parse_args(["--data-dir", str(data_dir), *SMOKE])
    return tune.load_search_data(config)[1][1]


@pytest.fixture(scope="module")
def finished_random_search(kaggle_dir_readonly, tmp_path_factory) -> Path:
    """The artifacts folder of a finished two-trial random search; copy it before changing it."""
    artifacts = tmp_path_factory.mktemp("finished") / "artifacts"
    assert tune.main(_args(kaggle_dir_readonly, artifacts, *ONE_EPOCH_RANDOM)) == 0
    return artifacts


def test_the_search_starts_with_the_default_cnn(finished_random_search):
    trials = _trial_files(_project(finished_random_search))
    first, second = (trials[trial_id]["hyperparameters"]["values"] for trial_id in sorted(trials))
    assert {name: first[name] for name in DEFAULT_HPARAMS} == pytest.approx(DEFAULT_HPARAMS)
    assert {name: second[name] for name in DEFAULT_HPARAMS} != pytest.approx(DEFAULT_HPARAMS)


@pytest.mark.slow
def test_submit_scores_its_ensemble_also_without_the_search_hold_out(
        finished_random_search, kaggle_dir_readonly, tmp_path, capsys):
    artifacts = Path(shutil.copytree(finished_random_search, tmp_path / "artifacts"))
    submissions = tmp_path / "submissions"
    args = ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir", str(artifacts),
            "--submissions-dir", str(submissions), "--profile", "smoke", "--epochs", "1"]
    assert run_cli(submit.main, args) == 0
    assert ("ensemble OOF accuracy without the 60 images the search chose the members on: "
            in capsys.readouterr().out)
    metrics = json.loads((submissions / "latest" / "metrics.json").read_text())
    outside = metrics["ensemble_outside_search_holdout"]
    assert (outside["left_out"], outside["total"]) == (60, 1497 - 60)
    oof = pd.read_csv(submissions / "latest" / "oof.csv.gz")  # the rows, flagged for blends
    assert oof["search_holdout"].sum() == 60 and sorted(oof["search_holdout"].unique()) == [0, 1]
    # A submit on a subsample scores it without the hold-out images the subsample holds.
    assert run_cli(submit.main, [*args, "--train-samples", "500"]) == 0
    metrics = json.loads((submissions / "latest" / "metrics.json").read_text())
    rows = pd.read_csv(submissions / "latest" / "oof.csv.gz")["row"]
    holdout = json.loads((artifacts / "tune" / "best_hparams.json").read_text())["holdout_rows"]
    left_out = int(rows.isin(holdout).sum())
    assert 0 < left_out < 60 and len(rows) == 500
    assert metrics["ensemble_outside_search_holdout"]["left_out"] == left_out
    assert (f"without the {left_out} images the search chose the members on"
            in capsys.readouterr().out)


def test_overwrite_starts_over_and_the_seed_repeats_the_search(
        finished_random_search, kaggle_dir_readonly, tmp_path, capsys):
    artifacts = Path(shutil.copytree(finished_random_search, tmp_path / "artifacts"))
    capsys.readouterr()
    args = _args(kaggle_dir_readonly, artifacts, *ONE_EPOCH_RANDOM, "--overwrite")
    assert tune.main(args) == 0
    out = capsys.readouterr().out
    assert "Reloading Tuner" not in out and "Running Trial #2" in out
    assert f"search: starting over (--overwrite) in {_project(artifacts)}\n" in out
    pd.testing.assert_frame_equal(_trials(artifacts).drop(columns=MEASURED),
                                  _trials(finished_random_search).drop(columns=MEASURED))


def test_a_second_search_in_one_folder_stops_in_one_line_until_the_first_ends(
        finished_random_search, kaggle_dir_readonly, tmp_path, capsys):
    artifacts = Path(shutil.copytree(finished_random_search, tmp_path / "artifacts"))
    args = _args(kaggle_dir_readonly, artifacts, *ONE_EPOCH_RANDOM)
    first = filelock.FileLock(artifacts / "tune" / ".search.lock")  # a search running there
    first.acquire(timeout=0)
    capsys.readouterr()
    try:
        assert run_cli(tune.main, args) == 2
    finally:
        first.release()
    captured = capsys.readouterr()
    assert captured.err == (f"error: {artifacts / 'tune'}: expected no other search running in "
                            "this folder, found one running (it holds .search.lock) (let it "
                            "end, or give this one another --artifacts-dir)\n")
    assert "Running Trial" not in captured.out
    assert tune.main(args) == 0  # ended: the search is the next one's to resume
    out = capsys.readouterr().out
    assert f"search: resuming the search saved in {_project(artifacts)}\n" in out
    assert "Reloading Tuner" in out


def test_a_search_on_other_data_starts_its_own_instead_of_resuming(
        finished_random_search, kaggle_dir, tmp_path, capsys):
    """The old trials' hold-out probabilities belong to other labels: the ensemble chosen
    from them would be meaningless, though every size matches."""
    artifacts = Path(shutil.copytree(finished_random_search, tmp_path / "artifacts"))
    train_csv = kaggle_dir / "train.csv"
    frame = pd.read_csv(train_csv)
    frame.loc[0, "label"] = (frame.loc[0, "label"] + 1) % 10
    frame.to_csv(train_csv, index=False)
    capsys.readouterr()
    assert tune.main(_args(kaggle_dir, artifacts, *ONE_EPOCH_RANDOM)) == 0
    assert "Reloading Tuner" not in capsys.readouterr().out
    projects = sorted(path.name for path in (artifacts / "tune").iterdir() if path.is_dir())
    assert len(projects) == 2 and projects[0].rsplit("-data", 1)[0] == projects[1].rsplit(
        "-data", 1)[0]
    best = json.loads((artifacts / "tune" / "best_hparams.json").read_text())
    assert Path(best["project"]).name != _project(finished_random_search).name


def _break_oracle_state(project: Path, damage: str) -> None:
    """Leave the files as a SIGKILL between two of KerasTuner's writes would."""
    oracle_file = project / "oracle.json"
    oracle = json.loads(oracle_file.read_text())
    last = oracle["start_order"][-1]
    if damage == "new_trial_file_without_oracle_state":
        oracle["start_order"].remove(last)
        oracle["end_order"].remove(last)
        trial_file = project / f"trial_{last}" / "trial.json"
        trial = json.loads(trial_file.read_text())
        trial_file.write_text(json.dumps({**trial, "status": "RUNNING", "score": None}))
    elif damage == "trial_cut_off_after_its_scores_were_saved":
        # Killed between KerasTuner's update_trial and end_trial: its scores on file.
        oracle["ongoing_trials"] = {"tuner0": last}
        oracle["end_order"].remove(last)
        trial_file = project / f"trial_{last}" / "trial.json"
        trial = json.loads(trial_file.read_text())
        trial["metrics"]["metrics"][tune.OBJECTIVE]["observations"][0]["value"] = [5.0]
        trial_file.write_text(json.dumps({**trial, "status": "RUNNING", "score": None}))
    else:  # "ended_trial_still_running_in_oracle_state"
        oracle["ongoing_trials"] = {"tuner0": last}
    oracle_file.write_text(json.dumps(oracle))


@pytest.mark.parametrize("damage", ["new_trial_file_without_oracle_state",
                                    "ended_trial_still_running_in_oracle_state",
                                    "trial_cut_off_after_its_scores_were_saved"])
def test_resume_repairs_what_a_kill_between_two_writes_leaves(
        finished_random_search, kaggle_dir_readonly, tmp_path, capsys, damage):
    artifacts = Path(shutil.copytree(finished_random_search, tmp_path / "artifacts"))
    _break_oracle_state(_project(artifacts), damage)
    capsys.readouterr()
    assert tune.main(_args(kaggle_dir_readonly, artifacts, *ONE_EPOCH_RANDOM)) == 0
    out = capsys.readouterr().out
    trials = _trials(artifacts)
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
    if damage == "new_trial_file_without_oracle_state":
        assert "Running Trial #2" in out  # never handed out: trained now, under the same id
        assert sorted(trials["trial_id"]) == sorted(_trials(finished_random_search)["trial_id"])
    elif damage == "trial_cut_off_after_its_scores_were_saved":
        # Trained again from its start and scored on the rerun alone: KerasTuner kept the
        # cut-off run's 5.0 and ranked the trial by the mean of both runs.
        assert "Running Trial" in out
        last = json.loads((_project(artifacts) / "oracle.json").read_text())["start_order"][-1]
        trial = json.loads((_project(artifacts) / f"trial_{last}" / "trial.json").read_text())
        [[score]] = [observation["value"] for observation
                     in trial["metrics"]["metrics"][tune.OBJECTIVE]["observations"]]
        assert score < 5.0 and trial["score"] == score
    else:
        assert "Running Trial" not in out  # finished: not trained again
        pd.testing.assert_frame_equal(trials, _trials(finished_random_search))


@pytest.mark.parametrize("damage", ["oracle_cut_short", "trial_a_list", "tuner_state_empty",
                                    "score_null", "conv_blocks_text", "trial_folder_deleted",
                                    "running_trial_folder_deleted", "oracle_key_missing",
                                    "oracle_deleted", "tuner_state_deleted", "run_as_chief"])
def test_a_search_state_damaged_by_hand_is_one_line_naming_it_before_training(
        finished_random_search, kaggle_dir_readonly, tmp_path, capsys, damage):
    artifacts = Path(shutil.copytree(finished_random_search, tmp_path / "artifacts"))
    project = _project(artifacts)
    trial_json = next(project.glob("trial_*/trial.json"))
    if damage == "oracle_cut_short":
        text = (project / "oracle.json").read_text()
        (project / "oracle.json").write_text(text[:len(text) // 2])
    elif damage == "trial_a_list":
        trial_json.write_text("[]")
    elif damage == "oracle_key_missing":  # KerasTuner wraps its KeyError in a RuntimeError
        oracle = json.loads((project / "oracle.json").read_text())
        del oracle["ongoing_trials"]
        (project / "oracle.json").write_text(json.dumps(oracle))
    elif damage in ("score_null", "conv_blocks_text"):  # both crashed ranking the trials
        trial = json.loads(trial_json.read_text())
        if damage == "score_null":
            trial["score"] = None
        else:
            trial["hyperparameters"]["values"]["conv_blocks"] = "x"
        trial_json.write_text(json.dumps(trial))
    elif damage == "trial_folder_deleted":  # KerasTuner trained a trial, then hit a KeyError
        shutil.rmtree(trial_json.parent)
    elif damage == "running_trial_folder_deleted":  # that of a search killed mid-trial
        _break_oracle_state(project, "ended_trial_still_running_in_oracle_state")
        running = json.loads((project / "oracle.json").read_text())["ongoing_trials"]["tuner0"]
        trial_json = project / f"trial_{running}" / "trial.json"
        shutil.rmtree(trial_json.parent)
    elif damage == "oracle_deleted":  # a TensorFlow NotFoundError traceback
        (project / "oracle.json").unlink()
    elif damage in ("tuner_state_deleted", "run_as_chief"):
        # KerasTuner reloads only with this tuner's own file: without it, it started afresh
        # and handed out trial 0 again over the saved one. The README's chief is "chief".
        if damage == "run_as_chief":
            (project / "tuner0.json").rename(project / "chief.json")
        else:
            (project / "tuner0.json").unlink()
    else:
        (project / "tuner0.json").write_text("")
    # A third trial to run: a trial edited by hand was refused only after it had trained.
    more = ["--max-trials", "3"] if damage in ("score_null", "conv_blocks_text") else []
    capsys.readouterr()
    assert run_cli(tune.main, _args(kaggle_dir_readonly, artifacts, *ONE_EPOCH_RANDOM,
                                    *more)) == 2
    out, err = capsys.readouterr()
    damaged_files = {"oracle_cut_short": project / "oracle.json", "trial_a_list": trial_json,
                     "tuner_state_empty": project / "tuner0.json"}
    named = damaged_files.get(damage, project)
    assert err.startswith(f"error: {named}: expected the search state python -m src.tune "
                          "saved, found ") and err.count("\n") == 1, err
    assert "rerun with --overwrite to start the search over" in err
    if damage.endswith("trial_folder_deleted"):
        trial_id = trial_json.parent.name.removeprefix("trial_")
        assert f"found trial {trial_id} started but no trial_{trial_id}/trial.json" in err
        assert "Running Trial" not in out  # stopped before training
    found = {"oracle_deleted": "no oracle.json beside the tuner's state",
             "trial_a_list": "a JSON list, not an object",
             "tuner_state_deleted": "no tuner0.json beside oracle.json",
             "run_as_chief": "state saved as chief, not as tuner0 (run it as it was run "
                             "(KERASTUNER_TUNER_ID=chief), or rerun"}.get(damage)
    if found:
        assert f"found {found}" in err and "Running Trial" not in out
    if damage in damaged_files or more:  # before anything trains
        assert "Running Trial" not in out


@pytest.mark.parametrize("saved_as, how", [
    ("tuner0", "on one machine, KERASTUNER_ORACLE_IP unset and KERASTUNER_TUNER_ID unset or "
               "tuner0"),
    ("tuner3", "on one machine, KERASTUNER_ORACLE_IP unset and KERASTUNER_TUNER_ID=tuner3")])
def test_a_search_saved_on_one_machine_and_resumed_as_a_chief_is_told_to_run_alone(
        tmp_path, monkeypatch, saved_as, how):
    """Following a hint of KERASTUNER_TUNER_ID=tuner0 with the chief's address still set
    would start a worker, which waits for a chief that never comes."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "oracle.json").write_text("{}")
    (project / f"{saved_as}.json").write_text("{}")
    monkeypatch.setenv(tune.ENV_TUNER_ID, "chief")
    with pytest.raises(DataError) as raised:
        search_state.check_saved_state(project)
    assert str(raised.value).endswith(
        f"found state saved as {saved_as}, not as chief (run it as it was run ({how}), or "
        "rerun with --overwrite to start the search over)")


def test_a_search_stopped_in_or_at_the_end_of_its_first_trial_goes_on(tmp_path):
    # KerasTuner writes oracle.json and trial_0/trial.json as the first trial starts, and
    # tuner0.json only when a trial ends: nothing is lost, and the rerun starts over.
    project = tmp_path / "project"
    (project / "trial_0").mkdir(parents=True)
    (project / "oracle.json").write_text("{}")
    (project / "trial_0" / "trial.json").write_text(json.dumps({"status": "RUNNING"}))
    (project / f".partial-{ended_pid()}@host@tuner1.json").write_text("{")  # no tuner's state
    search_state.check_saved_state(project)
    # Killed as the first trial ended: the oracle saved it completed, the tuner not yet its
    # file. The rerun refused to resume and asked for --overwrite, losing the trial.
    (project / "trial_0" / "trial.json").write_text(json.dumps({"status": "COMPLETED"}))
    search_state.finish_first_trial_save(project)
    assert (project / "tuner0.json").read_text() == "{}"  # what KerasTuner's tuner saves
    search_state.check_saved_state(project)
    # Two trials ended and no tuner file: deleted by hand, not a kill
    (project / "tuner0.json").unlink()
    (project / "trial_1").mkdir()
    (project / "trial_1" / "trial.json").write_text(json.dumps({"status": "COMPLETED"}))
    search_state.finish_first_trial_save(project)
    with pytest.raises(DataError, match="found no tuner0.json beside oracle.json"):
        search_state.check_saved_state(project)


def _start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-m", "src.tune", *args], cwd=REPO_ROOT,
                                stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


def _wait_for(log: Path, done, process: subprocess.Popen, timeout: float) -> str:
    """Poll the log until done(text) holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if done(text):
            return text
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} first:\n{text[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting:\n{log.read_text()[-3000:]}")


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("tuner", ["hyperband", "bayesian"])
def test_search_killed_mid_trial_resumes_and_keeps_completed_trials(
        kaggle_dir_readonly, tmp_path, capsys, tuner):
    artifacts = tmp_path / "artifacts"
    args = _args(kaggle_dir_readonly, artifacts, "--tuner", tuner, "--max-trials", "2")
    log = tmp_path / "killed.log"
    process = _start(args, log)
    try:
        # Trial 2 is training its first epoch: kill it there.
        _wait_for(log, lambda text: text.count("Epoch 1/") == 2, process, timeout=240)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        _stop([process])
    before = _trial_files(_project(artifacts))
    assert sorted(state["status"] for state in before.values()) == ["COMPLETED", "RUNNING"]
    (done,) = [state for state in before.values() if state["status"] == "COMPLETED"]
    host, project = socket.gethostname(), _project(artifacts)  # what a kill mid-write leaves:
    stale = [project / f".partial-{ended_pid()}@{host}@oracle.json",
             project / f"trial_{done['trial_id']}" / f".partial-{ended_pid()}@{host}@trial.json",
             artifacts / "tune" / f".partial-{ended_pid()}@{host}@best_hparams.json"]
    for path in stale:
        path.write_text('{"half')

    capsys.readouterr()
    assert tune.main(args) == 0
    assert not any(path.exists() for path in stale)
    out = capsys.readouterr().out
    assert "Reloading Tuner" in out and out.count("Running Trial") == 1
    trials = _trials(artifacts).set_index("trial_id")
    assert sorted(trials.index) == sorted(before) and set(trials["status"]) == {"COMPLETED"}
    assert trials.loc[done["trial_id"], "val_log_loss"] == pytest.approx(done["score"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chief_and_two_workers_run_one_search(kaggle_dir_readonly, tmp_path):
    artifacts = tmp_path / "artifacts"
    # Hyperband: two trials, one per worker
    args = _args(kaggle_dir_readonly, artifacts, *DISTRIBUTED)
    network = {tune.ENV_ORACLE_IP: "127.0.0.1", tune.ENV_ORACLE_PORT: str(_free_port())}
    chief_log = tmp_path / "chief.log"
    chief = _start(args, chief_log, **network, **{tune.ENV_TUNER_ID: "chief"})
    processes = [chief]
    try:
        _wait_for(chief_log, lambda text: "chief: serving the search" in text, chief, timeout=120)
        logs = [tmp_path / f"tuner{i}.log" for i in range(2)]
        processes += [_start(args, log, **network, **{tune.ENV_TUNER_ID: f"tuner{i}"})
                      for i, log in enumerate(logs)]
        returncodes = [process.wait(timeout=240) for process in processes]
    finally:
        _stop(processes)
    assert returncodes == [0, 0, 0], chief_log.read_text()[-3000:]
    trials = _trials(artifacts)
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
    numbers_by_worker = []
    for i, log in enumerate(logs):
        text = log.read_text()
        numbers_by_worker.append({int(line.split()[2]) for line in text.splitlines()
                                  if line.startswith(f"tuner{i}: trial ")})
    assert all(numbers_by_worker), numbers_by_worker  # each worker ran a trial ...
    # ... and the chief's one oracle holds every trial of both.
    assert sorted(set.union(*numbers_by_worker)) == sorted(int(t) + 1 for t in trials["trial_id"])
    assert "Leaderboard (hyperband, 2 trials" in chief_log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_chief_whose_workers_failed_trials_in_a_row_ends_in_one_line(
        kaggle_dir_readonly, tmp_path, monkeypatch, capsys):
    """KerasTuner's chief served on for ever once its workers had stopped on the failures."""
    artifacts = tmp_path / "artifacts"
    args = _args(kaggle_dir_readonly, artifacts, *DISTRIBUTED, *ONE_EPOCH_RANDOM[:2],
                 "--max-trials", "6", "--tune-epochs", "1")
    network = {tune.ENV_ORACLE_IP: "127.0.0.1", tune.ENV_ORACLE_PORT: str(_free_port())}
    chief_log = tmp_path / "chief.log"
    chief = _start(args, chief_log, **network, **{tune.ENV_TUNER_ID: "chief"})
    try:
        _wait_for(chief_log, lambda text: "chief: serving the search" in text, chief, timeout=120)
        builds = []

        def diverge(*args, **kwargs):  # the worker's first trial completes, then none
            builds.append(args)
            if len(builds) <= 2:  # build 1 is the tuner's look at its space
                return build_cnn(*args, **kwargs)
            raise ValueError("the loss went NaN")

        monkeypatch.setattr(tuners, "build_cnn", diverge)
        for name, value in {**network, tune.ENV_TUNER_ID: "tuner0"}.items():
            monkeypatch.setenv(name, value)
        assert run_cli(tune.main, args) == 1  # the worker, here
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            "error: the search stopped: 3 trials in a row failed (their messages are above, "
            "on the machines that ran them)")
        assert chief.wait(timeout=60) == 1
    finally:
        _stop([chief])
    assert chief_log.read_text().strip().splitlines()[-1] == (
        "error: the search stopped: 3 trials in a row failed (their messages are on the "
        "machines that ran them); the results above rank the trials that completed (run the "
        "command again to retry the last, or with --overwrite to start over)")
    assert list(_trials(artifacts)["status"]) == ["COMPLETED", "FAILED", "FAILED", "FAILED"]


def test_the_chief_tells_a_worker_asking_for_a_trial_after_failures_in_a_row(tmp_path):
    """KerasTuner's oracle checks the failures only as a trial ends: it handed a worker that
    asked a new trial (Hyperband's would wait for ever on the failed one still listed as
    running), and the chief waited on that worker."""
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.engine.trial import TrialStatus

    hp = kt.HyperParameters()
    hp.Int("a", 0, 10)
    oracle = kt.oracles.RandomSearchOracle(objective="val_loss", max_trials=10,
                                           hyperparameters=hp)
    oracle._set_project_dir(str(tmp_path), "search")
    servicer = search_chief.Servicer(oracle)
    for _ in range(3):  # tuner0's trials fail; the oracle raises the stop at the third
        trial = oracle.create_trial("tuner0")
        trial.status = TrialStatus.FAILED
        ended = protos.get_service().EndTrialRequest(trial=trial.to_proto())
        try:
            servicer.EndTrial(ended, None)
        except RuntimeError:
            pass
    assert servicer.told == 1 and search_chief._every_worker_told(oracle)  # tuner0 heard

    class Context:
        def abort(self, code, details):
            self.aborted = code, details
            raise grpc.RpcError(details)  # gRPC's own abort raises too

    context = Context()
    asked = protos.get_service().CreateTrialRequest(tuner_id="tuner1")
    with pytest.raises(grpc.RpcError):
        servicer.CreateTrial(asked, context)
    assert context.aborted == (grpc.StatusCode.ABORTED,
                               "Number of consecutive failures exceeded the limit of 3.")
    assert servicer.told == 2 and len(oracle.trials) == 3  # no new trial handed out
    assert oracle.tuner_ids == {"tuner0"} and search_chief._every_worker_told(oracle)


def test_ctrl_c_inside_a_trial_stops_the_search_not_the_trial(kaggle_dir_readonly, tmp_path,
                                                              monkeypatch, capsys):
    """Inside TensorFlow's C code, Ctrl-C is a SystemError, which KerasTuner counted as a
    failed trial: three of them ended the search as failures."""
    def interrupted(*args, **kwargs):
        raise SystemError("<built-in function TFE_Py_Execute> returned a result with an "
                          "exception set") from KeyboardInterrupt()

    monkeypatch.setattr(tuners, "measure_trial_speed", interrupted)
    args = _args(kaggle_dir_readonly, tmp_path / "artifacts", *ONE_EPOCH_RANDOM,
                 "--trial-seconds", "1")
    assert run_cli(tune.main, args) == 130
    assert capsys.readouterr().err == "interrupted: run the same command again to resume\n"


@pytest.mark.parametrize("argv, message", [
    (["--max-trials", "0"], "error: --max-trials: expected an integer 1..10000, found 0"),
    (["--tune-epochs", "-1"], "error: --tune-epochs: expected an integer 1..10000, found -1"),
    (["--tuner", "grid"],
     "error: --tuner: expected one of hyperband, bayesian, random, found 'grid'"),
    (["--tune-samples", "50"],
     "error: --tune-samples: expected 0 (every image) or an integer 100..2147483647, found 50"),
    (["--tune-samples", "-1"],  # the message once named 0..2147483647, though 1-99 are refused
     "error: --tune-samples: expected 0 (every image) or an integer 100..2147483647, found -1"),
    (["--trial-seconds", "20"], "error: --trial-seconds: expected --tuner bayesian or random "
     "(Hyperband's rungs count epochs), found --tuner hyperband"),
    (["--tuner", "random", "--trial-seconds", "-1"],
     "error: --trial-seconds: expected a number of seconds 0..31536000 (0: off), found -1.0"),
    (["--trial-seconds", "auto"],  # smoke's tuner is Hyperband: the budget is what it lacks
     "error: --trial-seconds: expected a budget to plan the time per trial (--minutes N, or "
     "the quick or full profile) with --trial-seconds auto, found --profile smoke without "
     "--minutes"),
])
def test_out_of_range_flags_are_one_line_exit_2_and_write_nothing(
        kaggle_dir_readonly, tmp_path, capsys, argv, message):
    artifacts = tmp_path / "artifacts"
    assert run_cli(tune.main, _args(kaggle_dir_readonly, artifacts, *argv)) == 2
    assert capsys.readouterr().err == message + "\n"
    assert not artifacts.exists()


def test_trial_seconds_auto_leaves_the_time_per_trial_to_the_plan(capsys):
    # The README's "with a budget, the plan sets S" had no flag that reached it: a given
    # time is kept, and no profile has one since 2026-12-04.
    config = tune.parse_args(["--trial-seconds", "auto"])
    assert config.planned and config.trial_seconds > 0
    assert "trial_seconds" not in config.flags_given  # so src.search_plan sets it
    given = tune.parse_args(["--trial-seconds", "20"])
    assert given.trial_seconds == 20 and "trial_seconds" in given.flags_given
    with pytest.raises(SystemExit, match="2"):
        tune.parse_args(["--trial-seconds", "soon"])
    assert capsys.readouterr().err == ("error: argument --trial-seconds: expected a number of "
                                       "seconds or auto, found 'soon' (see python -m src.tune "
                                       "--help)\n")


def _damage_pixel(folder: Path) -> None:
    lines = (folder / "train.csv").read_text().splitlines()
    cells = lines[8].split(",")
    cells[301] = "256"
    lines[8] = ",".join(cells)
    (folder / "train.csv").write_text("\n".join(lines) + "\n")


def _keep_one_seven(folder: Path) -> None:
    keep_only(folder, 7, 1)


@pytest.mark.parametrize("damage, message", [
    (_damage_pixel, "train.csv:9: pixel300: expected an integer 0..255, found '256'"),
    (_keep_one_seven, "train.csv: expected at least 5 images of every digit for the search's "
     "stratified 20% hold-out, found 1 of digit 7"),
])
def test_bad_data_is_one_line_exit_2_and_writes_nothing(kaggle_dir, tmp_path, capsys,
                                                        damage, message):
    damage(kaggle_dir)
    artifacts = tmp_path / "artifacts"
    assert run_cli(tune.main, _args(kaggle_dir, artifacts)) == 2
    assert capsys.readouterr().err == f"error: {kaggle_dir}/{message}\n"
    assert not artifacts.exists()


def test_half_set_distributed_environment_is_one_line_exit_2(kaggle_dir_readonly, tmp_path,
                                                             capsys, monkeypatch):
    monkeypatch.setenv(tune.ENV_ORACLE_IP, "127.0.0.1")
    artifacts = tmp_path / "artifacts"
    assert run_cli(tune.main, _args(kaggle_dir_readonly, artifacts)) == 2
    assert capsys.readouterr().err == (
        "error: $KERASTUNER_ORACLE_IP is set: expected KERASTUNER_ORACLE_PORT as well, "
        "found it unset\n")
    assert not artifacts.exists()


def test_a_worker_without_a_chief_says_so_in_minutes_not_an_hour(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch):
    """KerasTuner's worker waits an hour for a chief that has ended (or was never there)."""
    port = _free_port()
    monkeypatch.setenv(tune.ENV_ORACLE_IP, "127.0.0.1")
    monkeypatch.setenv(tune.ENV_ORACLE_PORT, str(port))
    monkeypatch.setenv(tune.ENV_TUNER_ID, "tuner0")
    monkeypatch.setattr(search_chief, "CHIEF_WAIT_SECONDS", 2.0)
    monkeypatch.setattr(search_chief, "QUIET_WAIT_SECONDS", 1.0)
    artifacts = tmp_path / "artifacts"
    assert run_cli(tune.main, _args(kaggle_dir_readonly, artifacts, *DISTRIBUTED)) == 2
    out, err = capsys.readouterr()
    assert f"waiting for the chief at 127.0.0.1:{port} (up to 2s)" in out
    assert err == (f"error: $KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT: expected a chief "
                   f"serving the search there, found none answered at 127.0.0.1:{port} in 2s "
                   "(start the chief (KERASTUNER_TUNER_ID=chief) first or beside its workers; "
                   "a chief ends once its search is done)\n")
    assert not artifacts.exists()  # stopped before the data loads


def test_a_chief_name_that_cannot_be_looked_up_is_said_at_once(monkeypatch):
    """It waited the whole wait, then blamed a chief not started."""
    def no_such_name(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(search_chief.socket, "getaddrinfo", no_such_name)
    started = time.monotonic()
    with pytest.raises(DataError, match=r"^\$KERASTUNER_ORACLE_IP:\$KERASTUNER_ORACLE_PORT: "
                       r"expected an address this machine can look up, found "
                       r"chief\.example:5000 \(Name or service not known\)$"):
        search_chief.wait_for_chief("chief.example:5000")
    assert time.monotonic() - started < search_chief.QUIET_WAIT_SECONDS


def test_a_worker_finds_a_chief_that_answers_without_a_word(capsys, monkeypatch):
    import grpc
    from keras_tuner.src.distribute import oracle_client

    monkeypatch.setattr(oracle_client, "TIMEOUT", 3600)  # KerasTuner's, put back after
    chief = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = chief.add_insecure_port("127.0.0.1:0")
    chief.start()
    try:
        search_chief.wait_for_chief(f"127.0.0.1:{port}")
    finally:
        chief.stop(None)
    assert capsys.readouterr().out == ""
    # each later request waits minutes, not an hour, for a chief that has died
    assert oracle_client.TIMEOUT == search_chief.CHIEF_WAIT_SECONDS


@pytest.mark.parametrize("code, details, stopped", [
    # Through gRPC, the chief's stop reached a worker as an _InactiveRpcError traceback.
    ("ABORTED", "Number of consecutive failures exceeded the limit of 3.",
     "the search stopped: 3 trials in a row failed (their messages are above, on the "
     "machines that ran them)"),
    # After KerasTuner's hour, a worker's request to a dead chief was a gRPC traceback.
    ("DEADLINE_EXCEEDED", "Deadline Exceeded",
     "the chief stopped answering (gRPC DEADLINE_EXCEEDED); the trials it recorded stay in "
     "the shared folder: start it again, then this worker"),
])
def test_a_worker_stopped_by_its_chief_says_why_in_one_line(code, details, stopped):
    import grpc

    class ChiefsAnswer(grpc.RpcError):
        def code(self):
            return grpc.StatusCode[code]

        def details(self):
            return details

    class Tuner:
        oracle = None

        def search(self, *args, **kwargs):
            raise ChiefsAnswer()

    assert tune.run_trials(Tuner(), (None, None), (None, None)) == stopped


@pytest.mark.parametrize("argv, message", [
    # No machine plans there: every trial trained for the placeholder's second.
    (["--minutes", "10", "--trial-seconds", "auto"],
     "--trial-seconds: expected a number of seconds on a search spread over machines (each "
     "would plan its own), found --trial-seconds auto"),
    # auto named the shared folder after each machine's hardware: a CPU chief with bfloat16
    # (mixed_bfloat16) and GPU workers (float32) searched in two folders.
    (SMOKE, "--precision: expected a dtype policy named on a search spread over machines "
     "(each resolves auto for its own hardware: a CPU chief and GPU workers would search in "
     "two folders), found --precision auto"),
])
def test_what_each_machine_would_settle_alone_is_refused_on_a_spread_search(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv(tune.ENV_ORACLE_IP, "127.0.0.1")
    monkeypatch.setenv(tune.ENV_ORACLE_PORT, str(_free_port()))
    monkeypatch.setenv(tune.ENV_TUNER_ID, "worker1")
    artifacts = tmp_path / "artifacts"
    assert run_cli(tune.main, ["--data-dir", str(kaggle_dir_readonly), "--artifacts-dir",
                               str(artifacts), *argv]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not artifacts.exists()


@pytest.mark.parametrize("name, value, message", [
    ("port", "abc", "$KERASTUNER_ORACLE_PORT: expected a port 1..65535, found 'abc'"),
    ("port", "0", "$KERASTUNER_ORACLE_PORT: expected a port 1..65535, found '0'"),
    ("port", "99999", "$KERASTUNER_ORACLE_PORT: expected a port 1..65535, found '99999'"),
    ("port", "", "$KERASTUNER_ORACLE_PORT: expected a port 1..65535, found ''"),
    ("ip", "::1", "$KERASTUNER_ORACLE_IP: expected a host name or IP address, an IPv6 one in "
                  "brackets such as [::1], found '::1'"),
    ("ip", " ", "$KERASTUNER_ORACLE_IP: expected a host name or IP address, an IPv6 one in "
                "brackets such as [::1], found ' '"),
    ("ip", "10.0.0.5 ", "$KERASTUNER_ORACLE_IP: expected a host name or IP address, an IPv6 "
                        "one in brackets such as [::1], found '10.0.0.5 '"),
    ("ip", "[::1", "$KERASTUNER_ORACLE_IP: expected a host name or IP address, an IPv6 one "
                   "in brackets such as [::1], found '[::1'"),
    ("id", "", "$KERASTUNER_TUNER_ID: expected a name for this machine's tuner (chief, or a "
               "worker's own name), found it empty"),
])
def test_a_distributed_address_grpc_would_misread_is_one_line_exit_2(
        kaggle_dir_readonly, tmp_path, capsys, monkeypatch, name, value, message):
    """A chief on port 0 or 99999 served on another port than it printed, one on a bare IPv6
    address or a taken port was a gRPC traceback, and a worker on port 'abc' waited."""
    environment = {"ip": "127.0.0.1", "port": "8000", "id": "chief"} | {name: value}
    monkeypatch.setenv(tune.ENV_ORACLE_IP, environment["ip"])
    monkeypatch.setenv(tune.ENV_ORACLE_PORT, environment["port"])
    monkeypatch.setenv(tune.ENV_TUNER_ID, environment["id"])
    artifacts = tmp_path / "artifacts"
    assert run_cli(tune.main, _args(kaggle_dir_readonly, artifacts)) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not artifacts.exists()


@pytest.mark.parametrize("address, tuner_id, role", [
    ("10.0.0.5", "tuner0", "worker"), ("[::1]", "tuner1", "worker"),
    ("node-1.cluster.local", "tuner0", "worker"), ("127.0.0.1", "chief", "chief")])
def test_addresses_grpc_reads_pass_the_check(monkeypatch, address, tuner_id, role):
    monkeypatch.setenv(tune.ENV_ORACLE_IP, address)
    monkeypatch.setenv(tune.ENV_ORACLE_PORT, str(_free_port()))
    monkeypatch.setenv(tune.ENV_TUNER_ID, tuner_id)
    assert tune.distributed_role() == role


def test_a_chief_on_a_taken_port_is_one_line_exit_2(kaggle_dir_readonly, tmp_path, capsys,
                                                    monkeypatch):
    """gRPC's own bind was a traceback for a port a plain socket held, and shared the port
    of an earlier chief still serving (SO_REUSEPORT)."""
    import grpc

    earlier_chief = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = earlier_chief.add_insecure_port("127.0.0.1:0")
    earlier_chief.start()
    try:
        monkeypatch.setenv(tune.ENV_ORACLE_IP, "127.0.0.1")
        monkeypatch.setenv(tune.ENV_ORACLE_PORT, str(port))
        monkeypatch.setenv(tune.ENV_TUNER_ID, "chief")
        artifacts = tmp_path / "artifacts"
        assert run_cli(tune.main, _args(kaggle_dir_readonly, artifacts, *DISTRIBUTED)) == 2
    finally:
        earlier_chief.stop(None)
    assert capsys.readouterr().err == (
        "error: $KERASTUNER_ORACLE_IP:$KERASTUNER_ORACLE_PORT: expected an address and port "
        f"this machine can serve the search on, found 127.0.0.1:{port} (Address already in "
        "use (EADDRINUSE))\n")
    assert not artifacts.exists()  # stopped before the data loads


def test_hyperband_plan_follows_its_brackets_and_rounds():
    # max_epochs 6, factor 3: five trials of 2 epochs, the best two on to 6, then three of 6.
    plan = tuners.planned_epochs(Config(tuner="hyperband", tune_epochs=6))
    assert plan == [2] * 5 + [4] * 2 + [6] * 3
    assert tuners.planned_epochs(Config(tuner="random", max_trials=3, tune_epochs=4)) == [4, 4, 4]


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "best_hparams.json"
    path.write_text("old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(DataError, match="best_hparams.json: expected a writable folder with "
                       "free space, found disk full"):
        util.write_atomically(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_wide_space_offers_wider_networks_in_a_search_of_its_own(tmp_path):
    def choices(wide: bool) -> dict:
        hp = kt.HyperParameters()
        define_search_space(hp, wide=wide)
        return {param.name: list(param.values) for param in hp.space if hasattr(param, "values")}

    narrow, wide = choices(False), choices(True)
    assert [narrow[f"filters_{block}"] for block in range(3)] == [[16, 32], [32, 64], [64, 128]]
    assert [wide[f"filters_{block}"] for block in range(3)] == [[16, 32, 48], [32, 64, 96],
                                                                [64, 128, 192]]
    assert (max(narrow["dense_units"]), max(wide["dense_units"])) == (256, 512)
    base = ["--profile", "smoke", "--artifacts-dir", str(tmp_path)]
    searched = tune.parse_args([*base, "--wide-space"])
    assert searched.wide_space and not tune.parse_args(base).wide_space
    # a wide search is not resumed as a narrow one, nor the other way round
    assert "-wide-" in search_state.project_name(searched, "abc")
    narrow = search_state.project_name(tune.parse_args(base), "abc")
    assert search_state.project_name(searched, "abc").replace("-wide", "") == narrow


def test_the_tuner_trains_in_the_chosen_precision(tmp_path):
    import keras

    config = Config(profile="smoke", artifacts_dir=str(tmp_path), precision="mixed_bfloat16")
    tune.build_tuner(config, role=None, train_images=240, fingerprint="0123456789ab")
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert search_state.project_name(config, "0123456789ab").endswith(
        f"-mixed_bfloat16-val_log_loss-data01234567-code{search_state.trial_code_version()}")


def test_a_search_saved_by_other_training_code_is_not_resumed(tmp_path, monkeypatch):
    """Trials trained by an older model.py or tuners.py (or another Keras) scored another
    recipe: the project folder is named for the trial code, so the search starts its own."""
    config = Config(profile="smoke", artifacts_dir=str(tmp_path))
    before = search_state.project_name(config, "0123456789ab")
    search_state.trial_code_version.cache_clear()
    monkeypatch.setattr(kt, "__version__", "9.9.9")
    try:
        assert search_state.project_name(config, "0123456789ab") != before
    finally:
        monkeypatch.undo()
        search_state.trial_code_version.cache_clear()
    assert search_state.project_name(config, "0123456789ab") == before
    # The older search's folder is named, and left as it was.
    older = tmp_path / "tune" / before.replace("-code", "-codeolder")
    older.mkdir(parents=True)
    project = search_state.project_dir(config, "0123456789ab")
    assert search_state.older_code_searches(project) == [older]


def test_every_trial_builds_its_networks_in_the_chosen_precision(kaggle_dir_readonly, tmp_path,
                                                                  monkeypatch):
    """Keras' clear_session resets the dtype policy to float32: timing a trial's network
    and clearing the session must not leave that trial, or the next, in float32."""
    import keras

    policies = []

    def spy(*args, **kwargs):
        policies.append(keras.mixed_precision.global_policy().name)
        return build_cnn(*args, **kwargs)

    monkeypatch.setattr(tuners, "build_cnn", spy)
    args = _args(kaggle_dir_readonly, tmp_path / "artifacts", *ONE_EPOCH_RANDOM,
                 "--trial-seconds", "1", "--precision", "mixed_bfloat16")
    assert tune.main(args) == 0
    assert len(policies) >= 4  # each of 2 trials: its network timed, then trained
    assert set(policies) == {"mixed_bfloat16"}


@pytest.mark.parametrize("completed", [0, 2])
def test_trials_that_fail_in_a_row_stop_the_search_in_one_line(kaggle_dir_readonly, tmp_path,
                                                               monkeypatch, capsys, completed):
    """The trials that completed before are still ranked and written: else an older
    search's best_hparams.json would stay, for src.submit to use."""
    builds = []

    def diverge(*args, **kwargs):  # after `completed` trials; build 1 is the tuner's look
        builds.append(args)          # at its space
        if len(builds) <= 1 + completed:
            return build_cnn(*args, **kwargs)
        raise ValueError("the loss went NaN")

    monkeypatch.setattr(tuners, "build_cnn", diverge)
    args = _args(kaggle_dir_readonly, tmp_path / "artifacts", "--tuner", "random",
                 "--max-trials", "6", "--tune-epochs", "1")
    assert run_cli(tune.main, args) == 1
    out, err = capsys.readouterr()
    error = ("error: the search stopped: 3 trials in a row failed; the last with ValueError: "
             "the loss went NaN")
    if completed:
        error += ("; the results above rank the trials that completed (run the command again "
                  "to retry the last, or with --overwrite to start over)")
    assert err.strip().splitlines()[-1] == error
    results = tmp_path / "artifacts" / "tune"
    assert (results / "best_hparams.json").is_file() is bool(completed)
    if completed:
        trials = pd.read_csv(results / "trials.csv")
        assert (trials["status"] == "COMPLETED").sum() == completed
        assert "Leaderboard (random, " in out


def test_a_search_where_no_trial_completed_names_an_older_searchs_results(
        kaggle_dir_readonly, tmp_path, monkeypatch, capsys):
    # They stay (an earlier run's files are never removed), and src.submit would use them.
    builds = []

    def diverge(*args, **kwargs):  # build 1 is the tuner's look at its space
        builds.append(args)
        if len(builds) == 1:
            return build_cnn(*args, **kwargs)
        raise ValueError("the loss went NaN")

    older = tmp_path / "artifacts" / "tune" / "best_hparams.json"
    older.parent.mkdir(parents=True)
    older.write_text("{}")
    monkeypatch.setattr(tuners, "build_cnn", diverge)
    args = _args(kaggle_dir_readonly, tmp_path / "artifacts", "--tuner", "random",
                 "--max-trials", "3", "--tune-epochs", "1")
    assert run_cli(tune.main, args) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"; {older} is an older search's, which python -m src.submit would use")
    assert older.read_text() == "{}"


def test_leaderboard_shows_hyperparameters_unrounded():
    row = {"rank": 1, "trial_id": "0000", "val_log_loss": 0.04321, "val_accuracy": 0.98583,
           "status": "COMPLETED",
           "params": 426058, "epochs": 6, "seconds": 31.4, "hparams": dict(DEFAULT_HPARAMS)}
    table = search_results.leaderboard([row]).splitlines()
    assert table[1].split() == ["1", "0000", "0.0432", "0.9858", "426,058", "6", "31",
                                "32-64-128", "2", "3", "no", "0/0.25", "128", "0.002", "0.10"]


def _learning_rates(model, steps: list[int]) -> list[float]:
    """The model's learning rate at each step, as a share of the search space's peak."""
    config = model.optimizer.get_config()["learning_rate"]["config"]
    schedule = keras.optimizers.schedules.CosineDecay.from_config(config)
    return [float(schedule(step)) / DEFAULT_HPARAMS["learning_rate"] for step in steps]


def test_trials_train_on_the_members_schedule_to_their_own_last_epoch():
    import keras_tuner as kt

    hypermodel = tuners.CNNHyperModel(train_images=1000, batch_size=100, seed=0, epochs=7)
    hp = kt.HyperParameters()
    # A Bayesian or random trial of 7 epochs of 10 steps: warm up over the first epoch, the
    # peak at its end, then a cosine that reaches its end at the 7th epoch's last step.
    start, peak, half, last = _learning_rates(hypermodel.build(hp), [0, 10, 40, 69])
    assert start == pytest.approx(0.1) and peak == pytest.approx(1)
    assert half == pytest.approx(0.5) and last < 0.001
    # A Hyperband trial continuing an earlier rung from epoch 2 to 6: its own 4 epochs.
    hp.values.update({"tuner/epochs": 6, "tuner/initial_epoch": 2})
    peak, half, last = _learning_rates(hypermodel.build(hp), [10, 25, 39])
    assert peak == pytest.approx(1) and half == pytest.approx(0.5) and last < 0.003


def test_equal_seconds_buy_a_network_twice_as_fast_twice_the_epochs():
    assert tuners.timed_epochs(30, 3200, 9600, most=60) == 10
    assert tuners.timed_epochs(30, 6400, 9600, most=60) == 20
    assert tuners.timed_epochs(30, 100, 9600, most=60) == 1  # never none
    assert tuners.timed_epochs(30, 10**6, 9600, most=60) == 60  # never past the cap


def test_time_based_trials_train_the_epochs_their_measured_speed_buys(
        kaggle_dir_readonly, tmp_path, monkeypatch, capsys):
    def stand_in_speed(hp, x, y, batch_size, seed, precision):  # no clock: falls with size
        return 4e8 / build_cnn(hp).count_params()

    monkeypatch.setattr(tuners, "measure_trial_speed", stand_in_speed)
    artifacts = tmp_path / "artifacts"
    args = _args(kaggle_dir_readonly, artifacts, *ONE_EPOCH_RANDOM, "--trial-seconds", "1",
                 "--tune-epochs", "10")
    assert tune.main(args) == 0
    assert "images/s on this machine, so " in capsys.readouterr().out
    trials = _trials(artifacts)
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
    for trial in trials.itertuples():  # 240 training images, at most --tune-epochs 10
        assert trial.images_per_second == pytest.approx(4e8 / trial.params, abs=0.1)
        assert trial.epochs == tuners.timed_epochs(1, trial.images_per_second, 240, most=10)
    cheap, costly = trials.sort_values("params").itertuples()
    assert cheap.params < costly.params and cheap.epochs > costly.epochs


def test_two_configurations_of_one_network_count_as_one():
    two_blocks = {**DEFAULT_HPARAMS, "conv_blocks": 2}
    assert tuners.network_values(two_blocks) == tuners.network_values(
        {**two_blocks, "filters_2": 64})
    assert tuners.network_values(DEFAULT_HPARAMS) != tuners.network_values(
        {**DEFAULT_HPARAMS, "filters_2": 64})  # three blocks: the third's filters count
    assert "tuner/epochs" not in tuners.network_values({**DEFAULT_HPARAMS, "tuner/epochs": 3})


def test_the_bayesian_oracle_never_hands_out_a_network_twice(tmp_path):
    import keras_tuner as kt

    from src.model import define_search_space

    space = kt.HyperParameters()
    define_search_space(space)
    oracle = kt.oracles.BayesianOptimizationOracle(
        objective=kt.Objective("val_log_loss", "min"), max_trials=4, hyperparameters=space,
        seed=1)
    oracle._set_project_dir(str(tmp_path), "search")
    network = {**DEFAULT_HPARAMS, "conv_blocks": 2}
    # A Gaussian process settled on one network proposes it every time, here once with the
    # unused third block's filters changed.
    proposals = iter([network, network, {**network, "filters_2": 64}, network])
    oracle.populate_space = lambda trial_id: {"status": "RUNNING", "values": next(proposals)}
    tuners.never_twice(oracle)
    handed_out = []
    for number in range(4):
        trial = oracle.create_trial(f"tuner{number}")
        handed_out.append(tuners.network_values(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_log_loss": 0.1})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert handed_out[0] == tuners.network_values(network)
    assert len({json.dumps(values, sort_keys=True) for values in handed_out}) == 4
