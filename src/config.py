"""One config object, three profiles, and the command line shared by every stage.

A profile sets epochs, trials, folds and data size together; every value it
sets can be overridden by its own flag (``--epochs 20`` beats the profile).
``quick`` and ``full`` are also budgets (``--minutes``): with one, src.plan
chooses the folds, repeats, epochs and members that fit, around the flags given.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from src import ctrl_c_as_usual
from src.errors import DataError, RunFailed, ctrl_c_inside
from src.processes import follow_parent
from src.util import NOT_ONE_LINE, is_one_line_path, printable

SOURCES = ("kaggle", "keras")
TUNERS = ("hyperband", "bayesian", "random")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


# The largest value an integer flag takes: seeds plus fold or trial numbers stay within
# NumPy's 2**32 - 1, and counts within what TensorFlow's int32 shapes and steps hold.
MAX_INTEGER = 2**31 - 1
MIN_TUNE_SAMPLES = 100  # the search's 20% hold-out needs images of every digit
MAX_MINUTES = 525_600  # a year: a budget's seconds stay finite and printable


@dataclass(frozen=True)
class Config:
    """Everything a run needs to know; built from a profile plus flag overrides."""

    profile: str = "quick"
    source: str = "kaggle"
    data_dir: str | None = None
    keras_npz: str | None = None
    download: bool = False
    seed: int = 42
    precision: str = "auto"
    artifacts_dir: str = "artifacts"
    submissions_dir: str = "submissions"
    # search (python -m src.tune)
    tuner: str = "hyperband"
    max_trials: int = 8
    tune_epochs: int = 6
    tune_samples: int = 12_000
    # Bayesian and random search: each trial's training seconds, its epochs bought at its
    # network's measured speed (src.tune); 0: every trial trains tune_epochs.
    trial_seconds: float = 0.0
    wide_space: bool = False  # more filters and dense units to search (src.model)
    overwrite: bool = False
    # ensemble (python -m src.submit)
    top_k: int = 2
    include_default: bool = False
    folds: int = 3
    # The folds drawn this many times on new shuffles: each image scored by `repeats` models.
    repeats: int = 1
    epochs: int = 20
    batch_size: int = 64
    train_samples: int = 0
    tta: bool = False
    # Pseudo-labelling: 0 is off; else the confidence a test image needs to join round two.
    pseudo_threshold: float = 0.0
    pseudo_epochs: int = 10
    fresh: bool = False
    jobs: int = 0
    # The budget of tune and submit together, in minutes (src.plan); 0: no plan, the
    # profile's fixed values.
    minutes: float = 0.0
    # The Config fields set by a flag rather than by the profile: a plan works around them.
    flags_given: frozenset[str] = frozenset()

    @property
    def planned(self) -> bool:
        """Whether this run plans to a budget: a profile's minutes, or --minutes given
        (a given 0 or less is planned too, to fail with the shortest workable budget)."""
        return self.minutes > 0 or "minutes" in self.flags_given

    def validate(self) -> Config:
        """Raise DataError naming the flag of the first out-of-range value."""
        _check_choice("--source", self.source, SOURCES)
        _check_choice("--tuner", self.tuner, TUNERS)
        _check_choice("--profile", self.profile, tuple(PROFILES))
        _check_choice("--precision", self.precision, PRECISIONS)
        if self.download and self.source != "kaggle":
            raise DataError("--source kaggle with --download", f"--source {self.source}",
                            column="--download")
        for name in ("max_trials", "tune_epochs", "top_k", "repeats", "epochs", "batch_size",
                     "pseudo_epochs"):
            check_integer(flag_name(name), getattr(self, name), 1, MOST[name])
        for name in ("train_samples", "seed"):
            check_integer(flag_name(name), getattr(self, name), 0)
        if self.tune_samples != 0 and not MIN_TUNE_SAMPLES <= self.tune_samples <= MAX_INTEGER:
            raise DataError(f"0 (every image) or an integer {MIN_TUNE_SAMPLES}..{MAX_INTEGER}",
                            str(self.tune_samples), column=flag_name("tune_samples"))
        # one worker process a fold model: more than a round holds never start
        check_integer(flag_name("jobs"), self.jobs, 0, MOST["jobs"])
        check_integer(flag_name("folds"), self.folds, 2)
        if not (0 <= self.trial_seconds <= MAX_MINUTES * 60):
            raise DataError(f"a number of seconds 0..{MAX_MINUTES * 60} (0: off)",
                            str(self.trial_seconds), column="--trial-seconds")
        if "pseudo_epochs" in self.flags_given and not (self.pseudo_threshold or self.planned):
            raise DataError("--pseudo-threshold P with --pseudo-epochs (no pseudo-labelled "
                            "round without one)", "--pseudo-epochs alone",
                            column="--pseudo-epochs")
        if self.trial_seconds and self.tuner == "hyperband":
            raise DataError("--tuner bayesian or random (Hyperband's rungs count epochs)",
                            "--tuner hyperband", column="--trial-seconds")
        # Below 0 a plan calls the budget too short once it has timed the networks; below
        # -MAX_MINUTES its seconds overflowed to -inf first.
        if not (math.isfinite(self.minutes) and -MAX_MINUTES <= self.minutes <= MAX_MINUTES):
            raise DataError(f"a number of minutes up to {MAX_MINUTES} (a year)",
                            str(self.minutes), column="--minutes")
        if not 0 <= self.pseudo_threshold < 1:
            raise DataError("a confidence 0 <= p < 1 (0: off)", str(self.pseudo_threshold),
                            column="--pseudo-threshold")
        return self


AUTO = "auto"  # --trial-seconds auto: the plan sets the time per trial
# What a planned time per trial holds until the plan sets it: any time > 0 makes the
# search time-based (src.search_plan); no trial trains with it.
PLACEHOLDER_TRIAL_SECONDS = 1.0
# The most a count may be: far past any use, and short of what would exhaust memory or
# hang before the first line (a list of 2**31 trials' epochs; a calibration batch of 2**31
# images, 1.7 TB).
MOST = {"max_trials": 10_000, "tune_epochs": 10_000, "top_k": 100, "repeats": 100,
        "epochs": 10_000, "batch_size": 65_536, "pseudo_epochs": 10_000, "jobs": 256}


def flag_name(name: str) -> str:
    """The command-line flag of a Config field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _check_choice(flag: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise DataError(f"one of {', '.join(choices)}", repr(value), column=flag)


def path_flag(text: str) -> str:
    """argparse type of a flag naming a file or folder: an empty one is refused, where
    Path("") would quietly mean the current folder (or, for --check, no check at all), and
    one that is no text on one line, which the reports and lines that name it could not
    be written with."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, found {text!r}")
    if not is_one_line_path(text):
        raise argparse.ArgumentTypeError(
            f"expected a path in text on one line, found '{printable(text)}' ({NOT_ONE_LINE})")
    return text


def check_integer(flag: str, value: int, minimum: int, maximum: int = MAX_INTEGER) -> None:
    """DataError naming the flag unless minimum <= value <= maximum."""
    if not minimum <= value <= maximum:
        raise DataError(f"an integer {minimum}..{maximum}", str(value), column=flag)


# Figures behind the quick and full choices are in the README's benchmark section.
PROFILES: dict[str, dict[str, object]] = {
    # Seconds on the scikit-learn fixture: exercises every code path, scores nothing.
    "smoke": dict(
        max_trials=2, tune_epochs=2, tune_samples=600,
        top_k=1, folds=2, epochs=2, batch_size=64, train_samples=0,
        jobs=1,  # models this small train faster than a worker process starts
        minutes=0,  # no plan: the fixed values above, so tests stay seconds
    ),
    # Half an hour, tune and submit together: src.plan fits epochs, folds and members
    # to it on the machine at hand (the values below are its recipe without a budget).
    # Its search trains every trial the same epochs (the plan fits them to the search's
    # share, up to its row's cap): equal-epoch trials ranked networks as full training
    # does (Spearman 0.71-1.00 over two seeds), equal-time ones did not (0.43-0.49;
    # README, search fidelity). The default CNN is its first trial and joins only on its score.
    "quick": dict(
        tuner="bayesian", max_trials=8, tune_epochs=8, tune_samples=12_000,
        top_k=1, folds=3, epochs=20, batch_size=64, train_samples=0, tta=True, minutes=30,
    ),
    # Two hours, tune and submit together: the best score the package can make, searching
    # the wide space (more filters and dense units) for a GPU; the plan sets folds, repeats,
    # epochs and networks (the values below are its recipe without a budget). Its trials
    # are of equal epochs too: equal-time ones ranked cheap networks first that full
    # training does not (three full runs on a 2-core CPU, README, the full profile).
    "full": dict(
        tuner="bayesian", max_trials=24, tune_epochs=30,
        tune_samples=12_000, wide_space=True,
        top_k=2, folds=3, repeats=3, epochs=40, batch_size=64, train_samples=0, tta=True,
        minutes=120,
    ),
}

DATA_DIR_ENV = "DIGITS_DATA_DIR"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``error:`` line and exit code 2."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse API
        self.exit(2, f"error: {printable(message)} (see {self.prog} --help)\n")


def build_parser(prog: str, description: str, download: bool = True,
                 submissions: bool = True) -> argparse.ArgumentParser:
    """The parser every stage shares: data source, data dir, profile, seed, outputs, overrides.

    download: offer --download, for the commands that fetch the data (tune, submit).
    submissions: offer --submissions-dir, for the commands that write or read run folders
    (and tune, which shares submit's command line); fidelity writes none.
    """
    parser = OneLineParser(prog=prog, description=description)
    add_data_arguments(parser, download)
    run = parser.add_argument_group("run")
    run.add_argument("--profile", choices=tuple(PROFILES), default="quick",
                     help="smoke: seconds, for tests; quick: a laptop CPU; full: a GPU box "
                     "(default: quick)")
    run.add_argument("--seed", type=int, help="random seed for splits, search and training")
    run.add_argument("--precision", choices=PRECISIONS, help="Keras dtype policy; auto: "
                     "mixed_bfloat16 on a CPU with bfloat16 instructions (1.4x faster, same "
                     "accuracy, README), float32 elsewhere (default: auto)")
    run.add_argument("--artifacts-dir", type=path_flag,
                     help="where the search and the trained fold models live (default: artifacts)")
    if submissions:
        run.add_argument("--submissions-dir", type=path_flag,
                         help="where run folders are written (default: submissions)")
    return parser


def add_data_arguments(parser: argparse.ArgumentParser, download: bool = True) -> None:
    """Add the data group: --source, --data-dir, --keras-npz and, with download, --download."""
    data = parser.add_argument_group("data")
    # No defaults here for values Config holds: a flag left out is not a flag given.
    data.add_argument("--source", choices=SOURCES,
                      help="kaggle: train.csv/test.csv; keras: MNIST 60k/10k via keras.datasets")
    data.add_argument("--data-dir", type=path_flag,
                      help=f"folder with train.csv and test.csv (.csv or .csv.gz); "
                      f"default: ${DATA_DIR_ENV}, ./data/digit-recognizer, "
                      "/kaggle/input/digit-recognizer")
    data.add_argument("--keras-npz", type=path_flag,
                      help="a local mnist.npz to use instead of the Keras download")
    if not download:
        return
    data.add_argument("--download", action="store_true", default=None,
                      help="fetch the competition files through the Kaggle API into --data-dir "
                      "(default: ./data/digit-recognizer) unless they are there already")


def add_override(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """Add ``--name`` overriding the profile's value of Config field ``name``."""
    field = {f.name: f for f in dataclasses.fields(Config)}[name]
    kind = {"int": int, "float": float, "bool": bool, "str": str}[str(field.type)]
    if kind is bool:
        parser.add_argument(flag_name(name), dest=name, action=argparse.BooleanOptionalAction,
                            default=None, help=help)
    else:
        parser.add_argument(flag_name(name), dest=name, type=kind, default=None,
                            metavar={int: "N", float: "X"}.get(kind),
                            help=help + " (default: from --profile)")


def add_minutes(parser: argparse.ArgumentParser) -> None:
    """Add ``--minutes N``: the budget of tune and submit together (src.plan)."""
    parser.add_argument("--minutes", metavar="N", default=None,
                        help="plan the run to end within N minutes on this machine, tune and "
                        "submit together (default: from --profile: quick 30, full 120, smoke "
                        "no plan)")


def parse_minutes(text: str) -> float:
    """The --minutes value as a number; a DataError naming the flag when it is none."""
    try:
        minutes = float(text)
    except ValueError:
        minutes = math.nan
    if not math.isfinite(minutes):
        raise DataError("a number of minutes, such as 30", repr(text), column="--minutes")
    return minutes


def config_from_args(args: argparse.Namespace) -> Config:
    """Profile values, overridden by every flag the user gave; validated."""
    values: dict[str, object] = dict(PROFILES[args.profile])
    given = set()
    for field in dataclasses.fields(Config):
        value = getattr(args, field.name, None)
        if value is not None and field.name != "profile":
            values[field.name] = value
            given.add(field.name)
    if "minutes" in given:
        values["minutes"] = parse_minutes(str(values["minutes"]))
    planned_trial_seconds = values.get("trial_seconds") == AUTO
    if planned_trial_seconds:  # as a profile's time per trial: not given, so the plan sets it
        given.discard("trial_seconds")
        values["trial_seconds"] = PLACEHOLDER_TRIAL_SECONDS
    values["profile"] = args.profile
    values["flags_given"] = frozenset(given)
    config = Config(**values)
    if planned_trial_seconds and not config.planned:  # before the tuner's check: the cause
        raise DataError(f"a budget to plan the time per trial (--minutes N, or the quick or "
                        f"full profile) with --trial-seconds {AUTO}",
                        f"--profile {config.profile} without --minutes", column="--trial-seconds")
    return config.validate()


def seconds_or_auto(text: str) -> float | str:
    """argparse type of --trial-seconds: a number of seconds, or AUTO for the plan's."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds or {AUTO}, found "
                                         f"{text!r}") from None


def run_cli(main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> int:
    """Run a stage's main; bad input becomes one ``error:`` line on stderr and exit code 2,
    a run that failed otherwise (errors.RunFailed) one line and exit code 1, and a
    warning one ``warning:`` line."""
    warnings.formatwarning = (lambda message, *args, **kwargs:
                              f"warning: {printable(str(message))}\n")
    ctrl_c_as_usual()  # the command's own: what it says depends on what it has done
    follow_parent()
    try:
        return int(main(argv) or 0)
    except DataError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        return _interrupted(interrupt, argv)
    except SystemError as error:
        if (interrupt := ctrl_c_inside(error)) is None:
            raise
        return _interrupted(interrupt, argv)


def _interrupted(interrupt: KeyboardInterrupt, argv: Sequence[str] | None) -> int:
    """Print the one line for Ctrl-C, saying how to resume; exit code 130."""
    if interrupt.args:  # a stage that knows better than a rerun, e.g. after an upload
        print(f"interrupted: {printable(str(interrupt.args[0]))}", file=sys.stderr)
        return 130
    given = sys.argv[1:] if argv is None else list(argv)
    starting_over = [flag for flag in ("--overwrite", "--fresh") if flag in given]
    flags = " and ".join(starting_over)
    # Without them it resumes what was saved: what this run made, or, when it was
    # stopped before it cleared anything, the state it was to clear.
    again = (f"the command again without {flags} to resume, or with it to start over"
             if starting_over else "the same command again to resume")
    print(f"interrupted: run {again}", file=sys.stderr)
    return 130
