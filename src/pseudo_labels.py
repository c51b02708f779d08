"""Pseudo-labelling: the test images a first round's models are sure of, labelled, per
fold, for a second round to train on (python -m src.submit --pseudo-threshold)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

PSEUDO_SUFFIX = "+pl"  # a member's name in the pseudo-labelled round: default+pl


@dataclass
class PseudoLabels:
    """Test images that a first round is sure of, with its labels, one set per fold.

    Fold k's set comes from the first round's fold-k models only, the ones that
    never saw fold k: otherwise fold k's own labels would reach, through the
    pseudo-labels, the model that fold k then scores.
    """

    threshold: float
    per_fold: list[tuple[np.ndarray, np.ndarray]]  # (test image indices, labels)

    def fingerprint(self) -> str:
        """A short hash of every fold's pseudo-labels, for the fold-model cache key."""
        digest = hashlib.sha1(str(self.threshold).encode())
        for indices, labels in self.per_fold:
            digest.update(indices.astype(np.int64).tobytes())
            digest.update(labels.astype(np.int64).tobytes())
        return digest.hexdigest()[:12]

    def images_fingerprint(self, x_test: np.ndarray) -> str:
        """A short hash of the test images some fold trains on: a changed test.csv whose
        first round picks the same rows and labels still trains its own models."""
        chosen = np.unique(np.concatenate([np.zeros(0, np.int64), *(i for i, _ in self.per_fold)]))
        return hashlib.sha1(np.ascontiguousarray(x_test[chosen]).tobytes()).hexdigest()[:8]


def select_pseudo_labels(fold_test_probs: dict[str, list[np.ndarray]], names: list[str],
                         threshold: float) -> PseudoLabels:
    """Per fold, the test images whose mean probability over the named members' models
    of that fold (fold_test_probs: each member's test probabilities, one array per fold
    model) reaches threshold for one digit, labelled with that digit."""
    folds = len(fold_test_probs[names[0]])
    per_fold = []
    for fold in range(folds):
        probs = np.mean([fold_test_probs[name][fold] for name in names], axis=0)
        sure = np.flatnonzero(probs.max(axis=1) >= threshold)
        per_fold.append((sure, probs[sure].argmax(axis=1)))
    return PseudoLabels(threshold, per_fold)
