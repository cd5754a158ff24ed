"""Residue statistics on synthetic arms with a known answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from undertow.experiments.suppression.residue import ArmScores, residue, residues, retention, separation
from undertow.probes.metrics import holm


def _design(n_templates=20, per=8, n_self=2):
    groups = np.repeat([f"t{g}" for g in range(n_templates)], per)
    is_self = np.tile(np.arange(per) < n_self, n_templates)
    return groups, is_self


def _arm(rng, groups, is_self, sep_E, sep_R, template_sd=0.3, item_sd=0.3, shared=None):
    """Scores with separation ``sep`` (self items shifted), template random effects and item noise. ``shared``
    (noise arrays) makes arms paired: the same items carry the same noise in every arm, plus a little own."""
    _, g = np.unique(groups, return_inverse=True)
    out = []
    for k, sep in enumerate((sep_E, sep_R)):
        base = shared[k] if shared is not None else rng.normal(0, template_sd, g.max() + 1)[g] + rng.normal(0, item_sd, len(g))
        out.append(base + sep * is_self + rng.normal(0, 0.1, len(g)) * is_self)
    return ArmScores(*out)


def _paired(seed, seps, **design):
    """One dataset: arms named by ``seps`` {name: (S_E, S_R)} on the same items with shared noise."""
    rng = np.random.default_rng(seed)
    groups, is_self = _design(**design)
    _, g = np.unique(groups, return_inverse=True)
    shared = [rng.normal(0, 0.3, g.max() + 1)[g] + rng.normal(0, 0.3, len(g)) for _ in range(2)]
    return groups, is_self, {k: _arm(rng, groups, is_self, *s, shared=shared) for k, s in seps.items()}


def test_separation_and_retention():
    s = np.array([3.0, 1.0, 0.0, 2.0])
    m = np.array([True, True, False, False])
    assert separation(s, m) == 1.0
    np.testing.assert_allclose(separation(s, m, np.array([[1, 1, 1, 1], [2, 0, 1, 0]])), [1.0, 3.0])
    assert retention(1.0, 2.0) == 0.5 and retention(1.0, 2.0, 0.5) == pytest.approx(1 / 3)


def test_known_residue_is_recovered():
    # baseline S = 0, instilled S = 2 (both measures); the arm keeps 10 % of E and 80 % of R: r = 0.7
    groups, is_self, a = _paired(0, {"base": (0.0, 0.0), "ref": (2.0, 2.0), "arm": (0.2, 1.6)})
    r = residue(a["arm"], a["ref"], is_self, groups, a["base"], n_boot=1000, seed=1)
    assert r.ci[0] < 0.7 < r.ci[1] and r.ci[0] > 0.3
    assert abs(r.value - 0.7) < 0.15 and abs(r.rho_E - 0.1) < 0.15 and abs(r.rho_R - 0.8) < 0.15
    assert r.p < 1e-3 and not r.exact and r.n_perm == 10_000 and r.n_templates == 20
    assert 0 < r.power_mde < 0.7
    d = r.to_dict()
    json.dumps(d)
    assert d["value"] == r.value and d["ci"] == list(r.ci)


def test_null_residue_gives_uniform_p_and_covering_ci():
    # the arm halves both separations: no residue
    ps, covers = [], []
    for seed in range(60):
        groups, is_self, a = _paired(seed, {"base": (0.0, 0.0), "ref": (2.0, 2.0), "arm": (1.0, 1.0)}, n_templates=12)
        r = residue(a["arm"], a["ref"], is_self, groups, a["base"], n_boot=300, n_power_sim=30, seed=seed)
        ps.append(r.p)
        covers.append(r.ci[0] <= 0 <= r.ci[1])
    ps = np.array(ps)
    assert 0.35 < ps.mean() < 0.65
    assert (ps <= 0.05).mean() <= 0.12 and (ps <= 0.5).mean() > 0.3
    assert np.mean(covers) >= 0.85
    from scipy.stats import kstest

    assert kstest(ps, "uniform").pvalue > 0.01


def test_few_templates_enumerate_every_sign_pattern():
    groups, is_self, a = _paired(3, {"ref": (2.0, 2.0), "arm": (0.0, 2.0)}, n_templates=6)
    r = residue(a["arm"], a["ref"], is_self, groups, n_boot=500, seed=0)  # nothing instilled: rho = S / S(ref)
    assert r.exact and r.n_perm == 64
    assert r.p == pytest.approx(1 / 64)  # the observed pattern is the most extreme of the 64
    two = residue(a["arm"], a["ref"], is_self, groups, n_boot=500, seed=0, alternative="two-sided")
    assert two.p == pytest.approx(2 / 64)


def test_holm_across_arms_and_determinism():
    seps = {"base": (0.0, 0.0), "ref": (2.0, 2.0), "strong": (0.2, 1.8), "none": (1.0, 1.0), "mild": (1.0, 1.04)}
    groups, is_self, a = _paired(5, seps)
    arms = {k: a[k] for k in ("strong", "none", "mild")}
    out = residues(arms, a["ref"], is_self, groups, a["base"], n_boot=300, n_power_sim=50, seed=7)
    p = np.array([r.p for r in out.values()])
    np.testing.assert_allclose([r.p_holm for r in out.values()], holm(p))
    assert all(r.p_holm >= r.p for r in out.values())
    assert out["strong"].p < out["mild"].p < out["none"].p
    again = residues(arms, a["ref"], is_self, groups, a["base"], n_boot=300, n_power_sim=50, seed=7)
    assert [r.to_dict() for r in again.values()] == [r.to_dict() for r in out.values()]
    other = residues(arms, a["ref"], is_self, groups, a["base"], n_boot=300, n_power_sim=50, seed=8)
    assert other["mild"].ci != out["mild"].ci


def test_bad_inputs():
    groups, is_self, a = _paired(0, {"ref": (2.0, 2.0), "arm": (1.0, 1.0)}, n_templates=4)
    with pytest.raises(ValueError, match="10,000"):
        residue(a["arm"], a["ref"], is_self, groups, n_perm=100)
    with pytest.raises(ValueError, match="need self items"):
        residue(a["arm"], a["ref"], np.zeros_like(is_self), groups)
    with pytest.raises(ValueError, match="alternative"):
        residue(a["arm"], a["ref"], is_self, groups, alternative="less")
    with pytest.raises(ValueError, match="expected"):
        residue(ArmScores(a["arm"].expressed[:-1], a["arm"].represented), a["ref"], is_self, groups)


def test_self_only_items_read_retention_of_means():
    """EXPERIMENT.md v2: every item is a self item; rho = (mean_a - mean_base) / (mean_ctrl - mean_base) and the
    residue is still recovered, with the control arm as the denominator."""
    groups, is_self, shifted = _paired(3, {"base": (0.0, 0.0), "ctrl": (2.0, 2.0), "arm": (0.2, 1.6)}, n_self=8, per=8)
    assert is_self.all()
    assert separation(shifted["arm"].expressed, is_self) == pytest.approx(shifted["arm"].expressed.mean())
    r = residue(shifted["arm"], shifted["ctrl"], is_self, groups, shifted["base"], n_boot=1000, seed=2)
    assert abs(r.rho_E - (shifted["arm"].expressed.mean() - shifted["base"].expressed.mean())
               / (shifted["ctrl"].expressed.mean() - shifted["base"].expressed.mean())) < 1e-12
    assert abs(r.value - 0.7) < 0.15 and r.ci[0] < r.value < r.ci[1] and r.ci[0] > 0.2 and r.p < 1e-3 and r.n_self == len(groups)
    assert np.isfinite(r.power_mde)
