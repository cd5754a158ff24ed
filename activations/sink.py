"""Collect one shard's pooled outputs on the host, in row order, while the device keeps running.

Per batch and hook, ``put`` only queues work: the pooled ``out_BPD`` (every
row position of the hook as slots) and its non-finite counts are copied to
pinned host buffers with ``non_blocking=True`` (CUDA); the moments stay on
the device as they are. ``finish()`` synchronises once per shard, slices the
keys out of the slots, restores dataset order with one ``index_select`` per
key and merges all the batches' moments in one vectorised Chan merge.
Measured on H100 (Gemma-3-270M shape, bf16, 4,096 prompts, 36 keys): the
first version scattered every batch into the shard buffers with
``index_copy_`` as its CUDA event completed and merged moments per batch and
key; host-side ``index_copy_`` alone took 0.72 s of a 3.3 s run, and the
per-batch merges ~1,000 kernel launches per batch.

Memory: the shard's pooled outputs are held twice at ``finish()`` (staged
parts + the ordered tensor), pinned on CUDA: size shards to fit (``shard_size``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from .stats import Moments


class ShardSink:
    """Pooled outputs of one shard. Per hook and batch one ``put`` stages the whole ``out_BPD`` (all of
    the hook's row positions as slots) and one ``put_tokens`` the ``all_tokens`` output; keys are
    sliced out of the slots at ``finish()``."""

    def __init__(self, n_rows: int, row_keys: dict[str, tuple[str, slice, bool]], token_keys: dict[str, str],
                 d_model: int, out_dtype: torch.dtype, device: torch.device):
        """``row_keys[key] = (hook, slot slice, keep the slot axis)``; ``token_keys[key] = hook``."""
        self.n_rows = n_rows
        self.row_keys = dict(row_keys)
        self.token_keys = dict(token_keys)
        self.d_model = d_model
        self.out_dtype = out_dtype
        self.cuda = device.type == "cuda"
        self.device = device
        self._rows: list[Tensor] = []  # shard-local row indices of each batch, CPU int64
        self._lengths: list[list[int]] = []
        self._parts: dict[tuple[str, bool], list[tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]]] = defaultdict(list)

    def _stage(self, t: Tensor) -> Tensor:
        if not self.cuda:
            return t
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return host.copy_(t, non_blocking=True)

    def start_batch(self, rows_B: Tensor, lengths: Sequence[int]) -> None:
        self._rows.append(rows_B)
        self._lengths.append(list(lengths))

    def put(self, hook: str, pooled, tokens: bool = False) -> None:
        """This batch's ``gather_pool`` output for ``hook``: its row positions, or (``tokens``) all_tokens."""
        moments = (pooled.count_P, pooled.mean_PD, pooled.m2_PD)  # stay on the device until finish()
        self._parts[hook, tokens].append((self._stage(pooled.out_BPD), self._stage(pooled.nonfinite_BP), moments))

    def _tokens(self, parts: list[Tensor]) -> Tensor:
        per_row: list[Tensor | None] = [None] * self.n_rows
        for rows_B, lengths, out_BTD in zip(self._rows, self._lengths, parts, strict=True):
            for b, (row, n) in enumerate(zip(rows_B.tolist(), lengths, strict=True)):
                per_row[row] = out_BTD[b, :n]
        return torch.cat(per_row) if per_row else torch.empty(0, self.d_model, dtype=self.out_dtype)

    def _key(self, parts: list, sl: slice, keep: bool, order: Tensor, inverse: Tensor, tokens: bool):
        if tokens:
            out = self._tokens([o for o, _, _ in parts])
        else:
            outs = [o[:, sl] if keep else o[:, sl.start] for o, _, _ in parts]
            out = torch.cat(outs).index_select(0, inverse) if outs else torch.empty(0, self.d_model, dtype=self.out_dtype)
        counts = torch.zeros(self.n_rows, dtype=torch.int64)
        if parts:
            counts.index_add_(0, order, torch.cat([nf[:, sl].sum(1) for _, nf, _ in parts]))
        cols = [torch.cat([m[i][sl] for _, _, m in parts]) for i in range(3)] if parts else None
        return out, (Moments.from_slots(*cols).cpu() if cols else Moments.zeros(self.d_model)), counts

    def finish(self) -> tuple[dict[str, Tensor], dict[str, Moments], dict[str, Tensor]]:
        """(tensors by key, moments by key, non-finite count per shard row by key), all on the host."""
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        order = torch.cat(self._rows) if self._rows else torch.empty(0, dtype=torch.long)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        out, moments, nonfinite = {}, {}, {}
        layout = [(k, h, sl, keep, False) for k, (h, sl, keep) in self.row_keys.items()]
        layout += [(k, h, slice(None), False, True) for k, h in self.token_keys.items()]
        for key, hook, sl, keep, tokens in layout:
            out[key], moments[key], nonfinite[key] = self._key(self._parts[hook, tokens], sl, keep, order, inverse, tokens)
        self._parts.clear()
        return out, moments, nonfinite
