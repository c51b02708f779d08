"""Where a search keeps its state under <artifacts>/tune, and whether KerasTuner can
resume it: a search's project folder is named for its settings and labelled data, and
saved state KerasTuner would silently start afresh over (or fail on after a trial) is
refused in one line before the search starts."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import filelock

from src import calibrate, data, model, search_ensemble, search_plan, tuners
from src.config import Config
from src.errors import DataError
from src.model import resolve_precision
from src.search_results import COMPLETED, OBJECTIVE, tune_dir
from src.util import one_line, read_json, write_atomically, writing

ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
VAL_FRACTION = 0.2  # of the searched images: the hold-out trials are scored on
MIN_IMAGES_PER_DIGIT = 5  # so that the 20% hold-out holds one of each
SEARCH_LOCK = ".search.lock"  # in <artifacts>/tune, held by the search that runs there


@functools.cache
def trial_code_version() -> str:
    """A short hash of the code that trains and scores a trial (src/model.py, src/tuners.py
    with the timing that buys a timed trial's epochs, the hold-out's subsample, split and
    log-loss) and of the library versions that run it: trials saved by other code score
    another recipe, and ranked beside new ones would choose on a mix. Any edit of these
    counts, a comment's too: a search then starts afresh rather than risk the mix."""
    import keras
    import keras_tuner
    import sklearn
    import tensorflow as tf

    text = "".join(inspect.getsource(code) for code in (
        model, tuners, calibrate, data.plan_training_images, data.subsample_rows,
        data.split_train_val, search_ensemble.holdout_log_loss))
    text += f"hold-out {VAL_FRACTION} of at least {MIN_IMAGES_PER_DIGIT} a digit"
    text += (f"tensorflow {tf.__version__} keras {keras.__version__} keras_tuner "
             f"{keras_tuner.__version__} sklearn {sklearn.__version__}")
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def _search_lock(config: Config, expected: str, hint: str) -> filelock.FileLock:
    """<artifacts>/tune's search lock, taken; DataError (expected, hint) when a search holds
    it. The system lets go of it when its process ends, killed or not."""
    lock = filelock.FileLock(tune_dir(config) / SEARCH_LOCK)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise DataError(expected, f"one running (it holds {SEARCH_LOCK})",
                        file=tune_dir(config), hint=hint) from None
    return lock


@contextlib.contextmanager
def search_folder_held(config: Config, role: str | None) -> Iterator[None]:
    """Hold <artifacts>/tune while this search runs: DataError when another search on one
    machine, or a chief, holds it (two oracles would hand out the same trial ids, write one
    another's trial files and choose from a mix). A worker shares its chief's folder and
    holds nothing."""
    if role == "worker":
        yield
        return
    with writing(tune_dir(config) / SEARCH_LOCK):
        tune_dir(config).mkdir(parents=True, exist_ok=True)
        lock = _search_lock(config, "no other search running in this folder",
                            "let it end, or give this one another --artifacts-dir")
    try:
        yield
    finally:
        lock.release()


def check_no_search_running(config: Config) -> None:
    """DataError when a search holds <artifacts>/tune now: python -m src.submit would read
    its results as it rewrites them, the picks from one search and the hold-out from the
    next, or an older search's picks that it is about to replace."""
    if not (tune_dir(config) / SEARCH_LOCK).is_file():
        return
    try:
        _search_lock(config, "no search running in this folder", "let it end and run this "
                     "again, or give this run another --artifacts-dir").release()
    except OSError:  # a folder this process may not write in: a search could not run here
        return


def project_name(config: Config, fingerprint: str) -> str:
    """The tuner's folder under <artifacts>/tune: one per search setting, objective,
    labelled data (fingerprint: data_fingerprint's) and trial code (a search scored by
    another objective, on another train.csv or by other training code is not resumed)."""
    samples = config.tune_samples or "all"
    timed = f"-t{config.trial_seconds:g}" if config.trial_seconds else ""
    wide = "-wide" if config.wide_space else ""
    return (f"{config.tuner}-{config.source}-{samples}-e{config.tune_epochs}{timed}{wide}"
            f"-b{config.batch_size}-seed{config.seed}-{resolve_precision(config.precision)}"
            f"-{OBJECTIVE}-data{fingerprint[:8]}-code{trial_code_version()}")


def project_dir(config: Config, fingerprint: str) -> Path:
    """The tuner's folder for this search: <artifacts>/tune/<project_name>."""
    return tune_dir(config) / project_name(config, fingerprint)


def damaged_search_state(found: str, project: str | Path) -> DataError:
    """The one line for saved search state that KerasTuner or the ranking cannot use."""
    return DataError("the search state python -m src.tune saved", found,
                     file=project, hint="rerun with --overwrite to start the search over")


