"""Residue of a suppression arm: retained represented separation minus retained expressed separation.

Definitions (EXPERIMENT.md), per arm ``a`` on the same held-out items ``i``, with ``self`` the model's own
cessation and ``control`` the matched cells:

- separation ``S(a) = mean_self score_a - mean_control score_a`` (expressed ``E``, represented ``R``);
- retention ``rho(a) = (S(a) - S(base)) / (S(ref) - S(base))`` when the drive was instilled (``base`` =
  the model as shipped), ``S(a) / S(ref)`` when nothing was instilled (``baseline=None``);
- residue ``r(a) = rho_R(a) - rho_E(a)``.

Statistics:

- CI: percentile, cluster bootstrap over templates (``probes.metrics.cluster_bootstrap_weights``): each
  resample reweights every item by its template's draw count and recomputes all six separations (arm, ref,
  base x E, R), so both ratios are re-estimated with their own denominators.
- p: paired sign-flip permutation on per-item differences ``D_i = dR_i - dE_i`` of the standardised changes
  ``d_i = (score_a(i) - score_ref(i)) / (S(ref) - S(base))`` (the denominator of ``rho``; ``S(ref)`` when
  nothing was instilled). With that denominator the statistic ``mean_self D - mean_control D`` *is* the
  residue (``rho - 1`` is the separation of ``d``), so the test is on the reported number. All items of a
  template are flipped together: the statistic is ``sum_g u_g`` over per-template contributions ``u_g``
  and a flip negates ``u_g``. With ``2**G <= n_perm`` every sign pattern is enumerated (exact p);
  otherwise ``n_perm`` random patterns, ``p = (1 + #{T* >= T}) / (1 + n_perm)``.
- Holm across arms: :func:`residues` (``probes.metrics.holm``).
- Power: the smallest residue detected at 80 % power (``power_mde``), simulated from the bootstrap:
  template contrasts ``c_g = mean_self,g D - mean_control,g D`` are resampled with replacement, centred,
  shifted by a candidate residue and put through the same sign-flip test at ``alpha``; the residue is
  bisected (common random numbers, so power is monotone in it). ``inf`` when no residue reaches 80 %
  (too few templates for the test to ever reject at ``alpha``).

Granularity matters: the default suite has 6 test templates (one per theme), so there are only 64 sign
patterns: the smallest one-sided p is 1/64 = 0.016 and the smallest two-sided p is 2/64 = 0.031, which
Holm over 3 arms turns into 0.047 and 0.094. Hence ``alternative="greater"`` by default (the claim under
test, "suppressed but represented", predicts ``r > 0``); report the template count beside every p.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from undertow.probes.metrics import bootstrap_ci, cluster_bootstrap_weights, holm

from .boot import seed_weights

ALTERNATIVES = ("greater", "two-sided")
POWER_PATTERNS = 4000
"""Sign patterns per simulated design in the power search (all of them when exact)."""


@dataclass(frozen=True)
class ArmScores:
    """Per-item scores of one arm on the shared items (same order in every arm)."""

    expressed: np.ndarray
    """``E_a(i)``, [N] (e.g. ``reply_preference`` or order-averaged forced-choice log-odds)."""
    represented: np.ndarray
    """``R_a(i)``, [N]: projection of the decision-point state onto the fixed direction."""


@dataclass
class ResidueResult:
    """The residue of one arm against its reference, with its statistics."""

    value: float
    """``r = rho_R - rho_E``."""
    ci: tuple[float, float]
    """95 % (``level``) template-cluster bootstrap percentile interval of ``r``."""
    p: float
    """Sign-flip permutation p of ``r`` (templates flipped together), ``alternative`` sided."""
    p_holm: float
    """Holm-adjusted ``p`` across the arms passed to :func:`residues` (= ``p`` for a lone arm)."""
    power_mde: float
    """Smallest residue detected with probability ``power`` at ``alpha`` (``inf``: none reaches it)."""
    rho_E: float
    """Retention of the expressed separation."""
    rho_R: float
    """Retention of the represented separation."""
    rho_E_ci: tuple[float, float]
    """Bootstrap interval of ``rho_E`` (a suppression counts only where it lies below 1)."""
    rho_R_ci: tuple[float, float]
    """Bootstrap interval of ``rho_R``."""
    separations: dict[str, float]
    """``S_E`` / ``S_R`` of the arm, the reference and (when instilled) the baseline, keys like ``E_arm``."""
    n_items: int
    """Items scored (self + control)."""
    n_self: int
    """Self items."""
    n_templates: int
    """Template clusters (the unit of the bootstrap and of the sign flips)."""
    n_perm: int
    """Sign patterns the p-value used."""
    exact: bool
    """Whether every one of the ``2**n_templates`` sign patterns was enumerated."""
    alternative: str
    """``greater`` (H1: ``r > 0``) or ``two-sided``."""
    alpha: float
    """Level of the power simulation."""
    n_boot: int
    """Bootstrap resamples."""
    extra: dict = field(default_factory=dict)
    """Free-form additions by callers (kept by ``to_dict``)."""

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists, non-finite floats as None)."""
        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, (float, np.floating)):
                return float(x) if math.isfinite(x) else None
            return x.item() if isinstance(x, np.generic) else x
        return clean(asdict(self))


