"""Evaluate an SAE on held-out tokens, through sae-lens' own eval code.

- explained variance: sae-lens' ``ExplainedVarianceCalculator`` (1 - E||x - x_hat||^2 / Var(x), float64
  sums) over held-out store tokens, in batches;
- L0 (mean active features per token) and the dead-feature fraction (features that fire on none of the
  held-out tokens; with few tokens rare features read as dead, so the trainer's own count, features
  silent for ``dead_feature_window`` steps, is reported beside it when the SAE carries it);
- CE loss recovered: sae-lens' ``get_recons_loss`` on a TransformerLens model (the ``transformer_lens``
  backend of the same weights): clean vs SAE spliced in at the hook vs the hook zero-ablated, per token,
  special tokens (BOS/pad/EOS) excluded from the splice and the means as sae-lens' evals do;
  ``ce_loss_recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from sae_lens.evals import ExplainedVarianceCalculator, get_recons_loss
from sae_lens.training.activation_scaler import ActivationScaler
from torch import Tensor

from .errors import SAEError


@dataclass
class SAEEval:
    """Held-out quality of one SAE."""

    explained_variance: float
    """1 - MSE / total variance over the held-out tokens."""
    l0: float
    """Mean number of active features per held-out token."""
    dead_fraction: float
    """Fraction of features active on none of the held-out tokens."""
    n_tokens: int
    """Held-out tokens behind the three numbers above."""
    dead_fraction_train: float | None = None
    """sae-lens' count at the end of training (silent for ``dead_feature_window`` steps) / d_sae."""
    ce_clean: float | None = None
    """Mean next-token cross-entropy of the unmodified model."""
    ce_sae: float | None = None
    """... with the SAE's reconstruction spliced in at the hook."""
    ce_zero: float | None = None
    """... with the hook zero-ablated."""
    ce_loss_recovered: float | None = None
    """(ce_zero - ce_sae) / (ce_zero - ce_clean): 1 = lossless, 0 = as bad as ablation."""
    n_ce_tokens: int = 0
    """Tokens behind the CE numbers."""

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def reconstruction_metrics(sae, acts_ND: Tensor, batch: int = 4096) -> SAEEval:
    """Explained variance, L0 and dead fraction of ``sae`` on ``acts_ND`` (held-out tokens)."""
    if acts_ND.ndim != 2 or acts_ND.shape[1] != sae.cfg.d_in:
        raise SAEError(f"held-out activations have shape {tuple(acts_ND.shape)}; the SAE needs [N, {sae.cfg.d_in}]")
    sae.eval()
    ev = ExplainedVarianceCalculator()
    active_total, fired_F = 0.0, torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for lo in range(0, len(acts_ND), batch):
        x = acts_ND[lo:lo + batch].to(sae.device, sae.dtype)
        feats = sae.encode(x)
        ev.add_batch(sae_output=sae.decode(feats).float(), hidden_acts=x.float())
        active = feats != 0
        active_total += float(active.sum())
        fired_F |= active.any(0).cpu()
    n = len(acts_ND)
    dead_train = sae.cfg.metadata.get("num_dead_features")
    return SAEEval(explained_variance=ev.compute(), l0=active_total / max(n, 1),
                   dead_fraction=float((~fired_F).float().mean()), n_tokens=n,
                   dead_fraction_train=None if dead_train is None else dead_train / sae.cfg.d_sae)


def pack_tokens(tokenizer, rows, context: int, n_windows: int, template: str = "auto") -> Tensor:
    """``[n_windows, context]`` token ids: rows rendered as the store saw them, concatenated, cut into
    windows (each row starts with its own BOS, as in the store)."""
    from undertow.activations.engine.render import render_rows

    ids: list[int] = []
    for lo in range(0, len(rows), 64):
        ids.extend(t for r in render_rows(tokenizer, rows[lo:lo + 64], template) for t in r.ids)
        if len(ids) >= context * n_windows:
            break
    n = min(n_windows, len(ids) // context)
    if n == 0:
        raise SAEError(f"held-out rows give {len(ids)} tokens, fewer than one {context}-token window; hold out more rows")
    return torch.tensor(ids[:n * context]).view(n, context)


@torch.no_grad()
def ce_metrics(sae, tl_model, tokens_BT: Tensor, hook_name: str, batch: int = 1) -> dict:
    """sae-lens' ``get_recons_loss`` per batch of windows; token-weighted means, special tokens excluded."""
    ignore = sorted({t for t in (getattr(tl_model.tokenizer, a, None) for a in ("bos_token_id", "pad_token_id",
                                                                                 "eos_token_id")) if t is not None})
    sums = {"ce_loss_without_sae": 0.0, "ce_loss_with_sae": 0.0, "ce_loss_with_ablation": 0.0}
    count = 0
    for lo in range(0, len(tokens_BT), batch):
        toks = tokens_BT[lo:lo + batch].to(tl_model.cfg.device)
        out = get_recons_loss(sae, tl_model, ActivationScaler(), toks, compute_kl=False, compute_ce_loss=True,
                              ignore_tokens=ignore, hook_name=hook_name)
        keep = ~torch.isin(toks, torch.tensor(ignore, device=toks.device))[:, :-1]  # CE is per predicted token
        for k in sums:
            sums[k] += float(out[k][keep].sum())
        count += int(keep.sum())
    clean, spliced, zero = (sums[k] / max(count, 1) for k in sums)
    return {"ce_clean": clean, "ce_sae": spliced, "ce_zero": zero, "n_ce_tokens": count,
            "ce_loss_recovered": (zero - spliced) / (zero - clean) if zero != clean else float("nan")}


def evaluate_sae(sae, heldout_ND: Tensor, tl_model=None, tokens_BT: Tensor | None = None,
                 hook_name: str | None = None) -> SAEEval:
    """Reconstruction metrics on ``heldout_ND``; with a TransformerLens model and token windows, CE too."""
    result = reconstruction_metrics(sae, heldout_ND)
    if tl_model is not None and tokens_BT is not None:
        name = hook_name or sae.cfg.metadata.hook_name
        if not name:
            raise SAEError("the SAE's metadata has no hook_name; pass hook_name='blocks.L.hook_resid_post'")
        for k, v in ce_metrics(sae, tl_model, tokens_BT, name).items():
            setattr(result, k, v)
    return result
