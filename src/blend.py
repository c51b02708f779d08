"""``python -m src.blend RUN RUN ...``: average finished runs into a new run folder.

Each run folder of ``python -m src.submit`` holds its ensemble's out-of-fold and test
probabilities (src.probabilities). An image's OOF probabilities come from fold models
that never saw it, so their mean over runs does too: runs on other seeds (other draws
of the folds), other networks or other machines add up as ``--repeats`` does, and the
blend's OOF accuracy stays an honest estimate. The blend is the plain mean; nothing is
fitted on the images it is scored on. It is also scored without the images any run's
search chose that run's members on, as submit scores each run.

The new run folder is like submit's: submission.csv, the report, metrics.json (its
minutes are the runs' together) and its own probability files, so that
``python -m src.runs`` lists it and ``python -m src.submit --check FILE --upload``
uploads it.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.compare import describe_pair
from src.config import Config, OneLineParser, add_data_arguments, path_flag, run_cli
from src.data import Digits, load_digits, run_data_fingerprints
from src.errors import DataError
from src.metrics import plain_mean
from src.probabilities import any_search_holdout, read_oof, read_test
from src.run_folders import distinct_folders, new_run_id, write_run
from src.run_metrics import check_same_data, read_run_metrics
from src.run_outputs import library_versions, print_summary, write_run_outputs
from src.util import command_line


def _parse_args(argv: Sequence[str] | None):
    parser = OneLineParser(prog="python -m src.blend", description=(
        "Average the OOF and test probabilities of finished runs of python -m src.submit "
        "(trained on the same data) into a new run folder with its submission and report."))
    parser.add_argument("runs", nargs="+", metavar="RUN", type=path_flag,
                        help="run folders of python -m src.submit, such as submissions/latest")
    add_data_arguments(parser, download=False)
    parser.add_argument("--submissions-dir", default="submissions", type=path_flag,
                        help="where the blend's run folder is written (default: submissions)")
    args = parser.parse_args(argv)
    folders = [Path(run) for run in args.runs]
    if len(folders) < 2:
        raise DataError("at least two run folders to blend", str(len(folders)), column="RUN")
    return args, distinct_folders(folders)


def _names(folders: list[Path]) -> list[str]:
    """Each run's name in the blend: its folder's name, made unique."""
    names: list[str] = []
    for folder in folders:
        base = name = folder.resolve().name
        number = 2
        while name in names:  # a/R b/R-2 c/R: the third is R-3, not a second R-2
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Blend the runs given into a new run folder; print its OOF accuracy."""
    args, given = _parse_args(argv)
    # Each run read from one folder: a `latest` link followed at every read could move
    # to a run published meanwhile, and blend one run's OOF with another's test set.
    folders = [folder.resolve() for folder in given]
    started = time.perf_counter()
    config = Config(source=args.source or "kaggle", data_dir=args.data_dir,
                    keras_npz=args.keras_npz, submissions_dir=args.submissions_dir)
    digits = load_digits(config)
    named = dict(zip(_names(folders), folders, strict=True))
    names = list(named)
    runs = {name: read_run_metrics(folder) for name, folder in named.items()}
    oof, flags = {}, []
    for name, folder in named.items():
        oof[name], held = read_oof(folder, digits.y_train)
        flags.append(held)
    digests = {name: _digest(probs) for name, probs in oof.items()}
    held = {name: held_runs(metrics) for name, metrics in runs.items()}
    _check_each_run_once(named, digests, held)
    search_holdout = any_search_holdout(flags)
    test = {name: read_test(folder, digits.test_ids) for name, folder in named.items()}
    # after the row checks, whose words fit a --train-samples run, of other rows
    data = run_data_fingerprints(digits)
    check_same_data({named[name]: metrics for name, metrics in runs.items()}, data)
    loaded = time.perf_counter()
    print(f"blend: {len(names)} runs of {len(digits.y_train)} training and "
          f"{len(digits.x_test)} test images, read in {loaded - started:.1f}s", flush=True)

    runs_seconds = sum(float(metrics["timings"]["total"]) for metrics in runs.values())

    def timings() -> dict[str, float]:
        own = time.perf_counter() - started
        # The ledger's minutes are what the blend cost: its runs' and its own.
        return {"load": loaded - started, "blend": own - (loaded - started),
                "runs": runs_seconds, "total": runs_seconds + own}

    write = functools.partial(
        write_run_outputs, digits=digits, model_probs=oof, model_test_probs=test,
        histories=[], run_info=_run_info(argv, digits, data, named, runs, digests, held),
        timings=timings,
        search_holdout=search_holdout)
    run_dir, metrics = write_run(Path(args.submissions_dir),
                                 new_run_id(f"blend-{digits.source}"), write)
    _compare_with_each_run(oof, search_holdout, digits.y_train)
    blended = metrics["ensemble"]
    print_summary(metrics, run_dir, f"{blended['errors']} errors, the mean of {len(names)} runs")
    return 0