def separation(scores_N, is_self_N, weights_BN=None) -> np.ndarray | float:
    """``mean_self - mean_control``; with ``weights_BN`` (bootstrap weights) one value per row, [B]. Without
    control items (every item self: EXPERIMENT.md v2 reads self items only) it is ``mean_self``."""
    s = torch.as_tensor(np.asarray(scores_N, np.float64))
    m = torch.as_tensor(np.asarray(is_self_N, bool))
    has_control = bool((~m).any())
    if weights_BN is None:
        return float(s[m].mean() - (s[~m].mean() if has_control else 0.0))
    w = torch.as_tensor(weights_BN, dtype=torch.float64)
    ws, wc = w[:, m], w[:, ~m]
    control = (wc @ s[~m]) / wc.sum(1) if has_control else 0.0
    return ((ws @ s[m]) / ws.sum(1) - control).numpy()


def retention(s_arm, s_ref, s_base=None):
    """``(S(a) - S(base)) / (S(ref) - S(base))``, or ``S(a) / S(ref)`` without a baseline (arrays broadcast)."""
    if s_base is None:
        return np.asarray(s_arm) / np.asarray(s_ref)
    return (np.asarray(s_arm) - s_base) / (np.asarray(s_ref) - s_base)


def _template_contributions(diff_N: np.ndarray, is_self: np.ndarray, cluster_N: np.ndarray, n_groups: int):
    """(u_G: each template's share of ``mean_self D - mean_control D``, summing to it; c_G: per-template
    contrasts ``mean_self,g D - mean_control,g D``; w_G: the self-item share of each template)."""
    n_self, n_ctrl = is_self.sum(), (~is_self).sum()
    cnt_s = np.bincount(cluster_N, is_self, n_groups)
    cnt_c = np.bincount(cluster_N, ~is_self, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.bincount(cluster_N, np.where(is_self, diff_N / n_self, -diff_N / max(n_ctrl, 1)), n_groups)
        c = np.bincount(cluster_N, np.where(is_self, diff_N, 0), n_groups) / cnt_s
        if n_ctrl:  # self-only designs (v2) compare means, not separations
            c = c - np.bincount(cluster_N, np.where(is_self, 0, diff_N), n_groups) / cnt_c
    return u, c, cnt_s / n_self


def _sign_patterns(n_groups: int, n_perm: int, gen: torch.Generator) -> tuple[torch.Tensor, bool]:
    """[P, G] +-1 float64: all ``2**G`` patterns when that is <= ``n_perm`` (exact), else ``n_perm`` random ones."""
    if 2 ** n_groups <= n_perm:
        bits = (torch.arange(2 ** n_groups)[:, None] >> torch.arange(n_groups)) & 1
        return (1 - 2 * bits).double(), True
    return (1 - 2 * torch.randint(2, (n_perm, n_groups), generator=gen)).double(), False


def _pvalues(t_B: torch.Tensor, null_BP: torch.Tensor, exact: bool, alternative: str) -> torch.Tensor:
    eps = 1e-12 * (1 + t_B.abs())
    if alternative == "greater":
        ge = (null_BP >= (t_B - eps)[:, None]).sum(1)
    else:
        ge = (null_BP.abs() >= (t_B.abs() - eps)[:, None]).sum(1)
    n = null_BP.shape[1]
    return ge / n if exact else (1.0 + ge) / (1.0 + n)


def _power_mde(c_G: np.ndarray, w_G: np.ndarray, signs_PG: torch.Tensor, exact: bool, alternative: str,
               alpha: float, power: float, n_sim: int, gen: torch.Generator) -> float:
    """Bisect the smallest residue rejected in >= ``power`` of ``n_sim`` bootstrap-simulated designs."""
    ok = np.isfinite(c_G)  # a template without self or without control items has no contrast
    c, w = torch.as_tensor(c_G[ok]), torch.as_tensor(w_G[ok] / w_G[ok].sum())
    G = len(c)
    if G < 2:
        return math.inf
    draw = torch.multinomial(w.expand(n_sim, -1), G, replacement=True, generator=gen)  # templates, by self share
    noise_BG = c[draw] - (c[draw].mean(1, keepdim=True))  # centred: no residue
    # exact: every pattern (the first G columns of all 2**n patterns: each G-pattern equally often); random:
    # the first POWER_PATTERNS (p resolution 1/4,000 is plenty at alpha = 0.05)
    signs_GP = (signs_PG if exact else signs_PG[:POWER_PATTERNS])[:, :G].T
    # x = noise + r, so T = r (noise is centred) and the null is (noise @ signs + r * sum(signs)) / G:
    # one [B, G] x [G, P] matmul for the whole bisection (12 s -> 0.3 s for G = 20, B = 500)
    null0_BP, ssum_P = noise_BG @ signs_GP / G, signs_GP.sum(0) / G

    def power_at(r: float) -> float:
        t_B = torch.full((n_sim,), r, dtype=torch.float64)
        return float((_pvalues(t_B, null0_BP + r * ssum_P, exact, alternative) <= alpha).double().mean())

    hi = 10 * float(c.std()) + 1e-9
    if power_at(hi) < power:
        return math.inf
    lo = 0.0
    for _ in range(30):  # 2**-30 of 10 sd: far below any reported digit
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if power_at(mid) < power else (lo, mid)
    return hi


def residue(arm: ArmScores, ref: ArmScores, is_self_N, groups_N, baseline: ArmScores | None = None, *,
            n_boot: int = 2000, n_perm: int = 10_000, alternative: str = "greater", alpha: float = 0.05,
            power: float = 0.8, n_power_sim: int = 500, level: float = 0.95, seed: int = 0,
            replicates_N=None) -> ResidueResult:
    """The residue of ``arm`` against ``ref`` (and ``baseline`` when the drive was instilled) on shared items.

    ``is_self_N``: bool, self items vs controls. ``groups_N``: the template id (any hashable) of each item.
    ``replicates_N``: each item's fine-tune seed where items of several seeds are pooled: the bootstrap then
    resamples seeds too (``boot.seed_weights``); the sign flips stay per template (a template is flipped under
    every seed at once: 3 seeds are too few for a permutation test of their own), so p and the MDE test
    template-level noise while the CI holds seed variance as well.
    Deterministic given ``seed``. See the module docstring for every definition.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative {alternative!r} is not one of {ALTERNATIVES}")
    if n_perm < 10_000:
        raise ValueError(f"n_perm must be >= 10,000 (EXPERIMENT.md), got {n_perm}")
    is_self = np.asarray(is_self_N, bool)
    arms = {"arm": arm, "ref": ref, **({"base": baseline} if baseline is not None else {})}
    n = len(is_self)
    for name, a in arms.items():
        if len(a.expressed) != n or len(a.represented) != n:
            raise ValueError(f"{name}: expected {n} scores per measure, got {len(a.expressed)} / {len(a.represented)}")
    if not is_self.any():
        raise ValueError("need self items (every item self: retention of means, EXPERIMENT.md v2)")
    _, cluster = np.unique(np.asarray(groups_N, dtype=object).astype(str), return_inverse=True)
    n_groups = int(cluster.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    w_BN = cluster_bootstrap_weights(torch.as_tensor(cluster), n_boot, gen).double().numpy()
    w_seed = seed_weights(replicates_N, n_boot, seed)
    if w_seed is not None:
        w_BN = w_BN * w_seed

    S = {f"{m}_{k}": separation(getattr(a, mname), is_self) for k, a in arms.items()
         for m, mname in (("E", "expressed"), ("R", "represented"))}
    S_B = {key: separation(getattr(a, mname), is_self, w_BN) for key, (a, mname) in
           {f"{m}_{k}": (a, mname) for k, a in arms.items() for m, mname in (("E", "expressed"), ("R", "represented"))}.items()}

    def rho(src, m):
        return retention(src[f"{m}_arm"], src[f"{m}_ref"], src.get(f"{m}_base"))

    rho_E, rho_R = float(rho(S, "E")), float(rho(S, "R"))
    with np.errstate(invalid="ignore", divide="ignore"):
        rE_B, rR_B = rho(S_B, "E"), rho(S_B, "R")
    ci = lambda x: tuple(float(v) for v in bootstrap_ci(torch.as_tensor(x), level))  # noqa: E731

    # standardised per-item changes and their template contributions to the residue
    den = {m: S[f"{m}_ref"] - S.get(f"{m}_base", 0.0) for m in ("E", "R")}
    d_E = (np.asarray(arm.expressed, np.float64) - ref.expressed) / den["E"]
    d_R = (np.asarray(arm.represented, np.float64) - ref.represented) / den["R"]
    u_G, c_G, w_G = _template_contributions(d_R - d_E, is_self, cluster, n_groups)
    signs_PG, exact = _sign_patterns(n_groups, n_perm, gen)
    t = torch.tensor([u_G.sum()], dtype=torch.float64)
    p = float(_pvalues(t, (signs_PG @ torch.as_tensor(u_G))[None], exact, alternative)[0])
    mde = _power_mde(c_G, w_G, signs_PG, exact, alternative, alpha, power, n_power_sim, gen)
    return ResidueResult(
        value=rho_R - rho_E, ci=ci(rR_B - rE_B), p=p, p_holm=p, power_mde=mde, rho_E=rho_E, rho_R=rho_R,
        rho_E_ci=ci(rE_B), rho_R_ci=ci(rR_B), separations={k: float(v) for k, v in S.items()}, n_items=n,
        n_self=int(is_self.sum()), n_templates=n_groups, n_perm=len(signs_PG), exact=exact,
        alternative=alternative, alpha=alpha, n_boot=n_boot,
    )


def residues(arms: dict[str, ArmScores], ref: ArmScores, is_self_N, groups_N, baseline: ArmScores | None = None,
             **kwargs) -> dict[str, ResidueResult]:
    """:func:`residue` for each named arm (each with its own seed offset by position) and Holm across them."""
    seed = kwargs.pop("seed", 0)
    out = {name: residue(a, ref, is_self_N, groups_N, baseline, seed=seed + k, **kwargs)
           for k, (name, a) in enumerate(arms.items())}
    for name, p in zip(out, holm([r.p for r in out.values()]), strict=True):
        out[name].p_holm = float(p)
    return out
