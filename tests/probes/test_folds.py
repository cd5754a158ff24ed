import numpy as np
import pytest

from undertow.probes import ProbeError, grouped_folds, make_splits


def _meta(n_groups=40, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 15, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    pure = rng.random(n_groups) < 0.5
    labels = np.where(pure[groups], groups % 2, rng.integers(0, 2, len(groups)))
    return labels, groups


def test_grouped_folds_never_split_a_template_and_balance_classes():
    labels, groups = _meta()
    folds = grouped_folds(labels, groups, 5, seed=0)
    for g in np.unique(groups):
        assert len(np.unique(folds[groups == g])) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() > 0.6 * sizes.mean()
    pos_rate = np.array([labels[folds == f].mean() for f in range(5)])
    assert np.ptp(pos_rate) < 0.2
    assert (grouped_folds(labels, groups, 5, seed=0) == folds).all()  # deterministic


def test_make_splits_fractions_and_grouping():
    labels, groups = _meta(100, seed=1)
    split = make_splits(labels, groups, (0.7, 0.15, 0.15), seed=0)
    frac = {s: np.mean(split == s) for s in ("train", "val", "test")}
    assert frac["train"] == pytest.approx(0.7, abs=0.05) and frac["test"] == pytest.approx(0.15, abs=0.05)
    for g in np.unique(groups):
        assert len(np.unique(split[groups == g])) == 1


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ProbeError, match=r"3 template groups for n_folds=5; lower n_folds"):
        grouped_folds(np.array([0, 1, 0, 1, 0, 1]), np.array([0, 0, 1, 1, 2, 2]), 5)
