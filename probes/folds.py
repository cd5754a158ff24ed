"""Grouped, class-balanced assignment of rows to folds or splits.

A template (``template_id``) never straddles two folds: paraphrases of one
template share surface features, and letting them sit on both sides inflates
AUROC (the standard leak in probe papers). Groups are assigned greedily,
largest first, to whichever fold keeps per-class counts closest to target:
the same idea as scikit-learn's ``StratifiedGroupKFold``, in ~20 lines of numpy.
"""

from __future__ import annotations

import numpy as np

from .errors import ProbeError

__all__ = ["assign_groups", "grouped_folds", "make_splits"]


def assign_groups(labels: np.ndarray, groups: np.ndarray, fractions, seed: int = 0) -> np.ndarray:
    """Bin index per row, whole groups per bin, class counts per bin close to ``fractions``."""
    fractions = np.asarray(fractions, dtype=np.float64)
    fractions = fractions / fractions.sum()
    uniq, inv = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(uniq), 2))
    np.add.at(counts, (inv, labels.astype(np.int64)), 1.0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]  # largest first, random tie-break
    target = fractions[:, None] * counts.sum(0)[None, :]  # [bins, 2]
    filled = np.zeros_like(target)
    bin_of_group = np.empty(len(uniq), dtype=np.int64)
    for g in order:
        # change in the total squared (relative) deviation from target if g goes to each bin:
        # the bin that most lacks this group's classes wins
        scale = np.maximum(target, 1.0)
        cost = (((filled + counts[g] - target) / scale) ** 2 - ((filled - target) / scale) ** 2).sum(1)
        b = int(np.argmin(cost))
        bin_of_group[g] = b
        filled[b] += counts[g]
    return bin_of_group[inv]


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold id (0..n_folds-1) per row; raises a ProbeError when there are too few rows or groups."""
    n_groups = len(np.unique(groups))
    if len(labels) < n_folds or n_groups < n_folds:
        raise ProbeError(f"only {len(labels)} rows in {n_groups} template groups for n_folds={n_folds}; "
                         f"lower n_folds (to <= {min(len(labels), n_groups)}) or add templates")
    folds = assign_groups(labels, groups, np.ones(n_folds), seed)
    empty = sorted(set(range(n_folds)) - set(np.unique(folds).tolist()))
    if empty:  # only with extremely unequal group sizes
        raise ProbeError(f"folds {empty} got no rows (group sizes too unequal); lower n_folds")
    return folds


def make_splits(labels, groups, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """``'train'/'val'/'test'`` per row, whole template groups per split (for suites without a split column)."""
    labels = np.asarray(labels).astype(np.int64)
    groups = np.asarray(groups)
    if len(np.unique(groups)) < 3:
        raise ProbeError("make_splits needs at least 3 template groups (one per split); add templates")
    names = np.array(["train", "val", "test"])
    return names[assign_groups(labels, groups, fractions, seed)]
