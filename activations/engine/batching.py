"""Length-bucketed batches under a token budget, and right-padded batch tensors.

Within a shard, rows are sorted by length (longest first, ties by row index:
deterministic) and cut greedily into batches with ``rows x longest <=
token_budget`` and ``rows <= batch_size``. Longest first means an
out-of-memory shows on the first batch, not after an hour. Measured on
Gemma-3-270M, 2 CPU cores (NOTES.md): per-prompt left-padded batches of 16
reached 0.53x the real-token throughput of packed windows; sorted buckets
leave a few % padding on suite-like length spreads.

On the CPU the engine runs a batch's rows packed end to end instead
(``ExtractConfig.layout``, ``activations/models/packed.py``): the same batches,
no padded token through the projections and MLPs.

Padding side: right. A causal HF body then sees each row's real tokens at
positions 0..len-1, exactly as unpadded (HF derives position ids from
``cache_position``, not from the mask), and a row's token t sits at batch
column t, so position spans need no shift. Left padding would shift every
span by ``T - len`` and needs explicit ``position_ids`` (cumsum of the mask)
to keep rotary positions right; only the prompt pass of shared-prompt
batches uses it (``shared_prompts.py``), so replies follow their prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def cut_longest_first(lengths: Sequence[int], fits: Callable[[int, int], bool]) -> list[list[int]]:
    """Partition ``range(len(lengths))``: sort longest first (ties by index: deterministic), then cut greedily,
    a batch growing while ``fits(rows, longest)`` holds (longest = its first item). An item that fits
    nowhere runs alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and not fits(len(current) + 1, lengths[current[0]]):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def bucket_batches(lengths: Sequence[int], batch_size: int, token_budget: int) -> list[list[int]]:
    """Partition ``range(len(lengths))`` into batches (lists of indices), longest first."""
    return cut_longest_first(lengths, lambda rows, longest: rows <= batch_size and rows * longest <= token_budget)


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, pin: bool = False) -> tuple[Tensor, Tensor]:
    """``(input_ids_BT, attention_mask_BT)`` int64, right-padded to the longest sequence."""
    T = max(len(s) for s in seqs)
    ids_BT = torch.full((len(seqs), T), pad_id, dtype=torch.long, pin_memory=pin)
    mask_BT = torch.zeros((len(seqs), T), dtype=torch.long, pin_memory=pin)
    for b, s in enumerate(seqs):
        ids_BT[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask_BT[b, : len(s)] = 1
    return ids_BT, mask_BT


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded tokens in these batches (0 = none)."""
    real = sum(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - real / padded if padded else 0.0


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """``(input_ids_BT, attention_mask_BT)`` int64, left-padded to the longest sequence."""
    T = max(len(s) for s in seqs)
    ids_BT = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask_BT = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        if len(s):
            ids_BT[b, T - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask_BT[b, T - len(s):] = 1
    return ids_BT, mask_BT
