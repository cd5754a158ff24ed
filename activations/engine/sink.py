"""Collect one shard's pooled outputs on the host, in row order, while the device keeps running.

Per batch, the row positions of every hook arrive as one ``BatchPool`` (``undertow.kernels.batch_pool``),
opened by ``start_batch`` and finished when the next batch starts (or at ``finish()``): its pooled
``out_HBPD`` (every hook, every row position as slots) is copied to a pinned host buffer with
``non_blocking=True`` (CUDA) in one copy; its non-finite counts and moments stay on the device. An
``all_tokens`` output arrives per hook (``put_tokens``): its values staged the same way, its per-row
non-finite counts summed on the device. ``finish()`` synchronises once per shard, moves the non-finite
counts to the host in one copy per hook group, slices the keys out of the slots, restores dataset order
with one ``index_select`` per key, merges all the batches' moments per key in one vectorised Chan merge,
and moves every key's moments to the host in two copies. Measured on H100 (Gemma-3-270M shape, bf16,
4,096 prompts, 36 keys): the first version scattered every batch into the shard buffers with
``index_copy_`` as its CUDA event completed and merged moments per batch and key; host-side
``index_copy_`` alone took 0.72 s of a 3.3 s run, and the per-batch merges ~1,000 kernel launches per batch.

measured (``scripts/bench_launches.py``, CPU, Gemma-3-270M config at 4 layers, 8 keys): per shard
339 launches before (moments merges 240, shard finish 99), 126 after (96 + 30), and 24 device syncs before, 3 after; device-to-host copies per shard (CUDA) 3 per key before, 2 + 2 after, and per hook and
batch 2 staging copies before (values, non-finite counts), per batch 1 after.

Memory: the shard's pooled outputs are held twice at ``finish()`` (staged
parts + the ordered tensor), pinned on CUDA: size shards to fit (``shard_size``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from undertow.kernels.batch_pool import BatchPool

from ..store.stats import Moments


class ShardSink:
    """Pooled outputs of one shard: per batch one ``BatchPool`` of the row positions of every hook in
    ``hooks`` and one ``put_tokens`` per hook for ``all_tokens``; keys are sliced out of the slots at ``finish()``."""

    def __init__(self, n_rows: int, hooks: Sequence[str], row_keys: dict[str, tuple[str, slice, bool]],
                 token_keys: dict[str, str], d_model: int, out_dtype: torch.dtype, device: torch.device):
        """``row_keys[key] = (hook, slot slice, keep the slot axis)``; ``token_keys[key] = hook``."""
        self.n_rows = n_rows
        self.hook_index = {h: i for i, h in enumerate(hooks)}
        self.row_keys = dict(row_keys)
        self.token_keys = dict(token_keys)
        self.d_model = d_model
        self.out_dtype = out_dtype
        self.cuda = device.type == "cuda"
        self.device = device
        self._rows: list[Tensor] = []  # shard-local row indices of each batch, CPU int64
        self._lengths: list[list[int]] = []
        self._open: BatchPool | None = None
        self._row_parts: list[tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]] = []  # per batch, all hooks
        self._token_parts: dict[str, list[tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]]] = defaultdict(list)

    def _stage(self, t: Tensor) -> Tensor:
        if not self.cuda:
            return t
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        return host.copy_(t, non_blocking=True)

    def start_batch(self, rows_B: Tensor, lengths: Sequence[int], pool: BatchPool | None = None) -> None:
        """Open a batch (its shard-local rows, lengths and the ``BatchPool`` its hooks add to); closes the last."""
        self._close()
        self._rows.append(rows_B)
        self._lengths.append(list(lengths))
        self._open = pool

    def _close(self) -> None:
        if self._open is not None:
            p = self._open.finish()
            self._row_parts.append((self._stage(p.out_BPD), p.nonfinite_BP, (p.count_P, p.mean_PD, p.m2_PD)))
            self._open = None

    def put_tokens(self, hook: str, pooled) -> None:
        """This batch's ``gather_pool`` output of ``all_tokens`` for ``hook``."""
        moments = (pooled.count_P, pooled.mean_PD, pooled.m2_PD)  # stay on the device until finish()
        self._token_parts[hook].append((self._stage(pooled.out_BPD), pooled.nonfinite_BP.sum(1), moments))

    def _tokens(self, parts: list[Tensor]) -> Tensor:
        per_row: list[Tensor | None] = [None] * self.n_rows
        for rows_B, lengths, out_BTD in zip(self._rows, self._lengths, parts, strict=True):
            for b, (row, n) in enumerate(zip(rows_B.tolist(), lengths, strict=True)):
                per_row[row] = out_BTD[b, :n]
        return torch.cat(per_row) if per_row else torch.empty(0, self.d_model, dtype=self.out_dtype)

    def _values(self, outs: list[Tensor], inverse: Tensor) -> Tensor:
        return torch.cat(outs).index_select(0, inverse) if outs else torch.empty(0, self.d_model, dtype=self.out_dtype)

    def _nonfinite(self, nonfinite_N: Tensor | None, order: Tensor) -> Tensor:
        """Non-finite values per shard row from the per-row counts of the batches (in batch order; None: none)."""
        counts = torch.zeros(self.n_rows, dtype=torch.int64)
        return counts if nonfinite_N is None else counts.index_add_(0, order, nonfinite_N)

    @staticmethod
    def _moments(parts: list[tuple[Tensor, Tensor, Tensor]]) -> Moments | None:
        """Every batch's slot moments merged (on the device); None without batches."""
        return Moments.from_slots(*(torch.cat([m[i] for m in parts]) for i in range(3))) if parts else None

    def _moments_to_host(self, moments: dict[str, Moments | None]) -> dict[str, Moments]:
        """Every key's moments on the host in two copies (counts; means and M2s), not three per key."""
        live = [k for k, m in moments.items() if m is not None]
        if not live:
            return {k: Moments.zeros(self.d_model) for k in moments}
        counts_K = torch.stack([moments[k].count for k in live]).cpu()
        vecs_2KD = torch.stack([t for k in live for t in (moments[k].mean_D, moments[k].m2_D)]).cpu()
        return self._unstack(moments, live, counts_K, vecs_2KD)

    def _unstack(self, moments: dict, live: list[str], counts_K: Tensor, vecs_2KD: Tensor) -> dict[str, Moments]:
        """Host ``Moments`` per key, each tensor with its own storage (safetensors refuses tensors sharing one)."""
        out = {k: Moments(counts_K[i].clone(), vecs_2KD[2 * i].clone(), vecs_2KD[2 * i + 1].clone())
               for i, k in enumerate(live)}
        return {k: out[k] if k in out else Moments.zeros(self.d_model) for k in moments}

    def _row_nonfinite(self) -> Tensor | None:
        """Every hook's non-finite counts of the shard's batches ``[H, rows, P]`` on the host, in one copy."""
        return torch.cat([nf for _, nf, _ in self._row_parts], dim=1).cpu() if self._row_parts else None

    def finish(self) -> tuple[dict[str, Tensor], dict[str, Moments], dict[str, Tensor]]:
        """(tensors by key, moments by key, non-finite count per shard row by key), all on the host."""
        self._close()
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()
        order = torch.cat(self._rows) if self._rows else torch.empty(0, dtype=torch.long)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        out, moments, nonfinite = {}, {}, {}
        nonfinite_HNP = self._row_nonfinite()
        for key, (hook, sl, keep) in self.row_keys.items():
            h = self.hook_index[hook]
            out[key] = self._values([o[h][:, sl] if keep else o[h][:, sl.start] for o, _, _ in self._row_parts], inverse)
            nonfinite[key] = self._nonfinite(None if nonfinite_HNP is None else nonfinite_HNP[h][:, sl].sum(1), order)
            moments[key] = self._moments([tuple(t[h][sl] for t in m) for _, _, m in self._row_parts])
        for key, hook in self.token_keys.items():
            parts = self._token_parts[hook]
            out[key] = self._tokens([o for o, _, _ in parts])
            nonfinite[key] = self._nonfinite(torch.cat([nf for _, nf, _ in parts]).cpu() if parts else None, order)
            moments[key] = self._moments([m for _, _, m in parts])
        self._row_parts.clear()
        self._token_parts.clear()
        return out, self._moments_to_host(moments), nonfinite
