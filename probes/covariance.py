"""Ledoit-Wolf shrinkage intensity, batched over layers, from sufficient statistics.

Same estimator as ``sklearn.covariance.ledoit_wolf_shrinkage(Z, assume_centered=True)``
(tests check it to 1e-6), but written on the covariance ``C = Z^T Z / n`` and the
per-row squared norms ``||z_i||^2`` instead of ``Z`` itself, so cross-validation
folds can reuse one ``X^T X`` per fold block instead of re-reading the data.

    mu    = tr(C) / p
    delta = ||C - mu I||_F^2 / p
    beta  = (sum_i ||z_i||^4 / n - ||C||_F^2) / (p n),  clipped to <= delta
    alpha = beta / delta
    C_shrunk = (1 - alpha) C + alpha mu I
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ledoit_wolf_shrinkage", "shrink"]


def ledoit_wolf_shrinkage(cov_BDD: Tensor, sum_norm4_B: Tensor, n_B: Tensor) -> Tensor:
    """Shrinkage intensity ``alpha[B]`` in [0, 1] for covariances of centred data."""
    p = cov_BDD.shape[-1]
    trace = torch.diagonal(cov_BDD, dim1=-2, dim2=-1).sum(-1)
    mu = trace / p
    fro2 = (cov_BDD * cov_BDD).sum((-2, -1))
    delta = (fro2 - 2.0 * mu * trace + p * mu * mu) / p
    beta = (sum_norm4_B / n_B - fro2) / (p * n_B)
    beta = torch.minimum(beta, delta)
    return torch.where(delta > 0, beta / delta.clamp_min(torch.finfo(cov_BDD.dtype).tiny), 0.0).clamp(0.0, 1.0)


def shrink(cov_BDD: Tensor, alpha_B: Tensor) -> Tensor:
    """``(1 - alpha) C + alpha (tr C / p) I``."""
    p = cov_BDD.shape[-1]
    mu = torch.diagonal(cov_BDD, dim1=-2, dim2=-1).mean(-1)
    out = cov_BDD.mul(1.0 - alpha_B[..., None, None])
    torch.diagonal(out, dim1=-2, dim2=-1).add_((alpha_B * mu).unsqueeze(-1).expand(*mu.shape, p))
    return out