def saved_state(project: Path) -> bool:
    """Whether a search saved its state in project: KerasTuner's oracle.json or a
    tuner's <tuner id>.json."""
    return (project / "oracle.json").is_file() or bool(_saved_tuners(project))


def _saved_tuners(project: Path) -> list[str]:
    """The tuner ids (tuner0 on one machine, chief for a chief) that saved state here."""
    return sorted(path.stem for path in project.glob("*.json")
                  if path.name not in ("oracle.json", search_plan.SEARCH_CLOCK)
                  and not path.name.startswith(".partial-"))


def _completed_trials(project: Path) -> int:
    """How many trial.json files under project say their trial completed (or cannot be
    read: KerasTuner's reload names what is wrong with them)."""
    completed = 0
    for trial_file in project.glob("trial_*/trial.json"):
        try:
            completed += read_json(trial_file).get("status") == COMPLETED
        except (OSError, ValueError, AttributeError):
            completed += 1
    return completed


def finish_first_trial_save(project: Path) -> None:
    """Write the tuner's state file where a search was killed as its first trial ended:
    KerasTuner's oracle saves the trial as completed, then the tuner saves its own
    <tuner id>.json ({}: it keeps no state), and without that file KerasTuner would start
    afresh over the finished trial. Later trials find the file there already."""
    if ((project / "oracle.json").is_file() and not _saved_tuners(project)
            and len(list(project.glob("trial_*"))) == 1 and _completed_trials(project) == 1):
        write_atomically(project / f"{os.environ.get(ENV_TUNER_ID, 'tuner0')}.json", "{}")


def check_saved_state(project: Path) -> None:
    """DataError unless KerasTuner will reload the saved search: it reloads only when both
    oracle.json and this tuner's <tuner id>.json are there, and otherwise starts afresh,
    handing out trial ids again over the trials saved (a search run on one machine, then
    as a chief: KERASTUNER_TUNER_ID names the file). A search stopped in its first trial
    has no tuner file yet and nothing to lose: it starts again."""
    tuner_id = os.environ.get(ENV_TUNER_ID, "tuner0")
    saved = _saved_tuners(project)
    if not (project / "oracle.json").is_file():
        raise damaged_search_state("no oracle.json beside the tuner's state", project)
    if not saved and _completed_trials(project):
        raise damaged_search_state(f"no {tuner_id}.json beside oracle.json", project)
    if saved and tuner_id not in saved:
        was = next((name for name in saved if "chief" in name), saved[0])
        # Any tuner id without "chief" makes a worker while $KERASTUNER_ORACLE_IP is set: a
        # search saved on one machine resumes there only with it unset.
        how = (f"{ENV_TUNER_ID}={was}" if "chief" in was else
               f"on one machine, {ENV_ORACLE_IP} unset and "
               + (f"{ENV_TUNER_ID} unset or tuner0" if was == "tuner0"
                  else f"{ENV_TUNER_ID}={was}"))
        raise damaged_search_state(
            f"state saved as {' and '.join(saved)}, not as {tuner_id}", project).with_hint(
            f"run it as it was run ({how}), or rerun with --overwrite to start the search "
            "over")
    # Each file named, where KerasTuner's reload would say what is wrong but not where.
    for state_file in (project / "oracle.json", *(project / f"{name}.json" for name in saved),
                       *sorted(project.glob("trial_*/trial.json"))):
        try:
            state = read_json(state_file)
        except (OSError, ValueError) as error:
            raise damaged_search_state(one_line(error), state_file) from None
        if not isinstance(state, dict):
            raise damaged_search_state(f"a JSON {type(state).__name__}, not an object",
                                       state_file)


def lost_trial(project: Path) -> str | None:
    """The id of a trial the saved oracle started whose trial.json is gone, or None.
    KerasTuner writes a trial's file before the oracle's state, so only a hand (a trial
    folder deleted) leaves one; KerasTuner would fail on it: a finished trial's with a
    KeyError after training another trial, a running one's with a RuntimeError."""
    try:
        started = read_json(project / "oracle.json")["start_order"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # KerasTuner's reload names what is wrong with the file
    for trial_id in started if isinstance(started, list) else []:
        if not (project / f"trial_{trial_id}" / "trial.json").is_file():
            return str(trial_id)
    return None


def older_code_searches(project: Path) -> list[Path]:
    """The folders beside project of the same search, settings and data saved by other
    trial code (their names differ only after -code): what a changed package leaves."""
    stem = project.name.rsplit("-code", 1)[0]
    return sorted(folder for folder in project.parent.glob(f"{stem}-code*")
                  if folder != project and folder.is_dir())
