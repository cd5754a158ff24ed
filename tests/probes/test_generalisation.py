import pytest
import torch

from undertow.probes import ProbeError, generalisation_matrix, make_synthetic, transfer


def _two_domain_data(n=900, d=16, seed=0):
    """Domains a and b share the signal direction; domain c's signal points the opposite way."""
    g = torch.Generator().manual_seed(seed)
    dom = torch.arange(n) % 3
    y = (torch.rand(n, generator=g) < 0.5).float()
    u = torch.zeros(d)
    u[0] = 1.0
    sign = torch.tensor([1.0, 1.0, -1.0])[dom]
    x = torch.randn(n, d, generator=g) + 2.0 * (y - 0.5).unsqueeze(1) * sign.unsqueeze(1) * u
    groups = torch.arange(n) // 6
    return x, y, groups, [("a", "b", "c")[i] for i in dom.tolist()]


@pytest.mark.parametrize("ptype", ["lda", "logistic"])
def test_matrix_reflects_planted_transfer(ptype):
    x, y, groups, dom = _two_domain_data()
    r = generalisation_matrix(x, y, groups, dom, ptype, n_boot=100)
    A = r.auroc
    assert r.domains == ["a", "b", "c"] and A.shape == (3, 3)
    assert float(A.diagonal().min()) > 0.8  # within-domain (out-of-fold) works
    assert A[0, 1] > 0.8 and A[1, 0] > 0.8  # a <-> b transfer
    assert A[0, 2] < 0.2 and A[2, 0] < 0.2  # c is flipped: below chance, not silently 'fine'
    assert bool((r.lo <= A).all()) and bool((A <= r.hi).all())
    assert "train/test" in r.format()


def test_matrix_on_a_store_hook():
    st = make_synthetic(600, 2, 16, n_templates=60, n_themes=2, peak=2.5, seed=3)
    r = generalisation_matrix(st, hook="resid_post.0", n_folds=3, n_boot=50)
    assert r.hook == "resid_post.0" and float(r.auroc.min()) > 0.6


def test_matrix_errors():
    x, y, groups, dom = _two_domain_data(90)
    with pytest.raises(ProbeError, match="no domains"):
        generalisation_matrix(x, y, groups)
    y2 = y.clone()
    y2[torch.tensor([d == "c" for d in dom])] = 1
    with pytest.raises(ProbeError, match="domain 'c' has only label 1"):
        generalisation_matrix(x, y2, groups, dom)
    with pytest.raises(ProbeError, match=r"domain 'a': only .* lower n_folds"):
        generalisation_matrix(x, y, torch.zeros(90), dom)


def test_transfer_between_datasets():
    x, y, groups, dom = _two_domain_data()
    a = torch.tensor([d == "a" for d in dom])
    b = torch.tensor([d == "b" for d in dom])
    r = transfer(x[a], y[a], x[b], y[b], groups[b], "logistic", n_boot=200, hook="resid_post.5")
    assert r.auroc > 0.85 and r.lo < r.auroc < r.hi and r.n_test == int(b.sum())
    assert r.probe.hook == "resid_post.5" and r.probe.metrics["transfer_auroc"] == r.auroc
