"""``python -m src.fidelity``: does the search rank networks as full training does?

It reads the configurations a search scored (``<artifacts>/tune/trials.csv``),
picks some spread over the search's ranking (the default CNN, the search's top
three, then evenly down to its last), trains each one as an ensemble member is
trained (stratified folds, every epoch of ``--epochs``, one network per fold)
and sets each one's out-of-fold accuracy beside its search score (the trial's hold-out
log-loss): a table, the
Spearman rank correlation between the two (scipy) and a scatter figure, written
under ``<artifacts>/fidelity/`` and never over an earlier run's. It trains for
real, about as long as that many members of a submit run: kept out of CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from src import ensemble
from src.bench_runs import write_new_files
from src.calibrate import resolve_jobs
from src.config import (
    Config,
    add_override,
    build_parser,
    check_integer,
    config_from_args,
    run_cli,
)
from src.data import load_fold_digits
from src.errors import DataError
from src.figures import fidelity_png
from src.members import Member
from src.model import DEFAULT_HPARAMS, resolve_precision
from src.search_results import (
    OBJECTIVE,
    hparams_outside_space,
    network_values,
    read_trials,
    search_space_names,
    trials_path,
)
from src.util import check_writable_folder, shown

TOP_PICKS = 3  # the search's best configurations always measured
MIN_CONFIGS = 3  # a rank correlation needs at least this many points
MOST_TRIAL_ID_DIGITS = 10  # KerasTuner writes a few; a longer one makes too long a file name
SCORE = OBJECTIVE  # the trial's hold-out log-loss: lower is better


def read_ranked_configs(path: Path, names: Sequence[str]) -> pd.DataFrame:
    """The completed trials of a search's trials.csv, one row per distinct network (its
    best trial), best first as src.tune ranks them; every completed trial's score and
    network checked first, so that a hand-edited cell stops the run before anything
    trains."""
    trials = read_trials(path, as_text=True)
    missing = [column for column in ("trial_id", "rank", "status", SCORE, *names)
               if column not in trials]
    if missing:
        old_search = ("a search scored by accuracy, before the log-loss objective: rerun "
                      "python -m src.tune" if missing[0] == SCORE else None)
        raise DataError("a trials.csv written by python -m src.tune",
                        f"no column {missing[0]!r}", file=path, hint=old_search)
    done = trials[trials["status"] == "COMPLETED"].copy()
    done[SCORE] = pd.to_numeric(done[SCORE], errors="coerce")
    # The trial's rank as src.tune's leaderboard and member names give it: Hyperband trains
    # one configuration in several trials, so it is not the place among configurations.
    done["rank"] = pd.to_numeric(done["rank"], errors="coerce")
    for name in names:  # dtype object: Series.map would make 32 and 48.5 both floats
        done[name] = pd.Series([_setting(text) for text in done[name]], index=done.index,
                               dtype=object)
    for index, row in done.iterrows():  # every line a row: data row `index` is its line - 2
        outside = hparams_outside_space({name: row[name] for name in names})
        if outside:
            name, expected, found = outside
            raise DataError(expected, found, file=path, line=index + 2, column=name)
        # it names a fold-model folder: KerasTuner's ids are a few digits
        trial_id = row["trial_id"]
        if not (trial_id.isascii() and trial_id.isdigit()
                and len(trial_id) <= MOST_TRIAL_ID_DIGITS):
            raise DataError(f"a trial id of 1 to {MOST_TRIAL_ID_DIGITS} digits",
                            shown(trial_id), file=path, line=index + 2,
                            column="trial_id")
        if not (np.isfinite(row[SCORE]) and row[SCORE] >= 0):
            raise DataError("a log-loss >= 0", repr(trials.at[index, SCORE]), file=path,
                            line=index + 2, column=SCORE)
        if not (np.isfinite(row["rank"]) and 1 <= row["rank"] <= len(trials)
                and row["rank"] % 1 == 0):  # one rank a trial at most
            raise DataError(f"a rank, an integer 1..{len(trials)} (the trials listed)",
                            repr(trials.at[index, "rank"]), file=path, line=index + 2,
                            column="rank")
    # rank: src.tune's order, by score (Hyperband: its last rung's trials first)
    done = done.sort_values(["rank", SCORE], kind="stable")
    networks = [json.dumps(network_values(dict(row)), sort_keys=True, default=str)
                for _, row in done[list(names)].iterrows()]  # one network, one config
    return done[~pd.Series(networks, index=done.index).duplicated()].reset_index(drop=True)


def _setting(text: str) -> object:
    """A trials.csv cell as the search space holds it: True or False, an int where it is
    written as one, a float, or else the text itself (which the space then refuses)."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def pick_spread(ranked: pd.DataFrame, count: int, default: dict,
                source: str | Path | None = None) -> pd.DataFrame:
    """count configurations of ranked (best first, read from source, the search's
    trials.csv): the default CNN when it is there, the top TOP_PICKS, and the rest evenly
    spaced down to the last; in search order."""
    if len(ranked) < MIN_CONFIGS:  # the search's doing, not --configs'
        raise DataError(f"at least {MIN_CONFIGS} distinct completed configurations in the "
                        "search", str(len(ranked)), file=source,
                        hint="search more trials (--max-trials)")
    is_default = np.logical_and.reduce(
        [ranked[name] == value for name, value in default.items() if name in ranked])
    chosen = {*np.flatnonzero(is_default)[:1], *range(TOP_PICKS)}
    rest = [index for index in range(len(ranked)) if index not in chosen]
    wanted = max(min(count, len(ranked)) - len(chosen), 0)
    # From the last up, so that a single pick left is the last, not the next in rank.
    chosen |= {rest[i] for i in np.linspace(len(rest) - 1, 0, wanted).round().astype(int)}
    return ranked.loc[sorted(chosen)]


