"""Direct fitting on tensors: all layers of ``acts[L, N, D]`` at once, or one ``Probe`` from ``acts[N, D]``.

No folds, no controls: the building block for notebooks and for
:func:`~undertow.probes.generalisation.transfer`. Use :func:`~undertow.probes.sweep`
for a full study.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .artifact import Probe, hash_training_data
from .config import PROBE_TYPES, FitConfig
from .errors import ProbeError
from .fit import fit_types
from .problems import Prepared, ProblemSet, standardisation
from .store import _binary_labels

__all__ = ["LayerFit", "fit_layers", "fit_probe"]


@dataclass
class LayerFit:
    """One probe per layer; ``score = ((x - mean) / std) . weight + bias``."""

    probe_type: str
    weight_LD: Tensor
    bias_L: Tensor
    mean_LD: Tensor
    std_LD: Tensor
    converged_L: Tensor
    n_iter: int

    @property
    def w_eff_LD(self) -> Tensor:
        """Raw-space weights (normalisation folded in)."""
        return self.weight_LD / self.std_LD

    @property
    def b_eff_L(self) -> Tensor:
        return self.bias_L - (self.mean_LD * self.w_eff_LD).sum(-1)

    def score(self, acts_LND: Tensor) -> Tensor:
        """Scores [L, N] of each layer's probe on that layer's activations."""
        acts = torch.as_tensor(acts_LND).to(self.weight_LD)
        if acts.ndim != 3 or acts.shape[0] != self.weight_LD.shape[0] or acts.shape[2] != self.weight_LD.shape[1]:
            raise ProbeError(f"acts shape {tuple(acts.shape)} does not match the fit's [L={self.weight_LD.shape[0]}, "
                             f"N, D={self.weight_LD.shape[1]}]; pass the same layers and d_model")
        return torch.einsum("lnd,ld->ln", acts, self.w_eff_LD) + self.b_eff_L.unsqueeze(1)


def _check_acts(acts: Tensor, n: int) -> None:
    if acts.shape[-2] != n:
        raise ProbeError(f"activations have {acts.shape[-2]} rows but labels have {n}; align them row by row")
    if not bool(torch.isfinite(acts).all()):
        bad = (~torch.isfinite(acts)).flatten(0, -2).any(-1).sum()
        raise ProbeError(f"activations contain NaN/inf ({int(bad)} rows); drop those rows before fitting")


def fit_layers(acts_LND: Tensor, labels_N, probe_type: str = "logistic", *,
               config: FitConfig | None = None) -> LayerFit:
    """Fit ``probe_type`` on every layer of ``acts[L, N, D]`` in one batched call (standardised by the data)."""
    cfg = config or FitConfig()
    if probe_type not in PROBE_TYPES:
        raise ProbeError(f"unknown probe type {probe_type!r}; choose from {PROBE_TYPES}")
    acts = torch.as_tensor(acts_LND)
    if acts.ndim != 3:
        raise ProbeError(f"fit_layers needs acts [L, N, D]; got shape {tuple(acts.shape)} (use fit_probe for [N, D])")
    y = torch.as_tensor(_binary_labels(labels_N), dtype=cfg.dtype, device=acts.device)
    _check_acts(acts, len(y))
    X = acts.to(cfg.dtype)
    mean, std = standardisation(X)
    X = (X - mean.unsqueeze(1)) / std.unsqueeze(1)
    problems = ProblemSet(torch.ones(1, len(y), dtype=torch.bool, device=X.device), y[None], ["fit"])
    fit = fit_types(Prepared(X, problems, std), [probe_type], cfg)[probe_type]
    return LayerFit(probe_type, fit.w_LKD[:, 0], fit.b_LK[:, 0], mean, std, fit.converged_LK[:, 0], fit.n_iter)


def fit_probe(acts_ND: Tensor, labels_N, probe_type: str = "logistic", *, config: FitConfig | None = None,
              hook: str = "", model_fingerprint: str | None = None, position: str | None = None,
              threshold: float = 0.0) -> Probe:
    """One :class:`Probe` from ``acts[N, D]`` (threshold 0 = logit 0 unless given)."""
    acts = torch.as_tensor(acts_ND)
    if acts.ndim != 2:
        raise ProbeError(f"fit_probe needs acts [N, D]; got shape {tuple(acts.shape)}")
    cfg = config or FitConfig()
    fit = fit_layers(acts[None], labels_N, probe_type, config=cfg)
    return Probe(weight=fit.weight_LD[0], bias=fit.bias_L[0], mean=fit.mean_LD[0], std=fit.std_LD[0], hook=hook,
                 probe_type=probe_type, threshold=threshold, model_fingerprint=model_fingerprint, position=position,
                 training_data_hash=hash_training_data(acts, _binary_labels(labels_N)), config=cfg.to_dict(),
                 extra={"converged": bool(fit.converged_L[0]), "n_iter": fit.n_iter})
