"""``python -m src.compare RUN_A RUN_B``: is one run's OOF accuracy ahead of the other's,
or is it a tie?

Two runs on the same labelled images err mostly on the same images, so only the images
that one of them gets right and the other wrong can tell them apart: McNemar's exact
test (scipy's binomtest on those images) gives the verdict, and the same test's exact
(Clopper-Pearson) interval of the share of them run A gets right, scaled to a difference
of accuracies, the 95% interval: it leaves out 0 exactly when the test says "ahead".
+-0.04 to +-0.05 point for the README's runs, where the difference of two runs scored apart
carries about +-0.085 (each run's own interval is about +-0.06 on 42,000 images).
Where a run's search chose its members on some of the images, they are compared again
without them. Nothing is written.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from src.config import Config, OneLineParser, add_data_arguments, path_flag, run_cli
from src.data import load_train_labels
from src.probabilities import any_search_holdout, read_oof
from src.run_folders import distinct_folders
from src.run_metrics import check_same_data, read_run_metrics

# Below this p-value one run is called ahead of the other; at or above it, a tie.
AHEAD_P_VALUE = 0.05


@dataclass(frozen=True)
class Comparison:
    """Two runs' right and wrong answers on the same images, and what they say."""

    images: int
    errors_a: int
    errors_b: int
    only_a_right: int  # images run A gets right and run B wrong
    only_b_right: int
    p_value: float  # McNemar's exact test, two-sided
    low: float  # the exact 95% interval of accuracy A - accuracy B, as a fraction
    high: float

    @property
    def difference(self) -> float:
        """Accuracy A - accuracy B, as a fraction."""
        return (self.only_a_right - self.only_b_right) / self.images

    def verdict(self) -> str:
        """Which run is ahead ("run A ahead", "run B ahead") or "a tie", at AHEAD_P_VALUE."""
        if self.p_value >= AHEAD_P_VALUE:
            return "a tie"
        return "run A ahead" if self.only_a_right > self.only_b_right else "run B ahead"


def compare(right_a: np.ndarray, right_b: np.ndarray) -> Comparison:
    """Compare two runs' per-image right answers (booleans over the same images, at least
    one). The interval's confidence is 1 - AHEAD_P_VALUE, so that it and the verdict agree."""
    confidence = 1 - AHEAD_P_VALUE
    images = len(right_a)
    if images == 0:
        raise ValueError("a comparison needs at least one image")
    only_a = int(np.sum(right_a & ~right_b))
    only_b = int(np.sum(~right_a & right_b))
    discordant = only_a + only_b
    p_value, low, high = 1.0, 0.0, 0.0  # the same answer on every image
    if discordant:
        test = binomtest(only_a, discordant)
        # A - B = discordant / images * (2 * share - 1), for the share of the discordant
        # images that A gets right. The Clopper-Pearson interval of that share excludes
        # 1/2 exactly when the two-sided test (symmetric at 1/2) has p < 1 - confidence;
        # a Wald interval beside it could say "ahead" of a tie on a few images.
        share = test.proportion_ci(confidence_level=confidence, method="exact")
        scale = discordant / images
        p_value, low, high = float(test.pvalue), scale * (2 * share.low - 1), scale * (
            2 * share.high - 1)
    return Comparison(images, int(np.sum(~right_a)), int(np.sum(~right_b)), only_a, only_b,
                      p_value, low, high)


def _format_p(p_value: float) -> str:
    """Three decimals rounded down, so that 0.0498 prints as 0.049, never as 0.050 beside
    "ahead" (the rule is p < 0.05); below 0.001, three significant digits (9.99e-04)."""
    if p_value < 0.001:
        return f"{p_value:.2e}"
    # round() first: 0.027 * 1000 is 26.999999999999996 in floating point
    return f"{math.floor(round(p_value * 1000, 6)) / 1000:.3f}"


def describe(comparison: Comparison) -> list[str]:
    """The comparison as printed lines."""
    c = comparison
    return [f"on {c.images} images: run A {100 * (1 - c.errors_a / c.images):.3f}% "
            f"({c.errors_a} errors), run B {100 * (1 - c.errors_b / c.images):.3f}% "
            f"({c.errors_b} errors)",
            f"  only run A right on {c.only_a_right}, only run B right on {c.only_b_right}",
            f"  A - B: {100 * c.difference:+.3f} point (95% CI {100 * c.low:+.3f} to "
            f"{100 * c.high:+.3f}); McNemar exact p = {_format_p(c.p_value)}: {c.verdict()}"]


def _parse_args(argv: Sequence[str] | None):
    parser = OneLineParser(prog="python -m src.compare", description=(
        "Compare the OOF accuracy of two finished runs of python -m src.submit (or "
        "src.blend) on the same labelled images: a paired test on the images one of "
        "them gets right and the other wrong."))
    parser.add_argument("runs", nargs=2, metavar="RUN", type=path_flag,
                        help="run folders of src.submit or src.blend, such as submissions/latest")
    add_data_arguments(parser, download=False)
    args = parser.parse_args(argv)
    return args, distinct_folders([Path(run) for run in args.runs])


def main(argv: Sequence[str] | None = None) -> int:
    """Print both runs' OOF accuracy, the images that tell them apart and the verdict."""
    args, given = _parse_args(argv)
    # Each run read from one folder, as blend does: a `latest` link followed at each read
    # could move to a run published meanwhile, and check one run's data against another's.
    folder_a, folder_b = (folder.resolve() for folder in given)
    y = load_train_labels(Config(source=args.source or "kaggle", data_dir=args.data_dir,
                                 keras_npz=args.keras_npz))
    (probs_a, held_a), (probs_b, held_b) = read_oof(folder_a, y), read_oof(folder_b, y)
    # a test set of its own does not matter here: only the OOF rows are paired
    check_same_data({folder: read_run_metrics(folder) for folder in (folder_a, folder_b)},
                    data_sets=("train",))
    right_a, right_b = probs_a.argmax(axis=1) == y, probs_b.argmax(axis=1) == y
    print(f"run A: {folder_a}\nrun B: {folder_b}")
    print("\n".join(describe_pair(right_a, right_b, any_search_holdout([held_a, held_b]))))
    return 0


def describe_pair(right_a: np.ndarray, right_b: np.ndarray,
                  search_holdout: np.ndarray | None) -> list[str]:
    """The printed lines of two runs compared on every image and, where a search chose a
    run's members on some of them, again without those."""
    lines = describe(compare(right_a, right_b))
    if search_holdout is not None and search_holdout.any():
        outside = ~search_holdout
        lines.append(f"without the {int(np.sum(search_holdout))} images a search chose a "
                     "run's members on:")
        lines += (describe(compare(right_a[outside], right_b[outside])) if outside.any()
                  else ["  none left to compare"])
    return lines


if __name__ == "__main__":
    sys.exit(run_cli(main))
