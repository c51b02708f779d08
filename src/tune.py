"""Search the CNN's hyperparameters with KerasTuner: ``python -m src.tune``.

Hyperband, Bayesian optimisation or random search (``--tuner``). Each trial
trains as an ensemble member does (a one-epoch warm-up, then a cosine decay to
its last epoch, every epoch run) and is scored by its last epoch's log-loss on
a stratified hold-out (the hypermodel and tuners: src.tuners). Everything
goes under ``<artifacts>/tune/``: the tuner's own project folder (one per search
setting and labelled data, so the same command resumes its search and a changed
flag or train.csv starts its own, but a larger --max-trials extends it; each
trial's folder keeps its hold-out probabilities), ``best_hparams.json`` (the best
configurations, and the ensemble chosen from them on the hold-out, read by
``python -m src.submit``) and
``trials.csv`` (every trial, best first). A run killed at any moment resumes on
the next run; the KERASTUNER_* environment variables spread
one search over a chief and many workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.src import utils as kt_utils

from src import search_plan
from src.config import (
    MIN_TUNE_SAMPLES,
    Config,
    add_minutes,
    add_override,
    build_parser,
    config_from_args,
    run_cli,
    seconds_or_auto,
)
from src.data import data_fingerprint, load_digits, plan_training_images, split_train_val
from src.download import download_competition_data
from src.errors import DataError
from src.model import resolve_precision, use_precision
from src.plan_files import Sizes
from src.search_chief import FailedOnWorkers, wait_for_chief
from src.search_ensemble import describe_ensemble, ensemble_from_search
from src.search_results import (
    COMPLETED,
    HOLDOUT_ROWS,
    OBJECTIVE,
    best_hparams_path,
    leaderboard,
    rank_trials,
    search_space_names,
    trials_path,
    tune_dir,
    write_results,
)
from src.search_state import (
    ENV_ORACLE_IP,
    ENV_ORACLE_PORT,
    ENV_TUNER_ID,
    MIN_IMAGES_PER_DIGIT,
    VAL_FRACTION,
    check_saved_state,
    damaged_search_state,
    finish_first_trial_save,
    lost_trial,
    older_code_searches,
    project_dir,
    project_name,
    saved_state,
    search_folder_held,
)
from src.tuners import (
    HYPERBAND_FACTOR,
    BayesianTuner,
    CNNHyperModel,
    HyperbandTuner,
    RandomTuner,
    SearchTuner,
    TrialProgress,
    planned_epochs,
)
from src.util import (
    describe_os_error,
    format_duration,
    keras_verbosity,
    one_line,
    remove_stale_partials,
    write_atomically,
    writing,
)


def _save_json_atomically(path: str, obj: object) -> str:
    """KerasTuner's utils.save_json, written atomically."""
    text = json.dumps(obj)
    write_atomically(path, text)
    return text


def distributed_role() -> str | None:
    """'chief' or 'worker' from KerasTuner's environment variables; None on one machine.
    DataError for an address, port or tuner id gRPC would misread, or a chief's address
    and port this machine cannot bind."""
    if ENV_ORACLE_IP not in os.environ:
        return None
    for name in (ENV_ORACLE_PORT, ENV_TUNER_ID):
        if name not in os.environ:
            raise DataError(f"{name} as well", "it unset", column=f"${ENV_ORACLE_IP} is set")
    address, port = os.environ[ENV_ORACLE_IP], os.environ[ENV_ORACLE_PORT]
    # KerasTuner hands "<ip>:<port>" to gRPC, which takes port 0 as any free port, wraps
    # 99999 round to 34463 and cannot read a bare IPv6 address: a chief would serve where
    # no worker looks, and a worker wait an hour for it.
    bracketed = address.startswith("[") and address.endswith("]")
    needs_brackets = any(char in address for char in ":[]")
    if not address or address != address.strip() or (needs_brackets and not bracketed):
        raise DataError("a host name or IP address, an IPv6 one in brackets such as [::1]",
                        repr(address), column=f"${ENV_ORACLE_IP}")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise DataError("a port 1..65535", repr(port), column=f"${ENV_ORACLE_PORT}")
    if not os.environ[ENV_TUNER_ID].strip():
        raise DataError("a name for this machine's tuner (chief, or a worker's own name)",
                        "it empty", column=f"${ENV_TUNER_ID}")
    if "chief" not in os.environ[ENV_TUNER_ID]:
        return "worker"
    _check_chief_can_serve(address, int(port))
    return "chief"


