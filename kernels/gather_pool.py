"""Per-hook gather/pool of token positions, downcast, and per-slot moments.

This is the step of extraction that runs once per hook per batch, on the
device, while the forward pass is still going (``capture_hf``'s callback):

    acts_BTD (model dtype, right-padded batch)
      -> out_BPD  (store dtype; slot p of row b pools tokens [start, end))
      -> count_P, mean_PD, m2_PD  (fp32 moments of the *un-rounded* pooled values,
                                   over rows whose slot is valid and finite)
      -> nonfinite_BP             (non-finite values per row and valid slot)

Position spec: every position kind the engine offers is a set of token spans
per row, so the one signature covers them all:

- ``last_prompt_token``, ``token:<marker>``: one span of length 1;
- ``last_k:N``: N spans of length 1 (P = N);
- ``mean_response`` / ``mean_prompt``: one span of the response / prompt;
- ``all_tokens``: P = T spans of length 1, empty (start == end) past a row's end.

An empty span is "no value": its output is 0 and it is left out of the moments.
The engine calls this once per hook per batch with every row position of the
config as slots (e.g. P = 1 + 1 for last_prompt_token + mean_response), and
once more for ``all_tokens``.

Layout (Triton will follow it): ``starts_BP``/``ends_BP`` int64 on the device of
``acts_BTD``; ``out_BPD`` contiguous in ``out_dtype``; moments in fp32.

Trade-offs in the reference:

- ``max_span`` (a host-side upper bound on ``ends - starts``, which the engine
  knows because it computes spans on the host) picks the code path without a
  device sync: 1 gathers one token per slot; more gathers the span's tokens
  into ``[B, P, max_span, D]``, masks and sums in fp32. Cost and memory scale
  with B*P*max_span*D, not B*T*D: a response mean touches only response
  tokens (a long ``mean_prompt`` span widens every slot of the call: transient
  B*P*T*D fp32). Measured on H100 (Gemma-3-270M shape, bf16, 32k-token batches), the
  first version (a W_BPT matrix times ``acts.float()``) spent 18 % of all GPU
  time casting whole activations to fp32, and let a NaN outside a span leak
  into it (0 * NaN); the masked gather does neither.
- Moments are two-pass within the call (mean, then squared deviations); the
  caller merges calls with Chan's formula (``undertow.activations.stats``).
- ~20 small kernels per call: launch-bound on a GPU with a small model, which
  is what the fused Triton kernel is for.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor


class Pooled(NamedTuple):
    """Output of one gather/pool step."""

    out_BPD: Tensor
    """Pooled activations in the store dtype; empty spans hold 0."""
    count_P: Tensor
    """int64: rows whose slot p is non-empty and all-finite (the moments' sample size)."""
    mean_PD: Tensor
    """fp32 mean of those rows' pooled vectors, per slot."""
    m2_PD: Tensor
    """fp32 sum of squared deviations from ``mean_PD`` (Welford's M2), per slot."""
    nonfinite_BP: Tensor
    """int64: non-finite values in the pooled vector of row b, slot p (0 for empty spans)."""


def _span_mean(acts_BTD: Tensor, starts_BP: Tensor, lengths_BP: Tensor, max_span: int) -> Tensor:
    """fp32 mean of each span, via a masked gather of at most ``max_span`` tokens per slot."""
    B, T, D = acts_BTD.shape
    P = starts_BP.shape[1]
    offs_L = torch.arange(max_span, device=acts_BTD.device)
    inside_BPL = offs_L < lengths_BP[..., None]
    idx_BPL = (starts_BP[..., None] + offs_L).clamp(0, T - 1)
    tokens_BPLD = torch.gather(acts_BTD, 1, idx_BPL.view(B, P * max_span, 1).expand(B, P * max_span, D))
    tokens_BPLD = torch.where(inside_BPL.view(B, P * max_span, 1), tokens_BPLD.float(), 0.0).view(B, P, max_span, D)
    return tokens_BPLD.sum(2) / lengths_BP.clamp(min=1)[..., None].float()


def gather_pool_ref(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype,
                    max_span: int | None = None) -> Pooled:
    """Pure-torch reference: pool ``acts_BTD[b, starts_BP[b,p]:ends_BP[b,p]]`` per slot.

    ``max_span`` bounds ``ends - starts`` (None: computed, a device sync on CUDA).
    """
    B, T, D = acts_BTD.shape
    lengths_BP = ends_BP - starts_BP
    valid_BP = lengths_BP > 0
    if max_span is None:
        max_span = int(lengths_BP.max()) if lengths_BP.numel() else 1
    if max_span <= 1:
        idx_BP = starts_BP.clamp(0, T - 1)
        pooled_BPD = torch.gather(acts_BTD, 1, idx_BP[..., None].expand(B, -1, D)).float()
        pooled_BPD = torch.where(valid_BP[..., None], pooled_BPD, 0.0)
    else:
        pooled_BPD = _span_mean(acts_BTD, starts_BP, lengths_BP, max_span)
    finite_BPD = torch.isfinite(pooled_BPD)
    nonfinite_BP = (~finite_BPD).sum(dim=-1)
    keep_BP = valid_BP & finite_BPD.all(dim=-1)
    count_P = keep_BP.sum(dim=0)
    x_BPD = torch.where(keep_BP[..., None], pooled_BPD, 0.0)
    mean_PD = x_BPD.sum(dim=0) / count_P.clamp(min=1)[:, None].float()
    dev_BPD = torch.where(keep_BP[..., None], x_BPD - mean_PD, 0.0)
    m2_PD = (dev_BPD * dev_BPD).sum(dim=0)
    return Pooled(pooled_BPD.to(out_dtype), count_P, mean_PD, m2_PD, nonfinite_BP)


_IMPLS = {"ref": gather_pool_ref}
"""Implementations by name. The fused Triton kernel registers here as "triton"
(its own issue); until then every device uses the reference."""


def _pick_impl(device: torch.device) -> str:
    forced = os.environ.get("UNDERTOW_GATHER_POOL", "auto")
    if forced == "auto":
        return "triton" if device.type == "cuda" and "triton" in _IMPLS else "ref"
    if forced not in _IMPLS:
        raise ValueError(f"UNDERTOW_GATHER_POOL={forced!r}: available implementations are auto, {', '.join(_IMPLS)}")
    return forced


def gather_pool(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype,
                max_span: int | None = None) -> Pooled:
    """Dispatcher the engine calls: Triton on CUDA when registered, else the reference.

    ``UNDERTOW_GATHER_POOL=ref|triton|auto`` forces a choice.
    """
    return _IMPLS[_pick_impl(acts_BTD.device)](acts_BTD, starts_BP, ends_BP, out_dtype, max_span)
