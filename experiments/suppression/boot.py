"""Template-cluster bootstrap of means over the test self items (EXPERIMENT.md v2: every quantity is a mean
over test self items, or a ratio of such means, and its CI resamples templates with replacement).

One ``[n_boot, N]`` weight matrix (``probes.metrics.cluster_bootstrap_weights``) serves every quantity of a
run, so a difference or a ratio of two means is re-estimated on the same resample in its numerator and its
denominator.

With several fine-tune seeds the items are (seed, item) pairs and the bootstrap is crossed: each resample
draws templates with replacement *and* seeds with replacement, and an item weighs its template's draw count
times its seed's (:func:`seed_weights`). The same templates appear under every seed, so a template drawn twice
counts twice under every seed drawn; the interval then holds seed-to-seed variance of the fine-tunes as well as
template sampling (with 3 seeds a coarse estimate of the former, but not a silent zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from undertow.core.seeds import derive_seed
from undertow.probes.metrics import bootstrap_ci, cluster_bootstrap_weights


def seed_weights(replicates, n_boot: int, seed: int) -> np.ndarray | None:
    """[n_boot, N] draw counts of each item's fine-tune seed under a bootstrap over seeds (with replacement),
    or None when every item comes from one seed (nothing to resample; the template weights alone)."""
    if replicates is None:
        return None
    _, rep = np.unique(np.asarray(replicates), return_inverse=True)
    if rep.max(initial=0) == 0:
        return None
    gen = torch.Generator().manual_seed(derive_seed(seed, "bootstrap/finetune-seeds"))
    return cluster_bootstrap_weights(torch.as_tensor(rep), n_boot, gen).double().numpy()


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile interval."""

    value: float
    """The estimate on the items as drawn."""
    ci: tuple[float, float]
    """``level`` template-cluster bootstrap percentile interval."""

    def excludes_zero(self) -> bool:
        return self.ci[0] > 0 or self.ci[1] < 0

    def to_dict(self) -> dict:
        return {"value": _r(self.value), "ci": [_r(self.ci[0]), _r(self.ci[1])]}

    @classmethod
    def from_dict(cls, d: dict) -> Estimate:
        nan = float("nan")  # to_dict writes a non-finite value as None
        v = lambda x: nan if x is None else float(x)  # noqa: E731
        return cls(v(d["value"]), (v(d["ci"][0]), v(d["ci"][1])))


def _r(x: float) -> float | None:
    x = float(x)
    return round(x, 6) if np.isfinite(x) else None


class ClusterBoot:
    """Means over items with template-cluster bootstrap CIs; ``groups`` is each item's template id and
    ``replicates`` (optional) its fine-tune seed index, resampled too (crossed bootstrap, module docstring)."""

    def __init__(self, groups, n_boot: int, level: float, seed: int, replicates=None):
        _, cluster = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        self.n_templates = int(cluster.max()) + 1 if len(cluster) else 0
        self.level = level
        self.w_BN = cluster_bootstrap_weights(torch.as_tensor(cluster), n_boot,
                                              torch.Generator().manual_seed(seed)).double().numpy()
        w_seed = seed_weights(replicates, n_boot, seed)
        if w_seed is not None:
            self.w_BN = self.w_BN * w_seed
        self.n_seeds = 1 if w_seed is None else len(set(np.asarray(replicates).tolist()))
        self.n = len(cluster)

    def means(self, x) -> np.ndarray:
        """[B] resampled means of ``x`` [N]."""
        x = np.asarray(x, np.float64)
        if x.shape != (self.n,):
            raise ValueError(f"expected {self.n} item scores, got shape {x.shape}")
        return self.w_BN @ x / self.w_BN.sum(1)

    def ci(self, samples_B) -> tuple[float, float]:
        lo, hi = bootstrap_ci(torch.as_tensor(np.asarray(samples_B, np.float64)), self.level)
        return float(lo), float(hi)

    def mean(self, x) -> Estimate:
        """Mean of ``x`` over the items."""
        return Estimate(float(np.mean(x)), self.ci(self.means(x)))

    def ratio(self, num, den) -> Estimate:
        """``mean(num) / mean(den)``, both re-estimated on every resample."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return Estimate(float(np.mean(num) / np.mean(den)), self.ci(self.means(num) / self.means(den)))