def rank_agreement(search_losses: Sequence[float], oof_scores: Sequence[float]
                   ) -> float | None:
    """Spearman's rank correlation between the search's ranking (lowest hold-out log-loss
    first) and full training's (highest OOF accuracy first): 1 when they agree; None when
    every configuration scored the same out of fold, which ranks nothing."""
    if len(set(oof_scores)) == 1:
        return None
    return float(stats.spearmanr(-np.asarray(search_losses), oof_scores).statistic)


def describe_agreement(rho: float | None) -> str:
    """'Spearman 0.77', or why there is none."""
    return "Spearman undefined (every OOF accuracy equal)" if rho is None else f"Spearman {rho:.2f}"


def check_search_ranks(picks: pd.DataFrame, trials_path: Path) -> None:
    """DataError, before anything trains, when the picked configurations' search scores are
    all equal: the search ranked nothing, and Spearman's rho would be undefined."""
    if picks[SCORE].nunique() == 1:
        raise DataError("search scores that differ, to rank the configurations by",
                        f"{picks[SCORE].iloc[0]:g} for all {len(picks)} picked",
                        file=trials_path, column=SCORE)


def measure(config: Config, picks: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Train every picked configuration as a member (config's folds and epochs) and return
    the picks with their out-of-fold accuracy and minutes."""
    config = dataclasses.replace(config, precision=resolve_precision(config.precision),
                                 jobs=resolve_jobs(config.jobs))
    digits = load_fold_digits(config)
    rows = []
    for _, pick in picks.iterrows():
        hparams = {**DEFAULT_HPARAMS, **{name: pick[name] for name in names}}
        member = Member(f"trial{pick['trial_id']}", hparams, "fidelity", "fidelity")
        tick = time.perf_counter()
        result = ensemble.run_kfold(digits, [member], config)
        oof = result.oof_probs[member.name].argmax(axis=1)
        rows.append({"oof_accuracy": float(np.mean(oof == digits.y_train)),
                     "minutes": (time.perf_counter() - tick) / 60})
        print(f"{member.name}: search log-loss {pick[SCORE]:.4f}, out of fold "
              f"{rows[-1]['oof_accuracy']:.4%}", flush=True)
    return picks.assign(**pd.DataFrame(rows, index=picks.index))


def render(table: pd.DataFrame, rho: float | None, config: Config) -> str:
    """The Markdown report: the settings, Spearman's rho and one row per configuration."""
    lines = [f"# Search fidelity: {len(table)} configurations, {describe_agreement(rho)}", "",
             f"Each trained as a member: {config.folds} stratified folds x {config.epochs} "
             f"epochs, seed {config.seed}, TTA {'on' if config.tta else 'off'}.", "",
             "| search rank | trial | search hold-out log-loss | out-of-fold accuracy | minutes |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['rank']:.0f} | {row['trial_id']} | {row[SCORE]:.4f} | "
              f"{row['oof_accuracy']:.3%} | {row['minutes']:.1f} |"
              for _, row in table.iterrows()]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    """The command line of python -m src.fidelity."""
    parser = build_parser("python -m src.fidelity", "Train configurations the search scored, "
                          "in full, and compare their out-of-fold accuracy with the search's "
                          "ranking (Spearman).", download=False, submissions=False)
    group = parser.add_argument_group("fidelity")
    group.add_argument("--configs", type=int, default=6, metavar="N",
                       help="configurations to train: the default CNN and the search's top "
                       f"{TOP_PICKS}, the rest spread down its ranking (at least "
                       f"{TOP_PICKS + 1}; default: 6)")
    for name, text in (("folds", "stratified folds per configuration"),
                       ("epochs", "epochs per fold model"), ("tta", "test-time augmentation"),
                       ("jobs", "fold models trained at once"),
                       ("train_samples", "labelled images to train on, 0 for all")):
        add_override(group, name, text)
    args = parser.parse_args(argv)
    # The default CNN and the top TOP_PICKS are always trained: fewer configs than that
    # plus one would train more than asked, with none spread down the ranking.
    check_integer("--configs", args.configs, TOP_PICKS + 1)
    config = config_from_args(args)
    # No plan and one draw of the folds: each configuration is scored as one member is.
    return args, dataclasses.replace(config, minutes=0, repeats=1)


def main(argv: Sequence[str] | None = None) -> int:
    """Pick, train, compare and write the fidelity table, JSON and figure."""
    args, config = parse_args(argv)
    folder = Path(config.artifacts_dir) / "fidelity"
    check_writable_folder(folder)  # before hours of training, not after
    names = search_space_names()
    trials_csv = trials_path(config)
    picks = pick_spread(read_ranked_configs(trials_csv, names), args.configs, DEFAULT_HPARAMS,
                        trials_csv)
    check_search_ranks(picks, trials_csv)
    print(f"training {len(picks)} configurations of {trials_csv}: search ranks "
          f"{', '.join(f'{rank:.0f}' for rank in picks['rank'])}", flush=True)
    table = measure(config, picks, names)
    rho = rank_agreement(table[SCORE], table["oof_accuracy"])
    text = render(table, rho, config)
    ranks = table["rank"].astype(int)  # the search's ranks (picks are spread over them)
    print(text, flush=True)
    stem = "fidelity-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    record = {"spearman": rho, "folds": config.folds, "epochs": config.epochs,
              "seed": config.seed, "trials": str(trials_csv),
              "rows": json.loads(table.assign(search_rank=ranks).drop(columns="rank")
                                 .to_json(orient="records"))}
    png = fidelity_png(table[SCORE], table["oof_accuracy"], ranks, describe_agreement(rho))
    written = write_new_files(folder, stem, {".md": text, ".json": json.dumps(record, indent=2),
                                             ".png": png})
    print(f"wrote {', '.join(map(str, written))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
