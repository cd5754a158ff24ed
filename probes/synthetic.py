"""Synthetic activation stores with a planted direction, for tests, benchmarks and docs.

Each row belongs to a template (rows of one template share a nuisance offset:
the leak grouped folds guard against) and a theme. Activations per layer are

    x = mu_l + template_offset + low_rank_noise + iso_noise + strength_l * (label - 1/2) * u_{l,theme}

plus two "massive" dimensions with large mean and variance (as real residual
streams have). ``strength_l`` peaks at ~60 % depth; ``u`` drifts slowly across
layers and tilts per theme, so cross-theme transfer is good but imperfect.
The ``embed`` hook carries only a weak lexical signal on another direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .folds import make_splits

__all__ = ["SyntheticStore", "make_synthetic", "planted_strengths"]


@dataclass
class SyntheticStore:
    """An in-memory :class:`~undertow.probes.store.ActivationSource` (``acts`` keyed by hook)."""

    acts: dict[str, Tensor]
    rows: dict[str, np.ndarray]
    strengths: dict[str, float]
    """Planted signal strength per hook (in noise-std units)."""
    model_fingerprint: str = "synthetic:0"

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    def __getitem__(self, hook: str) -> Tensor:
        return self.acts[hook]


def planted_strengths(n_layers: int, peak: float = 1.5) -> list[float]:
    """Bell-shaped signal strength over depth: ~0 early, ``peak`` at 60 % depth."""
    return [peak * math.exp(-(((i + 1) / n_layers - 0.6) / 0.25) ** 2) for i in range(n_layers)]


def _rows(n: int, n_templates: int, n_themes: int, pure_frac: float, g: torch.Generator):
    template = torch.arange(n) * n_templates // n
    theme = template % n_themes
    pure = torch.rand(n_templates, generator=g) < pure_frac
    pure_label = (torch.rand(n_templates, generator=g) < 0.5).long()
    mixed = torch.randint(0, 2, (n,), generator=g)
    label = torch.where(pure[template], pure_label[template], mixed)
    return template, theme, label


def make_synthetic(n_rows: int = 2000, n_layers: int = 6, d_model: int = 64, *, n_templates: int = 100,
                   n_themes: int = 4, peak: float = 1.5, strengths: list[float] | None = None, embed: bool = True,
                   pure_frac: float = 0.5, n_control: int = 0, rank: int = 16, seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> SyntheticStore:
    """A store with hooks ``embed`` (optional) and ``resid_post.{i}``; rows have label/template_id/theme/split."""
    g = torch.Generator().manual_seed(seed)
    n = n_rows + n_control
    template, theme, label = _rows(n_rows, n_templates, n_themes, pure_frac, g)
    if n_control:  # extra negatives from their own templates
        template = torch.cat([template, n_templates + torch.arange(n_control) * max(1, n_templates // 4) // n_control])
        theme = torch.cat([theme, torch.arange(n_control) % n_themes])
        label = torch.cat([label, torch.zeros(n_control, dtype=torch.long)])
    strengths = list(strengths) if strengths is not None else planted_strengths(n_layers, peak)
    u = torch.randn(d_model, generator=g)
    tilt = torch.randn(n_themes, d_model, generator=g)
    t_off = 0.5 * torch.randn(int(template.max()) + 1, d_model, generator=g)
    acts: dict[str, Tensor] = {}
    hooks = (["embed"] if embed else []) + [f"resid_post.{i}" for i in range(n_layers)]
    s_list = ([0.3] if embed else []) + strengths
    for hook, s in zip(hooks, s_list, strict=True):
        u = u + 0.3 * torch.randn(d_model, generator=g)  # slow drift over depth
        dir_ = u + 0.6 * tilt if hook != "embed" else torch.randn(d_model, generator=g).expand(n_themes, -1)
        dir_ = dir_ / dir_.norm(dim=-1, keepdim=True)
        U = torch.randn(d_model, rank, generator=g) / math.sqrt(rank)
        x = torch.randn(n, rank, generator=g) @ (2.0 * U.T) + torch.randn(n, d_model, generator=g)
        x += t_off[template] + torch.randn(d_model, generator=g)
        x[:, :2] = 30.0 + 3.0 * x[:, :2]  # massive activations
        x += s * (label.to(x.dtype) - 0.5).unsqueeze(1) * 2.0 * dir_[theme]
        acts[hook] = x.to(dtype)
    split = np.empty(n, dtype=object)
    split[:n_rows] = make_splits(label[:n_rows].numpy(), template[:n_rows].numpy(), seed=seed)
    split[n_rows:] = "control"
    rows = {"label": label.numpy(), "template_id": template.numpy(), "theme": theme.numpy().astype(str),
            "split": split.astype(str)}
    return SyntheticStore(acts, rows, dict(zip(hooks, s_list, strict=True)))
