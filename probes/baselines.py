"""Controls that run beside every probe fit.

- **Random directions**: unit vectors drawn isotropically in *standardised*
  coordinates (so no dimension dominates by scale), scored on held-out rows.
  A random direction's sign is arbitrary, so its AUROC is reported sign-free,
  ``0.5 + |AUROC - 0.5|``: the conservative reading (what a lucky pick could reach).
- **Shuffled labels** (control task, Hewitt & Liang 2019): the same probe refitted on
  permuted train labels (cluster-respecting, see ``metrics.permute_labels``) and scored
  against the real held-out labels; *selectivity* = real AUROC - shuffled AUROC.
- **Embedding layer**: the caller names the hook (``SweepConfig.embed_hook``); it is swept
  like every layer and its AUROC is subtracted (``delta_vs_embed``): a signal already
  linearly present in token embeddings is lexical, not a representation the model built.
- **Lexical baseline**: computed by the caller (e.g. ``undertow.experiments.prompts.audit.
  lexical_baseline_auroc`` on the prompt texts) and passed in as a number, a zero-argument
  callable, or its result object (``.mean`` is read); ``probes`` never imports ``experiments``.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from .errors import ProbeError
from .metrics import auroc, permute_labels

__all__ = ["random_direction_auroc", "shuffled_label_sets", "sign_free", "resolve_lexical"]


def sign_free(auroc_values: Tensor) -> Tensor:
    """``0.5 + |AUROC - 0.5|``: the AUROC of the better of a direction and its negation."""
    return 0.5 + (auroc_values - 0.5).abs()


def random_direction_auroc(X_std_LND: Tensor, labels_N: Tensor, n_dirs: int, seeds: list[int]) -> Tensor:
    """Sign-free AUROC [L, n_dirs] of random unit directions, drawn per layer from ``seeds[l]``."""
    D = X_std_LND.shape[2]
    dirs = torch.stack([torch.randn(n_dirs, D, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                        for s in seeds]).to(X_std_LND)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    scores = torch.bmm(dirs, X_std_LND.transpose(1, 2))  # [L, R, N]
    return sign_free(auroc(scores, labels_N.to(scores)))


def shuffled_label_sets(labels_N: Tensor, groups_N: Tensor, n_shuffles: int, seed: int = 0) -> Tensor:
    """[n_shuffles, N] permuted train labels for the control-task refits."""
    g = torch.Generator().manual_seed(seed + 7919)
    return permute_labels(labels_N, groups_N, n_shuffles, g).to(labels_N.dtype)


def resolve_lexical(lexical) -> float | None:
    """The lexical-baseline AUROC as a float, from a number, a zero-argument callable returning one,
    or a result object with a numeric ``auroc`` or ``mean`` attribute (e.g. the experiments'
    ``LexicalAUROC``; duck-typed so ``probes`` never imports ``experiments``)."""
    if lexical is None:
        return None
    value = lexical
    if callable(value) and not isinstance(value, numbers.Real):
        value = value()
    if not isinstance(value, numbers.Real):
        value = next((getattr(value, a) for a in ("auroc", "mean")
                      if isinstance(getattr(value, a, None), numbers.Real)), value)
    if not isinstance(value, numbers.Real):
        raise ProbeError(f"lexical_auroc must be a number, a callable returning one, or an object with an "
                         f"'auroc'/'mean' attribute; got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ProbeError(f"lexical_auroc={value} is not an AUROC in [0, 1]; pass the baseline's AUROC")
    return value
