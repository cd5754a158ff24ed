"""Batched L-BFGS: many independent smooth convex problems minimised in lock-step.

Every tensor has shape ``[*batch, P]``: one problem per batch index (e.g.
``[layers, problems]``), ``P`` parameters each. Each problem keeps its own
curvature pairs, step size (Armijo backtracking) and convergence flag, so a
slow layer never drags a fast one off its path, while the expensive part, the
objective (two batched matmuls over the activations), runs once per iteration
for all of them. Converged problems freeze (zero step).

An optional preconditioner plays the role of the initial inverse Hessian. For
logistic regression we pass the Gauss-Newton Hessian at w=0,
``X^T X / 4n + l2 I``, per layer. Measured on the benchmark data (3,520 train
rows x 640 dims x 19 hooks, 7 problems each, tol 1e-5, 2 CPU cores):

    l2      plain L-BFGS        preconditioned
    1e-2    57 it,  6.4 s       8 it,  0.9 s
    1e-3   100 it, 10.6 s      14 it,  1.2 s
    1e-4   125 it, 14.5 s      21 it,  1.8 s

The Cholesky factor costs ~0.05 s once; ``X^T X`` is shared with LDA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LbfgsResult", "lbfgs"]

Objective = Callable[[Tensor], tuple[Tensor, Tensor]]


@dataclass
class LbfgsResult:
    x: Tensor
    """[*batch, P] minimiser."""
    f: Tensor
    """[*batch] objective at x."""
    grad_max: Tensor
    """[*batch] max |gradient| at x."""
    converged: Tensor
    """[*batch] bool: gradient tolerance reached (or no further decrease possible in this dtype)."""
    n_iter: int


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def _direction(g, S, Y, rho, precond, gamma) -> Tensor:
    """Two-loop recursion, batched; pairs with rho=0 (failed curvature check) are no-ops."""
    q = g.clone()
    alphas = []
    for s, y, r in zip(reversed(S), reversed(Y), reversed(rho), strict=True):
        a = r * _dot(s, q)
        q -= a.unsqueeze(-1) * y
        alphas.append(a)
    q = precond(q) if precond is not None else q
    q = q * gamma.unsqueeze(-1)
    for s, y, r, a in zip(S, Y, rho, reversed(alphas), strict=True):
        b = r * _dot(y, q)
        q += (a - b).unsqueeze(-1) * s
    return -q


def _line_search(fg: Objective, x, f, d, gd, done, max_ls: int = 25, c1: float = 1e-4):
    """Per-problem Armijo backtracking; problems that never satisfy it keep x (and get flagged)."""
    t = torch.ones_like(f)
    for _ in range(max_ls):
        x_new = x + t.unsqueeze(-1) * d
        f_new, g_new = fg(x_new)
        ok = (f_new <= f + c1 * t * gd) | done
        if bool(ok.all()):
            return x_new, f_new, g_new, ok
        t = torch.where(ok, t, t * 0.5)
    return x_new, f_new, g_new, ok


def lbfgs(fg: Objective, x0: Tensor, *, precond: Callable[[Tensor], Tensor] | None = None,
          max_iter: int = 300, tol: float = 1e-5, history: int = 10) -> LbfgsResult:
    """Minimise each problem of ``fg`` from ``x0``; ``fg(x) -> (f[*batch], grad[*batch, P])``."""
    x = x0.clone()
    f, g = fg(x)
    S: list[Tensor] = []
    Y: list[Tensor] = []
    rho: list[Tensor] = []
    gamma = torch.ones_like(f)
    if precond is None:  # first step of plain gradient descent: unit length, as torch.optim.LBFGS does
        gamma = 1.0 / g.abs().sum(-1).clamp_min(1.0)
    stalled = torch.zeros_like(f, dtype=torch.bool)
    n_iter = 0
    while n_iter < max_iter:
        done = (g.abs().amax(-1) <= tol) | stalled
        if bool(done.all()):
            break
        n_iter += 1
        d = _direction(g, S, Y, rho, precond, gamma)
        gd = _dot(g, d)
        bad = gd >= 0  # not a descent direction (numerical trouble): restart from the preconditioned gradient
        if bool(bad.any()):
            d0 = -(precond(g) if precond is not None else g)
            d = torch.where(bad.unsqueeze(-1), d0, d)
            gd = _dot(g, d)
        d = torch.where(done.unsqueeze(-1), torch.zeros_like(d), d)
        gd = torch.where(done, torch.zeros_like(gd), gd)
        x_new, f_new, g_new, ok = _line_search(fg, x, f, d, gd, done)
        keep = (ok & ~done).unsqueeze(-1)
        s = torch.where(keep, x_new - x, torch.zeros_like(x))
        y = torch.where(keep, g_new - g, torch.zeros_like(g))
        sy = _dot(s, y)
        eps = torch.finfo(x.dtype).eps
        valid = sy > eps * _dot(y, y).clamp_min(eps)
        S.append(s)
        Y.append(y)
        rho.append(torch.where(valid, 1.0 / sy.clamp_min(eps), torch.zeros_like(sy)))
        if len(S) > history:
            S.pop(0), Y.pop(0), rho.pop(0)
        hy = precond(y) if precond is not None else y
        gamma = torch.where(valid, sy / _dot(y, hy).clamp_min(eps), gamma)
        decrease = f - f_new
        stalled = stalled | ~ok | (keep.squeeze(-1) & (decrease <= 4 * eps * f.abs().clamp_min(1.0)))
        x = torch.where(keep, x_new, x)
        f = torch.where(keep.squeeze(-1), f_new, f)
        g = torch.where(keep, g_new, g)
    gmax = g.abs().amax(-1)
    return LbfgsResult(x=x, f=f, grad_max=gmax, converged=(gmax <= tol) | stalled, n_iter=n_iter)
