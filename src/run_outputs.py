"""What a run folder holds, written the same way by ``python -m src.submit`` and
``python -m src.blend``: the submission CSV (validated first), the probability files,
and the report; the summary both print and the library versions both record; the run
info submit records.

Every file is written atomically, into the hidden partial folder that src.run_folders
publishes whole.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from src.data import run_data_fingerprints
from src.errors import DataError
from src.probabilities import OOF_FILE, TEST_FILE, write_probabilities
from src.pseudo_labels import PSEUDO_SUFFIX
from src.util import MOST_SHOWN, command_line, shown, write_atomically

if TYPE_CHECKING:
    from src.config import Config
    from src.data import Digits
    from src.ensemble import KFoldResult
    from src.members import Member

SUBMISSION_COLUMNS = ["ImageId", "Label"]


def validate_submission(frame: pd.DataFrame, num_test_images: int, file: str = "submission.csv"
                        ) -> None:
    """Raise DataError unless frame is ImageId 1..N in order and Label 0..9, one row per image,
    each written as plain digits (the way Kaggle's sample_submission.csv writes them)."""
    if list(frame.columns) != SUBMISSION_COLUMNS:
        header = ",".join(map(str, frame.columns))
        raise DataError("columns ImageId,Label", header if header.isprintable()
                        and len(header) <= MOST_SHOWN else shown(header),
                        file=file, line=1)
    # As text: 3.0, 1e0, " 3" and -0 are numbers equal to a right answer, but not what
    # Kaggle's own files hold, and not what this package writes.
    ids = frame["ImageId"].astype(str).to_numpy()
    labels = frame["Label"].astype(str).to_numpy()
    rows = min(len(ids), num_test_images)
    # The first ImageId out of place names the line where a row is missing or one too many.
    bad_id = ids[:rows] != np.arange(1, rows + 1).astype(str)
    if bad_id.any():
        row = int(np.argmax(bad_id))
        raise DataError(f"ImageId {row + 1}", shown(ids[row]), file=file, line=row + 2,
                        column="ImageId")
    if len(frame) != num_test_images:
        raise DataError(f"{num_test_images} rows, one per test image", f"{len(frame)}", file=file,
                        line=num_test_images + 2 if len(frame) > num_test_images else None)
    bad_label = ~np.isin(labels, [str(digit) for digit in range(10)])
    if bad_label.any():
        row = int(np.argmax(bad_label))
        raise DataError("a digit 0..9", shown(labels[row]), file=file, line=row + 2,
                        column="Label")


def write_submission(folder: Path, test_ids: np.ndarray, labels: np.ndarray) -> None:
    """Write folder/submission.csv (ImageId,Label), validated first, atomically."""
    frame = pd.DataFrame({"ImageId": test_ids, "Label": labels})
    validate_submission(frame, len(test_ids))
    write_atomically(folder / "submission.csv", frame.to_csv(index=False, lineterminator="\n"))


def write_run_outputs(folder: Path, digits: Digits, *, model_probs: dict[str, np.ndarray],
                      model_test_probs: dict[str, np.ndarray], histories: list[dict],
                      run_info: dict, timings: Callable[[], dict[str, float]],
                      search_holdout: np.ndarray | None = None,
                      leaderboard: pd.DataFrame | None = None, plan: dict | None = None
                      ) -> dict:
    """Fill a run folder: submission.csv (the Kaggle test set only; MNIST's is scored as
    the holdout instead), the probability files and the report; return its metrics.

    The ensemble is the plain mean of model_probs' members (OOF) and of
    model_test_probs' (test); timings is called once the probabilities are written, so
    its total counts them."""
    from src import report
    from src.metrics import ReportInputs, plain_mean

    oof_probs, test_probs = plain_mean(model_probs), plain_mean(model_test_probs)
    test_labels = test_probs.argmax(axis=1)
    if digits.y_test is None:
        write_submission(folder, digits.test_ids, test_labels)
    write_probabilities(folder, digits.y_train, oof_probs, digits.test_ids, test_probs,
                        search_holdout, digits.train_rows)
    return report.write_report(folder, ReportInputs(
        y_true=digits.y_train, images=digits.x_train, model_probs=model_probs,
        ensemble_probs=oof_probs,
        ensemble_weights={name: 1 / len(model_probs) for name in model_probs},
        histories=histories, timings=timings(), run_info=run_info, plan=plan,
        leaderboard=leaderboard, search_holdout=search_holdout,
        holdout_true=digits.y_test,
        holdout_probs=test_probs if digits.y_test is not None else None,
        test_predictions=test_labels if digits.y_test is None else None))


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shaped the run."""
    import keras
    import keras_tuner
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "keras_tuner": keras_tuner.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "scikit_learn": sklearn.__version__}


def print_summary(metrics: dict, run_dir: Path, note: str) -> None:
    """Print each member's and the ensemble's OOF accuracy (the ensemble's line ending in
    note), the holdout's, the files written and a JSON line naming the run folder."""
    for name, scores in metrics["models"].items():
        print(f"  {name:10s} OOF accuracy {scores['accuracy']:.4%}")
    scores = metrics["ensemble"]
    print(f"ensemble OOF accuracy {scores['accuracy']:.4%} (95% CI {scores['ci95_low']:.2%}-"
          f"{scores['ci95_high']:.2%}); {note}")
    outside = metrics.get("ensemble_outside_search_holdout")
    if outside:
        print(f"ensemble OOF accuracy without the {outside['left_out']} images the search chose "
              f"the members on: {outside['accuracy']:.4%} ({outside['errors']} errors of "
              f"{outside['total']})")
    if metrics["holdout"] is not None:
        print(f"holdout (MNIST test) accuracy {metrics['holdout']['accuracy']:.4%}")
    written = [name for name in ("submission.csv", "report.md", "report.html", "metrics.json",
                                 OOF_FILE, TEST_FILE) if (run_dir / name).is_file()]
    print(f"wrote {run_dir}/ ({', '.join(written)})")
    print(json.dumps({"run_dir": str(run_dir)}))


def submit_run_info(config: Config, members: list[Member], result: KFoldResult,
                    digits: Digits, argv: Sequence[str] | None) -> dict:
    """metrics.json's run_info for a run of python -m src.submit: its command, settings,
    data, what each round did (TTA, epochs where a budget cut some, pseudo-labels), its
    networks and the library versions."""
    return {"command": command_line("src.submit", argv),
            "profile": config.profile, "seed": config.seed, "source": digits.source,
            "train_file": digits.train_path, "test_file": digits.test_path,
            "data": run_data_fingerprints(digits),
            "folds": config.folds, "repeats": config.repeats, "epochs": config.epochs,
            "batch_size": config.batch_size, "precision": config.precision,
            # A budget decides TTA per round: "tta" only when every member's prediction had
            # it, and which had it when the rounds differ.
            "tta": all(result.tta.values()) if result.tta else config.tta,
            **({"tta_by_member": result.tta} if len(set(result.tta.values())) > 1 else {}),
            # A budget cuts the epochs of fold models a late round had not started: each
            # model's epochs then, in the order of the round's jobs (member x split).
            **({"epochs_by_member": result.epochs} if _epochs_cut(config, result) else {}),
            "pseudo_threshold": config.pseudo_threshold,
            "pseudo_epochs": config.pseudo_epochs if result.pseudo_counts else None,
            "pseudo_labels_per_fold": result.pseudo_counts,
            "jobs": config.jobs,
            "models_trained": result.trained, "models_reused": result.reused,
            "origins": {m.name: m.origin for m in members},
            "hparams": {m.name: m.hparams for m in members},
            "versions": library_versions()}


def _epochs_cut(config: Config, result) -> bool:
    """Whether any fold model trained other epochs than its round's (--epochs, or the
    pseudo-labelled round's)."""
    return any(set(epochs) != {config.pseudo_epochs if name.endswith(PSEUDO_SUFFIX)
                               else config.epochs}
               for name, epochs in result.epochs.items())
