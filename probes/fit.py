"""The three probe types, fitted for every layer and every problem at once.

All fits work in standardised coordinates ``x_std = (x - mean) / std`` (stats
of the rows being fitted) and return ``w[L, K, D], b[L, K]`` such that the
score of a row is ``x_std . w + b``: a logit for ``logistic``, a Platt-scaled
(hence also logit-like) projection for ``diff_means`` and ``lda``.

Costs on the benchmark (19 hooks x 3,520 train rows x 640 dims, 7 problems per
hook, 2 CPU cores, float32, one profiled run): the per-fold ``X^T X`` moments
0.6 s (shared by LDA and the logistic preconditioner), LDA covariances, Ledoit-Wolf
and Cholesky solves 1.2 s, logistic L-BFGS 1.3 s (14 iterations), diff-of-means
and both Platt scalings 0.2 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import FitConfig
from .covariance import ledoit_wolf_shrinkage, shrink
from .errors import ProbeError
from .problems import Prepared
from .solver import lbfgs

__all__ = ["LinearFit", "fit_diff_means", "fit_lda", "fit_logistic", "platt_scale", "fit_types"]


@dataclass
class LinearFit:
    """Linear scorers in standardised coordinates, one per (layer, problem)."""

    w_LKD: Tensor
    b_LK: Tensor
    converged_LK: Tensor
    """bool; always True for the closed-form types."""
    n_iter: int = 0
    """Solver iterations (logistic L-BFGS; Platt for the others)."""
    shrinkage_LK: Tensor | None = None
    """LDA covariance shrinkage used per problem."""


def fit_diff_means(prep: Prepared) -> Tensor:
    """Raw-space class-mean difference, expressed in standardised coordinates: ``w = std^2 * dmu_std``.

    (score = x_std . w = x . (w / std) + c, and w / std = std * dmu_std = dmu_raw.)
    """
    mu = prep.class_means
    return prep.raw_std.square().unsqueeze(1) * (mu[:, :, 1] - mu[:, :, 0])


def _lw_fourth_moments(prep: Prepared) -> Tensor:
    """``sum_i ||z_i||^4`` per (layer, problem), z = class-centred rows in the problem's own std units."""
    mu, inv_r2 = prep.class_means, prep.problem_std.reciprocal().square()  # [L,K,2,D], [L,K,D]
    X, y = prep.X, prep.problems.y_KN.T  # y [N, K]
    a = torch.bmm(prep.x2, inv_r2.transpose(1, 2))  # [L, N, K]
    b0 = torch.bmm(X, (mu[:, :, 0] * inv_r2).transpose(1, 2))
    b1 = torch.bmm(X, (mu[:, :, 1] * inv_r2).transpose(1, 2))
    c = (mu.square() * inv_r2.unsqueeze(2)).sum(-1)  # [L, K, 2]
    q = a - 2.0 * (y * b1 + (1 - y) * b0) + (y * c[:, None, :, 1] + (1 - y) * c[:, None, :, 0])
    return torch.einsum("lnk,kn->lk", q.square(), prep.problems.mask_KN.to(q.dtype))


def fit_lda(prep: Prepared, shrinkage: float | None = None) -> tuple[Tensor, Tensor]:
    """Shrinkage-LDA direction per (layer, problem): ``w = (S_shrunk)^-1 dmu`` in each problem's std units.

    S is the pooled within-class covariance (``sum_c sum_i (z_i - mu_c)(z_i - mu_c)^T / n``, as
    scikit-learn's LDA with priors-weighted class covariances), shrunk toward ``tr(S)/p I``
    by Ledoit-Wolf's intensity (or a fixed one). Returns (w [L, K, D], alpha [L, K]).
    """
    mu, r = prep.class_means, prep.problem_std
    n, n2 = prep.n_K, prep.n_K2
    norm4 = _lw_fourth_moments(prep) if shrinkage is None else None
    ws, alphas = [], []
    for k in range(prep.problems.K):
        U = mu[:, k].transpose(1, 2) * n2[k].sqrt()  # [L, D, 2]
        S = torch.baddbmm(prep.second_moment(k), U, U.transpose(1, 2), alpha=-1.0)  # within-class scatter
        rk = r[:, k]
        inv = rk.reciprocal() / n[k].sqrt()
        S.mul_(inv.unsqueeze(2)).mul_(inv.unsqueeze(1))  # covariance in the problem's own std units
        if shrinkage is None:
            alpha = ledoit_wolf_shrinkage(S, norm4[:, k], n[k])
        else:
            alpha = torch.full(S.shape[:1], float(shrinkage), dtype=S.dtype, device=S.device)
        u = _spd_solve(shrink(S, alpha), ((mu[:, k, 1] - mu[:, k, 0]) / rk).unsqueeze(-1)).squeeze(-1)
        ws.append(u / rk)
        alphas.append(alpha)
    return torch.stack(ws, 1), torch.stack(alphas, 1)


def _spd_solve(A_BDD: Tensor, b_BD1: Tensor) -> Tensor:
    """Cholesky solve; numerically singular batches (shrinkage 0, n < D, a constant hook) fall back to
    an eigendecomposition with eigenvalues floored at 1e-6 x max(largest, 1).

    The covariance is in standardised units (a healthy diagonal is ~1), so the absolute part of the
    floor only matters for a (near-)constant hook, e.g. the embedding at a fixed template token
    (``last_prompt_token`` of a chat template is always the same token): there A ~ 0 and a relative
    jitter is still ~0 (measured: Cholesky failed even with 1e-6 x mean-diagonal jitter).
    """
    chol, info = torch.linalg.cholesky_ex(A_BDD)
    if not bool((info != 0).any()):
        return torch.cholesky_solve(b_BD1, chol)
    evals_BD, evecs_BDD = torch.linalg.eigh(A_BDD)
    floor = 1e-6 * evals_BD.abs().amax(-1, keepdim=True).clamp_min(1.0)
    return evecs_BDD @ ((evecs_BDD.transpose(-1, -2) @ b_BD1) / evals_BD.clamp_min(floor).unsqueeze(-1))


