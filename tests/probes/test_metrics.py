import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from undertow.probes.metrics import (
    MIN_PER_CLASS,
    auprc,
    auroc,
    auroc_permutation_null,
    benjamini_hochberg,
    bootstrap_auroc,
    bootstrap_ci,
    cluster_bootstrap_counts,
    cluster_bootstrap_weights,
    holm,
    midranks,
    permutation_pvalue,
    permute_labels,
    threshold_at_fpr,
    tpr_at_fpr,
    unreadable,
)


def _data(n=300, seed=0, ties=True):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.35).double()
    s = torch.randn(n, generator=g, dtype=torch.float64) + 0.8 * y
    if ties:
        s = (s * 3).round()  # many ties
    return s, y, torch.rand(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("ties", [True, False])
def test_auroc_auprc_match_sklearn_with_ties_and_weights(ties):
    s, y, w = _data(ties=ties)
    assert auroc(s, y).item() == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc(s, y, w).item() == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert auprc(s, y).item() == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert auprc(s, y, w).item() == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)


def test_batched_shapes_and_degenerate():
    s, y, _ = _data()
    batch = torch.stack([s, -s, torch.zeros_like(s)])
    a = auroc(batch, y)
    assert a.shape == (3,)
    assert a[0] + a[1] == pytest.approx(1.0) and a[2] == pytest.approx(0.5)
    assert torch.isnan(auroc(s, torch.ones_like(y)))  # one class -> NaN, not an exception
    w = torch.rand(5, len(s), dtype=torch.float64)
    assert auroc(batch.unsqueeze(1), y, w).shape == (3, 5)


def test_threshold_at_fpr_and_tpr_on_control_set():
    neg = torch.arange(100, dtype=torch.float64)  # 0..99
    thr = threshold_at_fpr(neg, 0.01)
    assert thr == 98.5 and (neg > thr).double().mean() == 0.01  # exactly 1 % above, halfway between scores
    assert threshold_at_fpr(neg, 0.001) > 99  # budget below one row: above every negative
    pos = torch.tensor([97.0, 98.0, 99.0, 150.0])
    tpr, t = tpr_at_fpr(pos, neg, 0.01)
    assert t == 98.5 and tpr == pytest.approx(0.5)
    tied = torch.zeros(50, dtype=torch.float64)
    assert (tied > threshold_at_fpr(tied, 0.05)).double().mean() == 0.0  # ties never exceed the budget


def test_cluster_bootstrap_fast_path_equals_weighted_auroc():
    s, y, _ = _data(n=240, ties=True)
    groups = torch.arange(240) // 8
    scores = torch.stack([s, s + torch.randn(240, dtype=torch.float64)])
    counts, inv = cluster_bootstrap_counts(groups, 50, torch.Generator().manual_seed(3))
    w = cluster_bootstrap_weights(groups, 50, torch.Generator().manual_seed(3))
    assert torch.equal(w, counts[:, inv].to(w))
    fast = bootstrap_auroc(scores, y, inv, counts)
    slow = auroc(scores.unsqueeze(1), y, w.double())
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12, equal_nan=True)
    lo, hi = bootstrap_ci(fast[0])
    assert lo < auroc(s, y) < hi


def test_cluster_bootstrap_is_wider_than_row_bootstrap_for_clustered_scores():
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(400) // 20  # 20 label-pure clusters of 20 rows sharing a random offset
    y = (groups % 2).double()
    s = 0.5 * y + 2.0 * torch.randn(20, generator=g, dtype=torch.float64)[groups] + 0.3 * torch.randn(400, generator=g)
    c, inv = cluster_bootstrap_counts(groups, 500, g)
    r, rinv = cluster_bootstrap_counts(torch.arange(400), 500, g)
    lo_c, hi_c = bootstrap_ci(bootstrap_auroc(s[None], y, inv, c)[0])
    lo_r, hi_r = bootstrap_ci(bootstrap_auroc(s[None], y, rinv, r)[0])
    assert hi_c - lo_c > 1.5 * (hi_r - lo_r)


def test_midranks_and_permutation_null_match_sorting_auroc():
    s, y, _ = _data(n=120, ties=True)
    ranks = midranks(s)
    from scipy.stats import rankdata

    np.testing.assert_allclose(ranks.numpy(), rankdata(s.numpy()))
    perm = permute_labels(y, None, 30, torch.Generator().manual_seed(0))
    null = auroc_permutation_null(torch.stack([s, -s]), perm)
    slow = auroc(torch.stack([s, -s]).unsqueeze(1), perm.double())
    torch.testing.assert_close(null, slow, rtol=0, atol=1e-12)


def test_permute_labels_respects_clusters():
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(60) // 6
    pure = (groups % 2).double()  # every group label-pure
    p = permute_labels(pure, groups, 20, g)
    assert (p.view(20, 10, 6).std(-1) == 0).all()  # groups stay pure: whole clusters swapped
    assert (p.sum(1) == pure.sum()).all()
    mixed = torch.tensor([0.0, 1.0] * 30)
    p = permute_labels(mixed, groups, 20, g)
    assert (p.view(20, 10, 6).sum(-1) == 3).all()  # within-group: per-group balance kept
    assert not (p == mixed).all()


def test_permutation_pvalue_separates_signal_from_noise():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(200, generator=g) < 0.5).double()
    perm = permute_labels(y, None, 500, g)
    strong = y + 0.5 * torch.randn(200, generator=g, dtype=torch.float64)
    noise = torch.randn(200, generator=g, dtype=torch.float64)
    obs = auroc(torch.stack([strong, noise]), y)
    p = permutation_pvalue(obs, auroc_permutation_null(torch.stack([strong, noise]), perm))
    assert p[0] == pytest.approx(1 / 501) and p[1] > 0.05


def test_holm_and_bh_known_values():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 (m=4)
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    np.testing.assert_allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02, np.nan])
    assert (holm(np.full(3, 0.9)) == 1.0).all()


def test_unreadable_names_the_counts_below_the_minimum_per_class():
    assert MIN_PER_CLASS == 10
    assert unreadable(10, 10, "the test split") is None and unreadable(400, 12, "x") is None
    assert unreadable(1, 1, "the test split") == ("not readable: 1 positive and 1 negative in the test split; "
                                                  "AUROC needs >= 10 per class")
    assert unreadable(2, 40, "d.jsonl").startswith("not readable: 2 positives and 40 negatives in d.jsonl;")