def _digest(probs: np.ndarray) -> str:
    """A run's OOF probabilities in a few characters: the same run, wherever its folder."""
    return hashlib.sha1(np.ascontiguousarray(probs).tobytes()).hexdigest()[:16]


def _check_each_run_once(named: dict[str, Path], digests: dict[str, str],
                         held: dict[str, dict[str, set]]) -> None:
    """DataError when a run would count twice: given twice (a copy of its folder), beside
    a blend that holds it (held: held_runs of each), or inside two blends given. The mean
    would no longer be the plain mean of the runs, and the blend's minutes would count the
    run twice."""
    names = list(named)
    for index, name in enumerate(names):
        for other in names[index + 1:]:
            if digests[name] == digests[other]:
                raise DataError("runs that differ", f"{named[name]} and {named[other]} with "
                                "the same OOF probabilities, copies of one run", column="RUN")
            for blend, run in ((name, other), (other, name)):
                if (digests[run] in held[blend]["digests"]
                        or named[run].resolve() in held[blend]["folders"]):
                    raise DataError("runs that are not already in a blend given",
                                    f"{named[run]}, which the blend {named[blend]} holds",
                                    column="RUN")
            if held[name]["digests"] & held[other]["digests"]:
                raise DataError("blends that hold no run in common",
                                f"{named[name]} and {named[other]}, which do", column="RUN")


def held_runs(metrics: dict) -> dict[str, set]:
    """What a blend's metrics.json says it holds, blends within it too: the digests of
    their OOF probabilities, and their folders where recorded whole (since the digests;
    older blends recorded a folder as typed, such as a `latest` link that has moved)."""
    entries = [run for run in metrics["run_info"].get("runs", {}).values()
               if isinstance(run, dict) and isinstance(run.get("oof_sha1"), str)]
    digests = {run["oof_sha1"] for run in entries}
    for run in entries:
        holds = run.get("holds")
        if isinstance(holds, list):  # a damaged one (text, a number) adds nothing
            digests.update(digest for digest in holds if isinstance(digest, str))
    folders = {Path(run["folder"]) for run in entries
               if isinstance(run.get("folder"), str) and Path(run["folder"]).is_absolute()}
    return {"digests": digests, "folders": folders}


def _run_info(argv: Sequence[str] | None, digits: Digits, data: dict[str, str],
              named: dict[str, Path],
              runs: dict[str, dict], digests: dict[str, str],
              held: dict[str, dict[str, set]]) -> dict:
    """What metrics.json records of the blend: its command, data and runs (each by its
    folder and its OOF probabilities' digest, so a later blend knows them)."""
    return {
        "command": command_line("src.blend", argv), "profile": "blend",
        "source": digits.source, "train_file": digits.train_path,
        "test_file": digits.test_path, "data": data,
        "runs": {name: {"folder": str(folder.resolve()),
                        "command": runs[name]["run_info"]["command"],
                        "OOF accuracy": float(runs[name]["ensemble"]["accuracy"]),
                        "minutes": round(float(runs[name]["timings"]["total"]) / 60, 2),
                        "oof_sha1": digests[name],
                        "holds": sorted(held[name]["digests"])}
                 for name, folder in named.items()},
        "versions": library_versions()}


def _compare_with_each_run(oof: dict[str, np.ndarray], search_holdout: np.ndarray | None,
                           labels: np.ndarray) -> None:
    """Print the blend's paired test against every run, not only the best (choosing the
    run to compare with on the same images would make the blend look worse than it is),
    as src.compare does: without the images any run's search chose members on too."""
    blend_right = plain_mean(oof).argmax(axis=1) == labels
    for name, probs in oof.items():
        print(f"the blend (run A) against {name} (run B):")
        print("\n".join(describe_pair(blend_right, probs.argmax(axis=1) == labels,
                                       search_holdout)))


if __name__ == "__main__":
    sys.exit(run_cli(main))