def platt_scale(prep: Prepared, w_LKD: Tensor, l2: float, max_iter: int = 100) -> tuple[Tensor, Tensor, int]:
    """Fit score = a * (x . w) + c per problem by L2-penalised 1-D logistic regression on its train rows."""
    proj = torch.bmm(prep.X, w_LKD.transpose(1, 2))  # [L, N, K]
    wn = prep.weight_KN.T  # [N, K]
    mean = (proj * wn).sum(1, keepdim=True)
    sd = ((proj - mean).square() * wn).sum(1, keepdim=True).sqrt().clamp_min(1e-12)
    proj = (proj - mean) / sd  # unit-variance projections: the slope penalty is scale-free
    y = prep.problems.y_KN.T

    def fg(x: Tensor) -> tuple[Tensor, Tensor]:
        a, c = x[..., 0], x[..., 1]
        z = a.unsqueeze(1) * proj + c.unsqueeze(1)
        f = ((F.softplus(z) - y * z) * wn).sum(1) + 0.5 * l2 * a.square()
        res = (torch.sigmoid(z) - y) * wn
        return f, torch.stack([(res * proj).sum(1) + l2 * a, res.sum(1)], -1)

    prior = prep.n_K2[:, 1] / prep.n_K
    x0 = torch.stack([torch.zeros_like(proj[:, 0]), torch.logit(prior).expand_as(proj[:, 0])], -1)
    res = lbfgs(fg, x0, max_iter=max_iter, tol=1e-7 if proj.dtype == torch.float64 else 1e-5)
    a, c = res.x[..., 0], res.x[..., 1]
    scale = (a / sd.squeeze(1)).unsqueeze(-1)
    return w_LKD * scale, c - a * mean.squeeze(1) / sd.squeeze(1), res.n_iter


def fit_logistic(prep: Prepared, cfg: FitConfig, init: tuple[Tensor, Tensor] | None = None) -> LinearFit:
    """L2 logistic regression per (layer, problem) by batched L-BFGS, preconditioned by X^T X / 4n + l2 I."""
    X, wn, y = prep.X, prep.weight_KN.T, prep.problems.y_KN.T  # [L,N,D], [N,K], [N,K]
    L, _, D = X.shape
    pen = prep.problem_std.square()  # per-problem standardisation folded into the penalty

    def fg(x: Tensor) -> tuple[Tensor, Tensor]:
        v, b = x[..., :D], x[..., D]
        z = torch.bmm(X, v.transpose(1, 2)) + b.unsqueeze(1)  # [L, N, K]
        f = ((F.softplus(z) - y * z) * wn).sum(1) + 0.5 * cfg.l2 * (pen * v.square()).sum(-1)
        res = (torch.sigmoid(z) - y) * wn
        gv = torch.bmm(res.transpose(1, 2), X) + cfg.l2 * pen * v
        return f, torch.cat([gv, res.sum(1).unsqueeze(-1)], -1)

    eye = torch.eye(D, dtype=X.dtype, device=X.device)
    chol = torch.linalg.cholesky(prep.gram_all / 4.0 + cfg.l2 * eye)

    def precond(q: Tensor) -> Tensor:
        qv = torch.cholesky_solve(q[..., :D].transpose(1, 2), chol).transpose(1, 2)
        return torch.cat([qv, 4.0 * q[..., D:]], -1)

    if init is None:
        x0 = torch.zeros(L, prep.problems.K, D + 1, dtype=X.dtype, device=X.device)
        x0[..., D] = torch.logit(prep.n_K2[:, 1] / prep.n_K)
    else:
        x0 = torch.cat([init[0], init[1].unsqueeze(-1)], -1)
    res = lbfgs(fg, x0, precond=precond, max_iter=cfg.max_iter, tol=cfg.tol, history=cfg.history)
    return LinearFit(res.x[..., :D], res.x[..., D], res.converged, res.n_iter)


def fit_types(prep: Prepared, probe_types, cfg: FitConfig) -> dict[str, LinearFit]:
    """Fit each requested type on ``prep``; logistic warm-starts from Platt-scaled LDA when both are asked for."""
    out: dict[str, LinearFit] = {}
    ones = torch.ones(prep.X.shape[0], prep.problems.K, dtype=torch.bool, device=prep.X.device)
    for t in sorted(probe_types, key=lambda t: t == "logistic"):  # logistic last (warm start)
        if t == "diff_means":
            w, b, it = platt_scale(prep, fit_diff_means(prep), cfg.platt_l2)
            out[t] = LinearFit(w, b, ones, it)
        elif t == "lda":
            w, alpha = fit_lda(prep, cfg.shrinkage)
            w, b, it = platt_scale(prep, w, cfg.platt_l2)
            out[t] = LinearFit(w, b, ones, it, alpha)
        elif t == "logistic":
            init = (out["lda"].w_LKD, out["lda"].b_LK) if cfg.warm_start and "lda" in out else None
            out[t] = fit_logistic(prep, cfg, init)
        else:
            raise ProbeError(f"unknown probe type {t!r}; choose from diff_means, lda, logistic")
    return out