def _check_chief_can_serve(address: str, port: int) -> None:
    """DataError unless this machine can bind address:port, tried with a plain socket: gRPC
    binds with SO_REUSEPORT, so a second chief on an earlier chief's port would share it."""
    try:
        family, kind, _, _, where = socket.getaddrinfo(address.strip("[]"), port,
                                                       type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            probe.bind(where)
    except OSError as error:  # taken (EADDRINUSE), or not an address of this machine
        raise DataError("an address and port this machine can serve the search on",
                        f"{address}:{port} ({describe_os_error(error)})",
                        column=f"${ENV_ORACLE_IP}:${ENV_ORACLE_PORT}") from None


def build_tuner(config: Config, role: str | None, train_images: int, fingerprint: str,
                after_trial: Callable[[], None] | None = None) -> SearchTuner:
    """The tuner config asks for, its trials training on train_images images, reloading its
    project folder (project_name's, for the labelled data's fingerprint) unless
    config.overwrite; after_trial runs as each trial ends."""
    # KerasTuner writes its state files in place; a kill mid-write would leave a
    # truncated JSON that no later run could reload.
    kt_utils.save_json = _save_json_atomically
    prefix = f"{os.environ[ENV_TUNER_ID]}: " if role == "worker" else ""
    folder = tune_dir(config)
    common = dict(
        objective=kt.Objective(OBJECTIVE, direction="min"), seed=config.seed,
        progress=TrialProgress(planned_epochs(config), prefix),
        trial_seconds=config.trial_seconds, most_epochs=config.tune_epochs,
        after_trial=after_trial, directory=str(folder),
        project_name=project_name(config, fingerprint),
        # A worker shares the chief's folder: only the chief may wipe it.
        overwrite=config.overwrite and role != "worker")
    with writing(folder):  # a read-only --artifacts-dir fails here, not inside KerasTuner
        folder.mkdir(parents=True, exist_ok=True)
    project = project_dir(config, fingerprint)
    # What a killed search was saving: its state, or its results beside it.
    for state_folder in (folder, project, *project.glob("trial_*")):
        remove_stale_partials(state_folder)
    policy = use_precision(config.precision)  # before any trial builds a model
    hypermodel = CNNHyperModel(train_images, config.batch_size, config.seed, config.tune_epochs,
                               config.wide_space, policy)
    # Saved state to reload; a worker's errors come from the chief it asks, not a file.
    resuming = saved_state(project) and not config.overwrite and role != "worker"
    if resuming:
        finish_first_trial_save(project)
        check_saved_state(project)
        print(f"search: resuming the search saved in {project}", flush=True)
    elif role != "worker" and (older := older_code_searches(project)):
        print(f"search: starting afresh in {project}; {older[-1].name} holds the "
              "same search by other trial code (another package or library version), whose "
              "trials are not ranked beside these", flush=True)
    elif role != "worker":
        over = " over (--overwrite)" if saved_state(project) else ""
        print(f"search: starting{over} in {project}", flush=True)
    lost = lost_trial(project) if resuming else None
    if lost is not None:
        raise damaged_search_state(f"trial {lost} started but no trial_{lost}/trial.json",
                                   project)
    try:
        if config.tuner == "hyperband":
            return HyperbandTuner(hypermodel, max_epochs=config.tune_epochs,
                                  factor=HYPERBAND_FACTOR, **common)
        if config.tuner == "bayesian":
            return BayesianTuner(hypermodel, max_trials=config.max_trials,
                                 num_initial_points=max(3, config.max_trials // 4), **common)
        return RandomTuner(hypermodel, max_trials=config.max_trials, **common)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as error:
        # The oracle's reload wraps a missing key in a RuntimeError; any other is no damage.
        missing_key = isinstance(error, RuntimeError) and isinstance(error.__cause__, KeyError)
        if not resuming or (isinstance(error, RuntimeError) and not missing_key):
            raise
        # KerasTuner reloads its saved state here; its writes are atomic in this package, so
        # a file it cannot read was damaged by hand or by another program (JSONDecodeError
        # is a ValueError).
        raise damaged_search_state(one_line(error.__cause__ if missing_key else error),
                                   project) from None


def load_search_data(config: Config) -> tuple[tuple[np.ndarray, np.ndarray],
                                              tuple[np.ndarray, np.ndarray], dict]:
    """The stratified train/validation split the search scores on, and a summary of it."""
    digits = load_digits(config)
    x, y, rows = plan_training_images(
        digits, config.tune_samples, config.seed, needed=MIN_IMAGES_PER_DIGIT,
        purpose=f"the search's stratified {VAL_FRACTION:.0%} hold-out", size_flag="--tune-samples")
    x_train, x_val, y_train, y_val, _, val_rows = split_train_val(x, y, VAL_FRACTION,
                                                                  config.seed, rows)
    # The hold-out's rows: submit scores its OOF without them too, as they chose the ensemble.
    summary = {"source": digits.source, "train_path": digits.train_path,
               "labelled_images": len(digits.y_train), "test_images": len(digits.x_test),
               "labelled_fingerprint": data_fingerprint(digits.x_train, digits.y_train),
               "searched_images": len(y),
               "train_images": len(y_train), "val_images": len(y_val),
               HOLDOUT_ROWS: sorted(val_rows.tolist())}
    return (x_train, y_train), (x_val, y_val), summary


def parse_args(argv: Sequence[str] | None) -> Config:
    """The command line of python -m src.tune, as a validated Config."""
    parser = build_parser("python -m src.tune", "Search the CNN's hyperparameters with "
                          "KerasTuner; run the same command again to resume.")
    search = parser.add_argument_group("search")
    add_override(search, "tuner", "search algorithm: hyperband, bayesian or random")
    add_override(search, "max_trials", "trials of bayesian and random search (Hyperband's "
                 "count follows --tune-epochs)")
    add_override(search, "tune_epochs", "epochs a trial trains (Hyperband: its last rung's; "
                 "with --trial-seconds, the most it trains: a plan sets it to the epochs past "
                 "which an ensemble member trains no more)")
    search.add_argument("--trial-seconds", dest="trial_seconds", type=seconds_or_auto,
                        metavar="S", default=None, help="bayesian and random: seconds of "
                        "training per trial, its epochs bought at its network's speed measured "
                        "on this machine; auto: the budget's plan sets them; 0: off (default: "
                        "from --profile)")
    add_override(search, "wide_space", "search more filters per block and dense units")
    add_override(search, "tune_samples", "labelled images searched on, 0 for all, else at "
                 f"least {MIN_TUNE_SAMPLES}; 20%% of them are the validation hold-out")
    add_override(search, "batch_size", "training batch size")
    add_override(search, "overwrite", "start the search over instead of resuming it")
    add_minutes(parser)
    return config_from_args(parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Run or resume the search, then write and print its results."""
    config = parse_args(argv)
    if config.download:
        download_competition_data(config.data_dir)
    started = time.perf_counter()
    role = distributed_role()
    if role is not None and config.trial_seconds and "trial_seconds" not in config.flags_given:
        raise DataError("a number of seconds on a search spread over machines (each would "
                        "plan its own)", "--trial-seconds auto", column="--trial-seconds")
    if role is not None and config.precision == "auto":  # it names the shared folder
        raise DataError("a dtype policy named on a search spread over machines (each "
                        "resolves auto for its own hardware: a CPU chief and GPU workers "
                        "would search in two folders)", "--precision auto",
                        column="--precision")
    config = dataclasses.replace(config, precision=resolve_precision(config.precision))
    print(f"dtype policy: {config.precision}", flush=True)
    if role == "worker":
        wait_for_chief(_chief_address())
    if config.planned and role is not None:
        print("--minutes: a search spread over machines keeps the profile's values (each "
              "machine would plan its own)", flush=True)
    if config.planned and role is None:
        config = search_plan.search_table_settings(config)
    search_data = load_search_data(config)
    # After the data's checks: bad data leaves nothing written, the lock's file included.
    with search_folder_held(config, role):
        return _search(config, role, started, search_data)


def _chief_address() -> str:
    return f"{os.environ.get(ENV_ORACLE_IP)}:{os.environ.get(ENV_ORACLE_PORT)}"


def _search(config: Config, role: str | None, started: float, search_data: tuple) -> int:
    """Plan (without a role), run or resume the search on search_data (load_search_data's),
    then rank, write and print its results: a worker only runs the trials its chief hands
    out."""
    train, validation, summary = search_data
    planned = config.planned and role is None
    where = _chief_address()
    record = None
    if planned:
        sizes = Sizes(summary["labelled_images"], summary["test_images"])
        config, record = search_plan.plan_search(config, train, validation, sizes,
                                                 started, planned_epochs)
    keras.utils.set_random_seed(config.seed)
    fingerprint = summary["labelled_fingerprint"]
    clock = None
    if record is not None:
        clock = search_plan.SearchClock(project_dir(config, fingerprint) / search_plan.SEARCH_CLOCK,
                                        started, config.overwrite)
    tuner = build_tuner(config, role, len(train[1]), fingerprint,
                        clock.trial_ended if clock else None)
    if role != "worker":
        _ranked_trials(tuner)  # a trial edited by hand is refused now, not after the others
    if role == "chief":
        print(f"chief: serving the search at {where} until every worker has stopped", flush=True)
    elif role == "worker":
        print(f"{tuner.tuner_id}: running trials for the chief at {where}", flush=True)
    stopped = run_trials(tuner, train, validation)
    if role == "worker":
        if stopped:
            print(f"error: {stopped}", file=sys.stderr)
            return 1
        print(f"{tuner.tuner_id}: no trials left; the chief writes the results", flush=True)
        return 0
    rows = _ranked_trials(tuner)
    if not any(row["status"] == COMPLETED for row in rows):
        older = best_hparams_path(config)
        print(f"error: {stopped or 'no trial completed; see the trial messages above'}"
              + (f"; {older} is an older search's, which python -m src.submit would use"
                 if older.is_file() else ""), file=sys.stderr)
        return 1
    if clock is not None:
        record = {**record, "spent_seconds": clock.finish()}
        earlier = " (its earlier runs included)" if clock.before else ""
        print(f"the search spent {format_duration(record['spent_seconds'])} of "
              f"{config.minutes:g} minutes{earlier}", flush=True)
    chosen = ensemble_from_search(tuner, rows, validation[1])
    write_results(config, tuner, rows, summary, chosen, record)
    print_results(config, rows, chosen)
    if stopped:  # the trials that completed are ranked and written, as a search's are
        print(f"error: {stopped}; the results above rank the trials that completed (run "
              "the command again to retry the last, or with --overwrite to start over)",
              file=sys.stderr)
        return 1
    return 0


def _ranked_trials(tuner: kt.Tuner) -> list[dict]:
    """The oracle's trials ranked, best first; DataError for a trial.json damaged by hand."""
    try:
        return rank_trials(tuner.oracle, search_space_names())
    except (ValueError, TypeError, KeyError) as error:
        raise damaged_search_state(one_line(error), tuner.project_dir) from None


def run_trials(tuner: kt.Tuner, train: tuple[np.ndarray, np.ndarray],
               validation: tuple[np.ndarray, np.ndarray]) -> str | None:
    """Run the search's trials (those a resumed search has left); what stopped it when
    KerasTuner did, for trials that failed in a row (past that, every trial that ends
    stops the search again), else None."""
    import grpc  # KerasTuner's: a worker hears the chief's stop through it

    limit = getattr(tuner.oracle, "max_consecutive_failed_trials", 3)
    try:
        tuner.search(*train, validation_data=validation, verbose=keras_verbosity())
    except FailedOnWorkers as error:  # a chief: its workers stopped on those failures
        return (f"the search stopped: {error.limit} trials in a row failed (their messages "
                "are on the machines that ran them)")
    except RuntimeError as error:  # KerasTuner's stop after 3 failed trials in a row
        if "consecutive failures" not in str(error):
            raise
        # KerasTuner's message: its own first line, then the last trial's traceback
        lines = str(error).strip().splitlines()
        return (f"the search stopped: {limit} trials in a row failed; the last with "
                f"{lines[-1] if len(lines) > 1 else 'no message'}")
    except grpc.RpcError as error:  # a worker: the chief's oracle raised that stop
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return (f"the chief stopped answering (gRPC {error.code().name}); the trials it "
                    "recorded stay in the shared folder: start it again, then this worker")
        if "consecutive failures" not in str(error.details()):
            raise
        return (f"the search stopped: {limit} trials in a row failed (their messages are "
                "above, on the machines that ran them)")
    return None


def print_results(config: Config, rows: list[dict], chosen: list[dict]) -> None:
    """The leaderboard, the ensemble chosen and where the results are."""
    print(f"\nLeaderboard ({config.tuner}, {len(rows)} trials, best first; every trial in "
          f"{trials_path(config)}):")
    print(leaderboard(rows))
    print(describe_ensemble(chosen))
    print(f"best configurations: {best_hparams_path(config)}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
