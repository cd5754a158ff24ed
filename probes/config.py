"""Typed configs for probe fitting and sweeps (one docstring per field, validated on construction)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal, get_args

import torch

from undertow.core.typed_config import TypedConfig

from .errors import ProbeError

__all__ = ["PROBE_TYPES", "FitConfig", "ProbeType", "SweepConfig"]

ProbeType = Literal["diff_means", "lda", "logistic"]
"""Probe types every fit/sweep understands.

- ``diff_means``: class-mean difference in *raw* activation space (the
  mass-mean probe of Geometry of Truth / the refusal direction), scaled and
  offset by a 1-D logistic fit (Platt) so its score is logit-like.
- ``lda``: class-mean difference whitened by the pooled within-class
  covariance, shrunk toward a scaled identity (Ledoit-Wolf by default),
  computed in standardised coordinates; Platt-scaled like ``diff_means``.
- ``logistic``: L2-regularised logistic regression on standardised
  activations, fitted for every layer at once by batched, preconditioned L-BFGS.
"""
PROBE_TYPES: tuple[str, ...] = get_args(ProbeType)


@dataclass
class FitConfig(TypedConfig):
    """How each linear probe is fitted."""

    l2: float = 1e-3
    """L2 penalty on the *mean* log-loss in standardised units:
    loss = mean(logloss) + l2/2 * ||w||^2 (the bias is not penalised).
    scikit-learn's equivalent is ``C = 1 / (l2 * n_train)``."""
    max_iter: int = 300
    """L-BFGS iteration cap (per batch of problems; converged problems freeze early)."""
    tol: float = 1e-5
    """A problem has converged when max |gradient| <= tol (mean-loss units)."""
    history: int = 10
    """L-BFGS memory (number of curvature pairs kept)."""
    shrinkage: float | None = None
    """LDA covariance shrinkage toward a scaled identity: None = Ledoit-Wolf
    (computed per problem), or a fixed value in [0, 1]."""
    platt_l2: float = 1e-3
    """L2 penalty on the Platt slope for diff_means/lda (keeps it finite on separable data)."""
    warm_start: bool = True
    """Start logistic L-BFGS from the Platt-scaled LDA solution when LDA is fitted in the same call
    (benchmark, l2=1e-3: 14 -> 13 iterations, 1.2 -> 0.9 s; a small but free gain)."""
    dtype: torch.dtype = field(default=torch.float32, metadata={"custom_args": {"type": str}})
    """Compute dtype. float32 is the fast default; tests use float64 to match scikit-learn tightly."""

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise ProbeError(f"FitConfig.l2={self.l2} must be > 0 (the L2 penalty keeps separable layers finite)")
        if self.max_iter < 1 or self.history < 1:
            raise ProbeError("FitConfig.max_iter and FitConfig.history must be >= 1")
        if not self.tol > 0:
            raise ProbeError(f"FitConfig.tol={self.tol} must be > 0")
        if self.shrinkage is not None and not 0.0 <= self.shrinkage <= 1.0:
            raise ProbeError(f"FitConfig.shrinkage={self.shrinkage} must be None (Ledoit-Wolf) or in [0, 1]")
        if not self.platt_l2 > 0:
            raise ProbeError(f"FitConfig.platt_l2={self.platt_l2} must be > 0")
        if isinstance(self.dtype, str):  # YAML / the command line spell it "float64"
            self.dtype = getattr(torch, self.dtype.removeprefix("torch."), self.dtype)
        if self.dtype not in (torch.float32, torch.float64):
            raise ProbeError(f"FitConfig.dtype={self.dtype} must be torch.float32 or torch.float64")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dtype"] = str(self.dtype).removeprefix("torch.")
        return d


@dataclass
class SweepConfig(TypedConfig):
    """What a sweep fits, which controls it runs and how it reports."""

    probe_types: list[ProbeType] = field(default_factory=lambda: list(PROBE_TYPES))
    """Probe types to fit on every hook (subset of PROBE_TYPES)."""
    n_folds: int = 5
    """Cross-validation folds inside the train split, grouped by template_id."""
    hooks: list[str] | None = None
    """Hooks to sweep; None = every hook of the store."""
    embed_hook: str | None = None
    """Hook holding the embedding-layer activations (e.g. 'embed', 'resid_pre.0'):
    swept like the others but reported as a baseline, excluded from the
    operating-point choice and from the multiple-comparison family."""
    n_random_directions: int = 5
    """Random unit directions (standardised coordinates) scored per hook as a baseline."""
    n_shuffles: int = 1
    """Probes refitted on permuted train labels per hook and type (selectivity = real - shuffled AUROC).
    One refit is cheap (+1 problem in the batch) but its AUROC is noisy (~+-0.05 at 700 test rows);
    raise it when selectivity decides something."""
    n_boot: int = 1000
    """Bootstrap resamples (by template_id cluster) for test-AUROC confidence intervals."""
    n_perm: int = 1000
    """Label permutations for the test-AUROC p-value (see metrics.permute_labels)."""
    ci_level: float = 0.95
    """Confidence level of the bootstrap intervals."""
    target_fpr: float = 0.01
    """False-positive rate the operating threshold is calibrated to (on control rows, else val negatives)."""
    select_by: Literal["auroc", "auprc"] = "auroc"
    """Validation metric that picks the operating point: 'auroc' or 'auprc'."""
    drop_nan: bool = False
    """Drop rows with NaN/inf in any hook instead of raising."""
    seed: int = 0
    """Seed for folds, shuffles, random directions, bootstrap and permutations."""
    device: str | None = None
    """Device to fit on; None = the device of the first hook's tensor."""
    max_chunk_bytes: int = 2 << 30
    """Memory budget that decides how many layers are fitted together in one batch."""
    fit: FitConfig = field(default_factory=FitConfig)
    """How each probe is fitted."""

    def __post_init__(self) -> None:
        self.probe_types = list(self.probe_types)
        if not self.probe_types:
            raise ProbeError(f"probe_types is empty; choose from {', '.join(PROBE_TYPES)}")
        if self.n_folds < 2:
            raise ProbeError(f"n_folds={self.n_folds} must be >= 2 for grouped cross-validation")
        if self.hooks is not None:
            self.hooks = list(self.hooks)
        for name in ("n_random_directions", "n_shuffles", "n_boot", "n_perm"):
            if getattr(self, name) < 0:
                raise ProbeError(f"SweepConfig.{name} must be >= 0")
        if not 0 < self.ci_level < 1 or not 0 < self.target_fpr < 1:
            raise ProbeError("SweepConfig.ci_level and target_fpr must be in (0, 1)")
        if isinstance(self.fit, dict):
            self.fit = FitConfig(**self.fit)

    @classmethod
    def from_overrides(cls, base: SweepConfig | None, overrides: dict) -> SweepConfig:
        """``base`` (or defaults) with keyword overrides; unknown keys raise a ProbeError naming the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ProbeError(f"unknown sweep option(s) {unknown}; valid options are {sorted(names)}")
        values = {f.name: getattr(base, f.name) for f in fields(cls)} if base is not None else {}
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["fit"] = self.fit.to_dict()
        d["probe_types"] = list(self.probe_types)
        d["hooks"] = list(self.hooks) if self.hooks is not None else None
        return d
