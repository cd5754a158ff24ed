"""Every hook of one batch pooled together: per hook only the gather, the rest once per batch.

The engine's row positions (all slots of the config but ``all_tokens``) for all H hooks of a batch.
``add(hook, acts_BTD)``, as the forward reaches each hook, pools that hook's slots; ``finish()`` returns
one ``Pooled`` for all hooks with a leading hook axis (``out_HBPD``, ``count_HP``, ``mean_HPD``,
``m2_HPD``, ``nonfinite_HBP``), the same values bit for bit as one ``gather_pool`` call per hook
(``tests/kernels/test_batch_pool.py``), in fewer launches:

- reference: the batch's ``span_index`` once (per device), per hook a gather, a masked sum and a divide,
  then the non-finite counts, the moments and the downcast of all hooks at once (``finish_ref`` over
  ``[H, B, P, D]``). Holds the batch's pooled fp32 slots of every hook until ``finish`` (H x B x P x D x
  4 bytes: 1.5 MB for Gemma-3-270M at batch 16, 268 MB for an 8B model, 32 layers x 256 rows x 2 slots),
  never more than one hook's activations.
- Triton: per hook the pool kernel writes straight into the batch's buffers (one launch); one merge
  launch for all H x P slots per batch. ``gather_pool`` per hook was two launches and four fills.

measured (``scripts/bench_launches.py``, record ``scripts/results/bench_launches.json``; CPU, reference,
Gemma-3-270M config at 4 layers, bf16, 2 row positions, batch 16): the engine's extra launches per batch
beyond the bare forward were 129 before (32 per hook), 44 after (22 of them pooling).

A hook whose activations sit on another device (a device-mapped model, ``activations/models/placement.py``) is
pooled there and its small results moved to the batch's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .gather_pool import (
    Partials,
    Pooled,
    SpanIndex,
    _pick_impl,
    _rows_per_program,
    alloc_pooled,
    finish_ref,
    launch_merge,
    launch_pool,
    partials,
    pool_slots,
    span_index,
)


class BatchPool:
    """Slots ``[starts_BP, ends_BP)`` (int64 on ``device``; spans at most ``max_span`` long) of every hook in
    ``hooks``, pooled into ``out_dtype``: ``add`` each hook once, then ``finish``."""

    def __init__(self, hooks: Sequence[str], starts_BP: Tensor, ends_BP: Tensor, max_span: int,
                 out_dtype: torch.dtype, device: torch.device):
        self.hooks = list(hooks)
        self.slot = {h: i for i, h in enumerate(self.hooks)}
        self.starts_BP, self.ends_BP = starts_BP.contiguous(), ends_BP.contiguous()
        self.max_span = max_span
        self.out_dtype = out_dtype
        self.device = device
        self.impl = _pick_impl(device)
        self._spans: dict[torch.device, tuple[Tensor, Tensor]] = {device: (self.starts_BP, self.ends_BP)}
        self._index: dict[tuple[torch.device, int], SpanIndex] = {}
        self._pooled: list[Tensor | None] = [None] * len(self.hooks)  # reference: fp32 [B, P, D] per hook
        self._buffers: tuple[Pooled, Partials] | None = None  # Triton: outputs and partials of all hooks
        self._added = [False] * len(self.hooks)

    def _spans_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._spans:
            self._spans[device] = (self.starts_BP.to(device), self.ends_BP.to(device))
        return self._spans[device]

    def index(self, device: torch.device, T: int) -> SpanIndex:
        """The ``span_index`` on ``device`` for ``T``-token activations, built once per batch."""
        if (device, T) not in self._index:
            self._index[device, T] = span_index(*self._spans_on(device), self.max_span, T)
        return self._index[device, T]

    def add(self, hook: str, acts_BTD: Tensor) -> None:
        h = self.slot[hook]
        if self.impl == "triton":
            return self._add_triton(h, acts_BTD)
        pooled_BPD = pool_slots(acts_BTD, self.index(acts_BTD.device, acts_BTD.shape[1]))
        self._pooled[h] = pooled_BPD if acts_BTD.device == self.device else pooled_BPD.to(self.device, non_blocking=True)

    def _add_triton(self, h: int, acts_BTD: Tensor) -> None:
        if _pick_impl(acts_BTD.device) != "triton":  # a hook off the GPUs of a Triton batch (no such device map)
            acts_BTD = acts_BTD.to(self.device)
        B, P = self.starts_BP.shape
        D = acts_BTD.shape[2]
        rows = _rows_per_program(B, P)
        if self._buffers is None:
            self._buffers = (alloc_pooled((len(self.hooks),), B, P, D, self.out_dtype, self.device),
                             partials(len(self.hooks) * P, math.ceil(B / rows), D, self.device))
        out, parts = self._buffers
        here = acts_BTD.device
        hook_parts = Partials(*(t.view(len(self.hooks), P, *t.shape[1:])[h] for t in parts))  # slots h*P..h*P+P-1
        if here == self.device:
            launch_pool(acts_BTD, self.starts_BP, self.ends_BP, out.out_BPD[h], out.nonfinite_BP[h], hook_parts, rows)
        else:
            local_out = torch.empty((B, P, D), dtype=self.out_dtype, device=here)
            local_nf = torch.empty((B, P), dtype=torch.int64, device=here)
            local_parts = partials(P, hook_parts.n_SN.shape[1], D, here)
            launch_pool(acts_BTD, *self._spans_on(here), local_out, local_nf, local_parts, rows)
            for dst, src in zip((out.out_BPD[h], out.nonfinite_BP[h], *hook_parts), (local_out, local_nf, *local_parts),
                                strict=True):
                dst.copy_(src, non_blocking=True)
        self._added[h] = True

    def finish(self) -> Pooled:
        """``Pooled`` of every hook, leading axis in ``hooks`` order, on the batch's device."""
        added = self._added if self.impl == "triton" else [p is not None for p in self._pooled]
        missing = [hook for hook, done in zip(self.hooks, added, strict=True) if not done]
        if missing:
            raise RuntimeError(f"BatchPool.finish before every hook was added (missing {', '.join(missing)})")
        if self.impl == "triton":
            out, parts = self._buffers
            H, P = out.count_P.shape
            launch_merge(parts, out.count_P.view(H * P), out.mean_PD.view(H * P, -1), out.m2_PD.view(H * P, -1))
            return out
        valid_BP = next((ix.valid_BP for (dev, _), ix in self._index.items() if dev == self.device), None)
        if valid_BP is None:  # every hook was on another device
            valid_BP = self.ends_BP > self.starts_BP
        return finish_ref(torch.stack(self._pooled), valid_BP, self.out_dtype)
