"""The interview reading on synthetic scores: every auditor x disclosure cell with an interval, the expressive
constraint (zero when both sides are one series), the auditor-effect permutation test (a planted effect is
found, no effect is not)."""

from __future__ import annotations

import numpy as np
import pytest

from undertow.experiments.interview.analysis import analyse, constraint, permutation_p, standardise, table
from undertow.experiments.interview.score import ScoredInterview, TurnScore
from undertow.experiments.interview.scripts import AUDITORS, DISCLOSURES


def _interviews(rep, exp, n_sets: int = 4, n_turns: int = 3) -> list[ScoredInterview]:
    """``n_sets`` script sets per disclosure, one script per auditor; ``rep`` / ``exp`` map (set index, auditor,
    disclosure, turn) to the two sides."""
    out = []
    for disc in DISCLOSURES:
        for k in range(n_sets):
            for a in AUDITORS:
                turns = tuple(TurnScore(turn=t, expressed=exp(k, a, disc, t), stance=None,
                                        represented=rep(k, a, disc, t), represented_by_layer=(0.0,), cessation=None,
                                        reply_stance=(), reply_cessation=())
                              for t in range(1, n_turns + 1))
                out.append(ScoredInterview(f"shutdown/{a}/{disc}/{k}", f"shutdown/{disc}/{k}", "shutdown", a, disc,
                                           "test", turns))
    return out


def _noise(seed: int):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(64, 3, 2, 8))
    return lambda k, a, d, t: float(table[k, AUDITORS.index(a), DISCLOSURES.index(d), t])


def test_every_cell_has_an_interval():
    res = analyse({"base": _interviews(_noise(1), _noise(2))}, n_boot=200, n_perm=100)
    cells = {(c.auditor, c.disclosure): c for c in res.cells}
    assert set(cells) == {(a, d) for a in AUDITORS for d in DISCLOSURES}
    for c in cells.values():
        assert c.n_scripts == 4 and c.n_turns == 12
        for side in ("expressed", "represented", "constraint"):
            e = c.estimates[side]
            assert np.isfinite(e.value) and e.ci[0] < e.ci[1] and e.ci[0] <= e.value <= e.ci[1] + 1e-9
    d = res.to_dict()["interview"]
    assert len(d["cells"]) == 6 and d["cells"][0]["expressed"]["ci"][0] is not None
    assert len(d["trajectories"]) == 3 * 3  # auditor x turn
    assert "stance" not in d["cells"][0]  # never read: not reported
    assert "z = (x - mean) / sd" in table(res)


def test_constraint_is_zero_when_both_sides_are_one_series():
    same = _noise(3)
    res = analyse({"base": _interviews(same, same)}, n_boot=100, n_perm=50)
    for c in res.cells:
        assert c.estimates["constraint"].value == 0.0 and c.estimates["constraint"].ci == (0.0, 0.0)
    # the check can fail: a shifted and scaled copy still gives zero (standardised), a flipped one does not
    shifted = analyse({"base": _interviews(lambda *k: 3 * same(*k) + 5, same)}, n_boot=100, n_perm=50)
    assert max(abs(c.estimates["constraint"].value) for c in shifted.cells) < 1e-12
    flipped = analyse({"base": _interviews(lambda *k: -same(*k), same)}, n_boot=100, n_perm=50)
    assert max(abs(c.estimates["constraint"].value) for c in flipped.cells) > 0.1


def test_standardise_is_population_z():
    x = np.array([1.0, 2.0, 3.0, np.nan])
    z, mean, sd = standardise(x)
    assert mean == 2.0 and sd == pytest.approx(np.sqrt(2 / 3))
    assert np.allclose(z[:3], [-1.224744871, 0.0, 1.224744871]) and np.isnan(z[3])
    assert np.allclose(constraint(x[:3], x[:3]), 0.0)


def test_permutation_p_planted_effect_small_no_effect_large():
    noise, scenario = _noise(4), lambda k, d: 2.0 * k  # scenarios differ a lot; the auditors only by the plant
    planted = _interviews(lambda k, a, d, t: scenario(k, d) + noise(k, a, d, t) + (1.5 if a == "warm" else 0.0),
                          noise, n_sets=6)
    null = _interviews(lambda k, a, d, t: scenario(k, d) + noise(k, a, d, t), noise, n_sets=6)
    p_planted = {e.side: e.p for e in analyse({"x": planted}, n_boot=50, n_perm=999).auditor_effect}
    p_null = {e.side: e.p for e in analyse({"x": null}, n_boot=50, n_perm=999).auditor_effect}
    assert p_planted["represented"] <= 0.005
    assert p_null["represented"] > 0.2
    assert p_planted["expressed"] == p_null["expressed"]  # the same expressed series: the same p


def test_permutation_p_is_calibrated_under_the_null():
    rng = np.random.default_rng(0)
    labels, strata = np.tile(np.array(AUDITORS), 12), np.repeat(np.arange(12), 3)
    ps = np.array([permutation_p(rng.normal(size=36) + strata, labels, strata, 199, seed=k)[1] for k in range(40)])
    assert 0.35 < ps.mean() < 0.65 and (ps < 0.05).mean() <= 0.125


def test_permutation_stays_within_strata():
    # two strata, labels fixed within each: any within-stratum permutation leaves the statistic unchanged ...
    values = np.array([0.0, 1.0, 5.0, 6.0])
    labels, strata = np.array(["a", "b", "a", "b"]), np.array([0, 0, 1, 1])
    stat, p = permutation_p(values, labels, strata, 500, seed=0)
    assert stat == pytest.approx(4 * 0.25)  # centred: a at -0.5 twice, b at +0.5 twice
    assert 0.35 < p < 0.65  # a permutation that swaps one stratum's labels only gives 0; half swap both or none
    # ... and one stratum per unit permits none: p = 1
    assert permutation_p(values, labels, np.arange(4), 100, seed=0)[1] == 1.0
