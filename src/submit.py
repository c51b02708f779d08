"""``python -m src.submit``: k-fold ensemble, the submission CSV and its evaluation report.

A run writes ``submissions/<run-id>/`` (submission.csv, report, metrics.json, and the
ensemble's OOF and test probabilities for src.blend) into a hidden partial folder
first and renames it when complete, so a run folder is either whole or absent, and
an earlier run is never overwritten.
``submissions/latest`` points at the newest finished run.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src import kaggle_api
from src.config import (
    MAX_MINUTES,
    Config,
    add_minutes,
    add_override,
    build_parser,
    config_from_args,
    flag_name,
    path_flag,
    run_cli,
)
from src.csv_files import read_digits_csv
from src.csv_text import read_csv_as_text
from src.data import (
    data_fingerprint,
    find_csv,
    find_data_dir,
    load_fold_digits,
)
from src.download import download_competition_data
from src.errors import DataError
from src.members import check_pseudo_threshold, load_members
from src.pseudo_labels import PSEUDO_SUFFIX
from src.run_folders import check_submissions_dir, new_run_id, write_run
from src.run_outputs import (
    SUBMISSION_COLUMNS,
    print_summary,
    submit_run_info,
    validate_submission,
    write_run_outputs,
)
from src.util import check_writable_folder, format_duration, is_file, not_a_file


def check_submission_file(path: Path, test_path: Path) -> int:
    """Validate a submission CSV against the test set; return its number of rows."""
    if not is_file(path):
        raise DataError("a submission CSV", not_a_file(path), file=path)
    frame = read_csv_as_text(path, SUBMISSION_COLUMNS)
    num_test_images = len(read_digits_csv(test_path, with_labels=False)[0])
    validate_submission(frame, num_test_images, file=str(path))
    return num_test_images


def _parse_args(argv: Sequence[str] | None):
    parser = build_parser("python -m src.submit", "Train the k-fold ensemble; write the "
                          "submission CSV and its evaluation report into a new run folder.")
    ensemble = parser.add_argument_group("ensemble (defaults from --profile)")
    add_override(ensemble, "top_k", "how many of the networks the search chose to ensemble "
                 "(its best_hparams.json's ensemble; from an older search, its top ranks)")
    add_override(ensemble, "include_default", "also ensemble the default CNN when the "
                 "search's choice does not hold it")
    add_override(ensemble, "folds", "stratified folds per configuration")
    add_override(ensemble, "repeats", "draw the folds this many times on new shuffles; each "
                 "image's OOF is then the mean of that many models that never saw it")
    add_override(ensemble, "epochs", "epochs per fold model (each trains every one)")
    add_override(ensemble, "batch_size", "training batch size")
    add_override(ensemble, "train_samples", "train on a stratified subset of this size (0: all)")
    add_override(ensemble, "tta", "test-time augmentation: average over 1-pixel shifts")
    add_override(ensemble, "pseudo_threshold", "pseudo-labelling: train every member a second "
                 "time with the test images its first round is this sure of (0: off; at "
                 "most 1 - 0.9 x label smoothing: 0.82 with the default 0.2)")
    add_override(ensemble, "pseudo_epochs", "epochs per fold model of the pseudo-labelled round")
    add_override(ensemble, "fresh", "retrain every fold instead of reusing saved fold models")
    add_override(ensemble, "jobs", "fold models trained at once, each in its own worker "
                 "process; 0: 2 on a CPU-only machine of two or more cores, else 1")
    add_minutes(parser)
    parser.add_argument("--plan-only", action="store_true",
                        help="with a budget: time the networks (or take the plan an earlier "
                        "run saved for the same settings), print the plan and stop (nothing "
                        "trained, nothing saved)")
    kaggle = parser.add_argument_group("kaggle")
    kaggle.add_argument("--check", metavar="FILE", type=path_flag,
                        help="only validate FILE against test.csv")
    kaggle.add_argument("--upload", action="store_true",
                        help="upload the CSV (this run's, or --check FILE) to Kaggle")
    kaggle.add_argument("-m", "--message", default=None, help="the Kaggle submission message "
                        "(default: profile, configs, folds, OOF accuracy and run id)")
    kaggle.add_argument("--no-wait", action="store_true",
                        help="after --upload, do not wait for Kaggle's public score")
    kaggle.add_argument("--wait-minutes", type=float, default=None,
                        metavar="N", help="after --upload, wait at most N minutes for the "
                        f"public score (default: {kaggle_api.WAIT_MINUTES:g})")
    args = parser.parse_args(argv)
    # Each would be dropped without a word.
    for given, flag in ((args.message is not None, "--message"), (args.no_wait, "--no-wait"),
                        (args.wait_minutes is not None, "--wait-minutes")):
        if given and not args.upload:
            raise DataError(f"--upload with {flag}", f"{flag} without --upload", column=flag)
    if args.no_wait and args.wait_minutes is not None:
        raise DataError("--wait-minutes without --no-wait", "both", column="--wait-minutes")
    if args.wait_minutes is None:
        args.wait_minutes = kaggle_api.WAIT_MINUTES
    if args.message is not None and not args.message.strip():
        raise DataError("a submission message", "an empty one", column="--message",
                        hint="leave -m out for the default")
    if args.message is not None:
        try:  # a Latin-1 shell's bytes reach Python as lone surrogates
            args.message.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError("a submission message in UTF-8 text", "bytes that are not UTF-8",
                            column="--message") from None
    if not 0 <= args.wait_minutes <= MAX_MINUTES:  # NaN fails both
        raise DataError(f"a number of minutes 0..{MAX_MINUTES}", f"{args.wait_minutes:g}",
                        column="--wait-minutes")
    return args, config_from_args(args)


# What --check reads of the Config, and the folders a command line shared with training
# runs names (the notebook's, which names --profile too: never among the flags given):
# any other flag would be dropped without a word.
CHECK_FLAGS = {"data_dir", "source", "download", "artifacts_dir", "submissions_dir"}


def _check_and_upload(args, config: Config) -> int:
    """--check FILE: validate the CSV, then with --upload send it (no training)."""
    if args.plan_only:  # it would be dropped without a word
        raise DataError("--check without --plan-only", "both", column="--plan-only")
    if config.source != "kaggle":  # a Kaggle submission: checked against Kaggle's test.csv
        raise DataError("--source kaggle with --check", f"--source {config.source}",
                        column="--check")
    unused = sorted(config.flags_given - CHECK_FLAGS)  # each would be dropped without a word
    if unused:
        flag = flag_name(unused[0])
        raise DataError("--check with the data and Kaggle flags only", f"{flag}, which a check "
                        "does not use (it trains nothing)", column=flag)
    # test.csv alone: its row count is all a submission is checked against
    test_path = find_csv(find_data_dir(config.data_dir, stem="test"), "test")
    csv_path = Path(args.check)
    rows = check_submission_file(csv_path, test_path)
    print(f"{args.check}: valid submission, {rows} rows")
    if args.upload:
        run = _run_of(csv_path)
        default = _default_message(*run) if run else f"checked {csv_path.name}"
        _upload(csv_path, args.message or default, args, run[0] if run else None,
                recorded=bool(run and run[1].get("kaggle")))
    return 0


def _run_of(csv_path: Path) -> tuple[Path, dict] | None:
    """(run folder, its metrics) when csv_path is a run's submission.csv, None for any other
    file; DataError, before anything is sent, when that run's metrics
    or reports are damaged: the upload would be recorded in them."""
    from src.kaggle_record import read_run_files

    if csv_path.name != "submission.csv" or not (csv_path.parent / "metrics.json").exists():
        return None  # another CSV beside a run (edited by hand, say) is not the one it scored
    # The folder itself, not a link to it: `latest` may move to another run while the
    # upload waits for its score, which must still be recorded in this one.
    run_dir = csv_path.parent.resolve()
    try:
        metrics, _ = read_run_files(run_dir)
    except DataError as error:
        raise error.with_hint("the upload would be recorded in this run; to upload the CSV "
                              "alone, copy it out of the run folder") from None
    return run_dir, metrics


def _default_message(run_dir: Path, metrics: dict) -> str:
    """e.g. "quick: 1 config x 3 folds, OOF 99.567%, run 20261124-101500-quick-kaggle"; for
    a blend (src.blend), "blend of 2 runs, OOF ..."."""
    # A pseudo-labelled round's models are its network's, not another configuration.
    count = len({name.removesuffix(PSEUDO_SUFFIX) for name in metrics["models"]})
    info = metrics["run_info"]
    oof, run = metrics["ensemble"]["accuracy"], run_dir.resolve().name
    if "runs" in info:
        return f"blend of {len(info['runs'])} runs, OOF {oof:.3%}, run {run}"
    repeats = info.get("repeats", 1)
    drawn = f" x {repeats} repeats" if repeats > 1 else ""
    return (f"{info['profile']}: {count} config{'' if count == 1 else 's'} x {info['folds']} "
            f"folds{drawn}, OOF {oof:.3%}, run {run}")


def _upload(csv_path: Path, message: str, args, run_dir: Path | None,
            recorded: bool = False) -> None:
    """Upload csv_path and, unless --no-wait, wait for its public score; a run folder
    records both in its metrics.json and report (recorded: it holds an earlier upload's).
    Kaggle's scoring error is a DataError."""
    from src.kaggle_record import kaggle_line, record_kaggle

    # --sync finds a run's upload by the run id of its default message, unless the run
    # has recorded an earlier upload: then by that one's id.
    found_by_sync = run_dir is not None and not args.message and not recorded
    try:
        submission = kaggle_api.upload_submission(csv_path, message)
    except KeyboardInterrupt:  # the file may be on Kaggle already: a rerun would send it again
        raise KeyboardInterrupt(_upload_cut_short(csv_path, args.message,
                                                  found_by_sync)) from None
    print(f"kaggle: submitted {csv_path} as {message!r}", flush=True)
    # From here on, the same command again would upload the file a second time.
    went_through = "the upload went through; " + (
        kaggle_api.SYNC_LATER if run_dir is not None else "its score is on the competition's "
        "My Submissions page")
    metrics = None
    try:
        if run_dir is not None:  # recorded at once, so a failed wait still leaves it for --sync
            metrics = record_kaggle(run_dir, submission.record())
        if not args.no_wait:
            submission = kaggle_api.wait_for_score(submission, args.wait_minutes,
                                                   keep=went_through)
            if run_dir is not None:
                metrics = record_kaggle(run_dir, submission.record())
    except KeyboardInterrupt:
        raise KeyboardInterrupt(went_through) from None
    except DataError as error:
        if error.hint and went_through in error.hint:  # the wait's, which says so already
            raise
        raise error.with_hint("; ".join(filter(None, (error.hint, went_through)))) from None
    print(kaggle_line(submission.record(), metrics and metrics["ensemble"],
                      in_run=run_dir is not None), flush=True)
    if submission.status == "error":
        raise DataError("a scored submission", f"Kaggle's error {submission.error!r}",
                        file=csv_path, column="kaggle score",
                        hint="check the file with --check; it still counts against today's "
                        "submissions")


def _upload_cut_short(csv_path: Path, message: str | None, found_by_sync: bool) -> str:
    """What to do after Ctrl-C during an upload, which Kaggle may have received whole;
    message: -m's, if given; found_by_sync: the run's default message, whose run id --sync
    finds the run by."""
    found = ("`python -m src.runs --sync` records it if it did" if found_by_sync
             else "the competition's My Submissions page lists it if it did")
    again = ["python", "-m", "src.submit", "--check", str(csv_path), "--upload",
             *(["-m", message] if message else [])]
    return (f"the upload may have gone through: {found}; if not, upload it with "
            f"`{shlex.join(again)}` (each upload uses one of today's submissions)")


def main(argv: Sequence[str] | None = None) -> int:
    """Train the k-fold ensemble and write a run folder with the submission and its report."""
    args, config = _parse_args(argv)
    if config.download:
        download_competition_data(config.data_dir)
    if args.check:
        return _check_and_upload(args, config)
    _check_run_flags(args, config)
    started = time.perf_counter()
    from src.plan import planned_folds

    folds_from = ("--folds" if "folds" in config.flags_given
                  else f"the plan of {config.minutes:g} minutes" if config.planned
                  else f"--folds of the {config.profile} profile")
    digits = load_fold_digits(config, planned_folds(config), folds_from)  # before any timing
    loaded = time.perf_counter()
    print(f"data: {len(digits.y_train)} training and {len(digits.x_test)} test images "
          f"({digits.source}) in {loaded - started:.1f}s", flush=True)
    config = _resolve_machine_settings(config)
    from src.search_state import check_no_search_running

    check_no_search_running(config)
    # Read before the plan times the networks and saves itself: a damaged one stops the
    # run before anything is written or trained.
    leaderboard = _leaderboard(config)
    config, members, budget = _choose_members(digits, config, started,
                                              save_plan=not args.plan_only)
    if args.plan_only:  # the plan is printed; nothing trained, nothing saved
        return 0
    search_holdout = _search_holdout(config, digits, members)

    from src import ensemble

    prepared = time.perf_counter()  # the networks chosen and, with a budget, timed
    result = ensemble.run_kfold(digits, members, config, budget=budget)
    if budget:
        config = dataclasses.replace(config, **budget.settings_used())

    def timings() -> dict[str, float]:
        return {"load": loaded - started, "prepare": prepared - loaded,
                "train": result.train_seconds, "predict": result.predict_seconds,
                "total": time.perf_counter() - started}

    write = functools.partial(
        write_run_outputs, digits=digits, model_probs=result.oof_probs,
        model_test_probs=result.test_probs, histories=result.histories,
        run_info=submit_run_info(config, members, result, digits, argv), timings=timings,
        search_holdout=search_holdout, leaderboard=leaderboard,
        plan=budget.record() if budget else None)
    run_id = new_run_id(f"{config.profile}-{config.source}")
    run_dir, metrics = write_run(Path(config.submissions_dir), run_id, write)
    print_summary(metrics, run_dir, f"trained {result.trained}, reused {result.reused}")
    if budget:
        print(f"plan: ended in {format_duration(time.perf_counter() - started)} of "
              f"{format_duration(budget.plan.seconds)} (planned "
              f"{format_duration(budget.plan.eta())})", flush=True)
    if args.upload:
        _upload(run_dir / "submission.csv", args.message or _default_message(run_dir, metrics),
                args, run_dir)
    return 0


def _check_run_flags(args, config: Config) -> None:
    """DataError, before any data is read or anything trained, for flags that do not go
    together and for a submissions folder the run could not publish into."""
    if args.upload and config.source != "kaggle":
        raise DataError("--source kaggle with --upload", f"--source {config.source}",
                        column="--upload")
    if args.plan_only and args.upload:  # a plan trains and publishes nothing to upload
        raise DataError("--upload without --plan-only", "both", column="--upload")
    if args.plan_only and not config.planned:
        raise DataError("a budget to plan (--minutes N, or the quick or full profile)",
                        f"--profile {config.profile} without --minutes", column="--plan-only")
    if not args.plan_only:  # before any training, not after it; a plan publishes nothing
        check_writable_folder(config.submissions_dir)
        check_submissions_dir(Path(config.submissions_dir))
    if args.upload:
        kaggle_api.check_upload_credentials()


def _resolve_machine_settings(config: Config) -> Config:
    """The config with --precision and --jobs resolved for this machine, both printed."""
    from src import model
    from src.calibrate import resolve_jobs

    config = dataclasses.replace(config, precision=model.resolve_precision(config.precision),
                                 jobs=resolve_jobs(config.jobs))
    print(f"dtype policy: {config.precision}; fold models trained at once: {config.jobs}",
          flush=True)
    return config


def _choose_members(digits, config: Config, started: float, save_plan: bool):
    """(config, members, budget): with a budget, the plan's members and settings (the plan
    saved when save_plan) and its Budget; without, the search's members and None."""
    if not config.planned:
        members = load_members(config)
        check_pseudo_threshold(members, config.pseudo_threshold)
        return config, members, None
    from src.budget import candidate_members, plan_submit

    if config.pseudo_threshold:  # before the plan times (trains) the networks
        check_pseudo_threshold(candidate_members(config), config.pseudo_threshold)
    return plan_submit(digits, config, started, save=save_plan)


def _search_holdout(config: Config, digits, members) -> np.ndarray | None:
    """Which training images the search chose the members on (scored apart, too), when a
    search chose any and its hold-out rows are on file; else None. With --train-samples,
    those of the subsample."""
    if not any(member.kind == "search" for member in members):
        return None
    from src.search_results import read_holdout_rows

    rows = read_holdout_rows(config, digits.labelled_fingerprint
                             or data_fingerprint(digits.x_train, digits.y_train))
    if rows is None:
        return None
    labelled_rows = (np.arange(len(digits.y_train)) if digits.train_rows is None
                     else digits.train_rows)  # each training image's row in train.csv
    return np.isin(labelled_rows, rows)


def _leaderboard(config: Config) -> pd.DataFrame | None:
    """The search's trials.csv for the report, when there is one; DataError if unreadable."""
    from src.search_results import read_trials, trials_path

    path = trials_path(config)
    return read_trials(path) if path.is_file() else None


if __name__ == "__main__":
    sys.exit(run_cli(main))
