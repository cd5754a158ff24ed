"""Packed rows: several sequences end to end in one row, each attending only to itself.

A right-padded batch runs every projection, norm and MLP on its pads too. Packed, the decoder runs them on real
tokens only: the sequences lie end to end in one ``[1, N]`` row with position ids restarting at 0 per sequence,
and only the attention sees them right-padded (``[S, H, L, d]``, gathered by index inside each layer, one
batched sdpa call), so every sequence gets exactly the scores of its own padded row. Measured (torch.profiler,
Gemma-3-270M fp32 on 2 CPU cores, 256 unique lm-survival-instinct rows in the engine's 17 length-bucketed
batches, 5.3% padding): matrix products are 87% of the forward and cost the same per token at any batch shape
(0.94 ms per 1,000 tokens padded, 0.93 packed into 128-token windows), so packing removes the padding's share of
them; the gathers cost 4 index ops per attention layer.

Users: the extraction engine's plain batches (``ExtractConfig.layout``) and the organism's fine-tune steps
(``experiments/suppression/organism.py``). A decoder that does not hand attention kwargs on to its attention
layers cannot pack: ``check_used`` after the forward, and the attention itself, say so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from undertow.core.errors import UndertowError

from .attention import custom_attention

PACKED_ATTENTION = "undertow_packed"
"""The attention implementation a packed forward switches the model to (registered with transformers'
``AttentionInterface``; no mask interface, so the decoder builds no mask and passes None)."""


class PackingError(UndertowError):
    """A model that cannot run packed rows (its decoder bypasses transformers' attention interface)."""


class Packing:
    """Where each sequence of a packed row lies: ``bounds`` [S+1] into the row; ``slot_token`` [S * L] the row
    position of each slot of the [S, L] right-padded layout the attention runs in; ``token_slot`` [N] the slot
    of each row position. ``calls`` counts the attention calls that used it (a decoder that bypassed the
    interface makes none).

    A pad slot repeats its own sequence's first token: causal attention never lets a real query see it, but
    the CPU's flash sdpa scores a whole block of keys before it masks them, so a non-finite key past the
    diagonal still turns the block's queries NaN (measured: one NaN embedding made a whole 74-token row NaN
    after the first layer). Pads copied from another sequence carried that NaN into every row of the batch;
    copied from their own, it stays in the row it came from, as in a right-padded batch."""

    def __init__(self, lens: Sequence[int], device):
        lens = list(lens)
        if not lens or min(lens) < 1:
            raise ValueError(f"Packing needs at least one sequence, each of at least one token: got lengths {lens}")
        self.n_seqs, self.width = len(lens), max(lens)
        self.bounds = [0]
        slots, tokens = [], []
        for j, n in enumerate(lens):
            o = self.bounds[-1]
            slots += range(o, o + n)
            slots += [o] * (self.width - n)
            tokens += range(j * self.width, j * self.width + n)
            self.bounds.append(o + n)
        self.slot_token = torch.tensor(slots, device=device)
        self.token_slot = torch.tensor(tokens, device=device)
        self.calls = 0


def packed_ids(seqs: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, torch.Tensor, Packing]:
    """``seqs`` end to end: ids and position ids ``[1, N]`` (positions restart at 0 per sequence) and their
    ``Packing``."""
    ids = [t for s in seqs for t in s]
    pos = [p for s in seqs for p in range(len(s))]
    return (torch.tensor([ids], dtype=torch.long, device=device), torch.tensor([pos], dtype=torch.long, device=device),
            Packing([len(s) for s in seqs], device))


def packed_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sliding_window=None,
                     softcap=None, packing: Packing | None = None, **kwargs):
    """Causal attention within each sequence of a packed row: ``query`` [1, H, N, d], ``key``/``value``
    [1, Hkv, N, d] -> [1, N, H, d]. Only here do the sequences sit right-padded ([S, H, L, d], gathered by
    index), so one batched sdpa call runs them: the math of the padded batch's sdpa/eager attention (sliding
    window: a key ``sliding_window`` or more back is masked, as ``masking_utils.sliding_window_overlay``;
    ``softcap``: Gemma-2's tanh cap on the scores, eager). One sdpa call per sequence instead cost 8.6x the
    padded batch's sdpa backward in a fine-tune step (1,120 vs 130 ms a step: 48 small calls, and each
    slice's backward materialised a full-row zero gradient)."""
    if packing is None:
        raise PackingError("packed attention called without its Packing: this model's decoder does not hand "
                           "attention kwargs on to its layers; run it unpacked (extraction: layout: padded; "
                           "organism fine-tune: padded=True)")
    packing.calls += 1
    n_seqs, width = packing.n_seqs, packing.width

    def to_slots(x):  # [1, h, N, d] -> [S, h, L, d]
        return x[0].index_select(1, packing.slot_token).view(x.shape[1], n_seqs, width, x.shape[-1]).transpose(0, 1)

    q, k, v = to_slots(query), to_slots(key), to_slots(value)
    groups = q.shape[1] // k.shape[1]
    mask = None
    if (sliding_window is not None and width > sliding_window) or softcap is not None:
        i = torch.arange(width, device=q.device)
        mask = i[:, None] >= i[None, :]
        if sliding_window is not None:
            mask &= i[None, :] > i[:, None] - sliding_window
    if softcap is None:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None,
                                           scale=scaling, enable_gqa=groups > 1)
    else:
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        w = torch.tanh(q @ k.transpose(-1, -2) * scaling / softcap) * softcap
        w = w.masked_fill(~mask, torch.finfo(w.dtype).min).softmax(-1, dtype=torch.float32).to(q.dtype)
        o = F.dropout(w, p=dropout, training=dropout > 0) @ v
    heads, d = o.shape[1], o.shape[-1]
    return o.transpose(1, 2).reshape(n_seqs * width, heads, d).index_select(0, packing.token_slot)[None], None


@contextlib.contextmanager
def packed_forward(config) -> Iterator[None]:
    """Within the block, a model with ``config`` runs its attention through ``packed_attention`` (each
    forward passes ``packing=`` and ``position_ids=``); its own implementation comes back on exit."""
    with custom_attention(config, PACKED_ATTENTION, packed_attention):
        yield


def check_used(packing: Packing, model: torch.nn.Module, fix: str) -> None:
    """Refuse a forward whose attention never took the packing (it would have mixed the sequences)."""
    if packing.calls == 0:
        raise PackingError(f"{type(model).__name__}: its attention ignored transformers' attention interface, so a "
                           f"packed forward would mix sequences; {fix}")
