"""Shared helpers for the probes tests (a uniquely named module: tests/ has no __init__.py)."""

import torch


def planted(n=400, d=8, shift=1.0, seed=0, dtype=torch.float64):
    """Gaussian classes separated along e_0 by ``shift``; anisotropic scales; offset mean."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.4).to(dtype)
    x = torch.randn(n, d, generator=g, dtype=dtype) * torch.linspace(0.5, 3.0, d, dtype=dtype) + 2.0
    x[:, 0] += shift * y
    return x, y


def sweep_once(store, **kw):
    from undertow.probes import sweep

    kw.setdefault("embed_hook", "embed")
    kw.setdefault("n_boot", 200)
    kw.setdefault("n_perm", 200)
    kw.setdefault("lexical_auroc", 0.6)
    return sweep(store, **kw)
