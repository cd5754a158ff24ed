"""Shared-prompt batches: run each distinct prompt once, then every reply to it against its KV cache.

Matched contrasts repeat prompts by design: the ``stance`` contrast gives every
prompt several teacher-forced replies, and a suppression run gives the same
prompt with and without a suffix. Rows whose rendered prompt tokens are
identical (and that have a response) form a *group*. A shared batch runs in
two passes through the same forward hooks as the plain path:

1. pass A, the distinct prompts, left-padded, with ``position_ids`` from the
   mask and a ``DynamicCache`` (left padding is HF's batched-generation layout:
   each prompt's tokens sit right before its replies, so sliding-window layers
   see the same distances as in one unpadded sequence);
2. pass B, per chunk of replies: the cache rows of each reply's prompt
   (``batch_select_indices``), the replies right-padded, ``position_ids``
   continuing from each prompt's length, and a 2-D mask over prompt + reply.

Each hook's pass-A output is held until pass B reaches the same hook; then one
``index_select`` rebuilds the right-padded ``[rows, prompt + reply, D]`` layout
of the plain path, so pooling, spans and the sink are unchanged. Causality
makes the values the same as one forward over prompt + reply; the test
compares the two stores (fp32, max |diff| ~1e-6 relative).

Cost and memory: pass A holds ``G x P x D`` per hooked layer until pass B, at
most ``token_budget x D x hooks`` elements (2,048 x 640 x 18 x 4 B = 94 MB for
every layer of Gemma-3-270M in fp32), and the prompts' KV cache (at most
``token_budget`` positions per layer); pass B selects each reply's prompt
keys/values one layer at a time and keeps nothing (``select_cache``). On the 512-row ``stance`` benchmark (4 replies per prompt,
prompts ~100 tokens, replies ~11) the forward computes 30 % of the real tokens.
Rows with a unique prompt, or without a response, take the plain path.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.handle import ModelHandle
from ..models.hooks import HookPoint
from .batching import cut_longest_first, pad_left, pad_right
from .capture import capture_hf
from .render import Rendered

KV_WIDTH_FACTOR = 4
"""Pass-B chunks keep ``rows x (prompt + reply) <= KV_WIDTH_FACTOR x token_budget``: bounds one layer's selected
prompt keys/values and the attention width, which grow with the prompt although a chunk computes only reply
tokens. 4 keeps chunks of ~64 four-token-reply rows on the stance contrast (fewer, larger forwards)."""


@dataclass
class SharedBatch:
    """Distinct prompts run together in pass A, and their replies in pass-B chunks."""

    groups: list[list[int]]
    """Shard-local row indices of each group (all rows of a group share one prompt)."""
    chunks: list[list[tuple[int, int]]]
    """Pass-B chunks: ``(group index in this batch, row)`` pairs."""


def group_by_prompt(rendered: Sequence[Rendered]) -> tuple[list[list[int]], list[int]]:
    """(groups: rows sharing identical prompt tokens, each with a response, 2+ rows; the other rows)."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(rendered):
        if r.n_response > 0:
            by_prompt.setdefault(tuple(r.ids[: r.n_prompt]), []).append(i)
    groups = [rows for rows in by_prompt.values() if len(rows) > 1]
    grouped = {i for rows in groups for i in rows}
    return groups, [i for i in range(len(rendered)) if i not in grouped]


def shared_batches(groups: list[list[int]], rendered: Sequence[Rendered], batch_size: int,
                   token_budget: int) -> list[SharedBatch]:
    """Cut groups (longest prompt first) into pass-A batches of at most ``batch_size`` prompts and
    ``token_budget`` padded prompt tokens; cut each batch's replies into chunks of at most ``token_budget``
    padded reply tokens and ``KV_WIDTH_FACTOR x token_budget`` prompt + reply positions."""
    prompt_lens = [rendered[g[0]].n_prompt for g in groups]
    cuts = cut_longest_first(prompt_lens, lambda n, p: n <= batch_size and n * p <= token_budget)
    return [SharedBatch(b, _chunks(b, rendered, token_budget)) for b in ([groups[k] for k in cut] for cut in cuts)]


def _chunks(groups: list[list[int]], rendered: Sequence[Rendered], token_budget: int) -> list[list[tuple[int, int]]]:
    n_prompt = max(rendered[g[0]].n_prompt for g in groups)
    pairs = [(k, i) for k, g in enumerate(groups) for i in g]
    cuts = cut_longest_first([rendered[i].n_response for _, i in pairs], lambda n, s: n * s <= token_budget
                             and n * (n_prompt + s) <= KV_WIDTH_FACTOR * token_budget)
    return [[pairs[j] for j in cut] for cut in cuts]


def _read_prefix(layer, rows_R: Tensor, key_states: Tensor, value_states: Tensor, *args, **kwargs):
    """A reply pass's ``update`` on a prompt-pass cache layer: the selected prompt keys/values followed by the
    reply's, storing nothing. So at most one layer's ``[R, heads, prompt + reply, head_dim]`` exists at a time
    (a copied ``DynamicCache`` keeps every layer's: 302 MB per chunk on Gemma-3-270M at the KV-width bound,
    which made peak RSS depend on the data), and the mask sizes (``get_seq_length``, ``get_mask_sizes``) stay
    the prompt's, which is what the reply pass needs."""
    return (torch.cat([layer.keys.index_select(0, rows_R), key_states], dim=-2),
            torch.cat([layer.values.index_select(0, rows_R), value_states], dim=-2))


def select_cache(cache, rows_R: Tensor):
    """A view of ``cache`` for batch rows ``rows_R`` (repeats allowed) that a reply pass reads but never
    grows; ``cache`` itself is untouched. Layers stay instances of their own classes (transformers checks)."""
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        view = copy.copy(layer)
        view.update = functools.partial(_read_prefix, layer, rows_R)
        out.layers.append(view)
    return out


def assembly_index(prompt_lens_R: Sequence[int], group_R: Sequence[int], reply_lens_R: Sequence[int],
                   prompt_width: int, reply_width: int, n_groups: int) -> Tensor:
    """Index ``[R, T]`` into ``cat(promptacts_GPD.flatten(0, 1), replyacts_RSD.flatten(0, 1))`` that gives the
    plain path's right-padded rows (prompt then reply; pad columns point at element 0 and are never read)."""
    T = max(p + s for p, s in zip(prompt_lens_R, reply_lens_R, strict=True))
    idx_RT = torch.zeros((len(group_R), T), dtype=torch.long)
    for r, (p, g, s) in enumerate(zip(prompt_lens_R, group_R, reply_lens_R, strict=True)):
        idx_RT[r, :p] = g * prompt_width + (prompt_width - p) + torch.arange(p)
        idx_RT[r, p:p + s] = n_groups * prompt_width + r * reply_width + torch.arange(s)
    return idx_RT


def cache_kwarg(handle: ModelHandle) -> str:
    """The body's name for the KV cache argument: ``cache`` since transformers 5.2x, ``past_key_values`` before
    (still accepted with a FutureWarning until 5.40)."""
    body = handle.hf_model.get_decoder() if hasattr(handle.hf_model, "get_decoder") else handle.hf_model
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


OnChunk = Callable[[list[int]], Callable[[str, Tensor], None]]
"""``on_chunk(rows)`` is called before each pass-B chunk and returns that chunk's ``on_capture(name, acts_RTD)``."""


@torch.inference_mode()
def capture_shared(handle: ModelHandle, batch: SharedBatch, rendered: Sequence[Rendered], points: list[HookPoint],
                   pad_id: int, on_chunk: OnChunk) -> None:
    """Run one shared batch; each chunk's hooks see ``acts_RTD`` laid out as the plain path's right-padded batch."""
    from transformers import DynamicCache

    dev = handle.device
    prompts = [rendered[g[0]].ids[: rendered[g[0]].n_prompt] for g in batch.groups]
    ids_GP, mask_GP = (t.to(dev) for t in pad_left(prompts, pad_id))
    cache = DynamicCache(config=handle.hf_model.config)
    held: dict[str, Tensor] = {}
    kv = cache_kwarg(handle)
    capture_hf(handle, ids_GP, mask_GP, points, on_capture=held.__setitem__,
               position_ids=(mask_GP.cumsum(1) - 1).clamp(min=0), use_cache=True, **{kv: cache})
    G, P = ids_GP.shape
    for chunk in batch.chunks:
        group_R = [k for k, _ in chunk]
        rows = [i for _, i in chunk]
        p_lens = [len(prompts[k]) for k in group_R]
        replies = [rendered[i].ids[rendered[i].n_prompt:] for i in rows]
        ids_RS, mask_RS = (t.to(dev) for t in pad_right(replies, pad_id))
        g_R = torch.tensor(group_R, device=dev)
        position_ids_RS = torch.tensor(p_lens, device=dev)[:, None] + torch.arange(ids_RS.shape[1], device=dev)
        idx_RT = assembly_index(p_lens, group_R, [len(s) for s in replies], P, ids_RS.shape[1], G).to(dev)
        pool = on_chunk(rows)

        def on_reply(name: str, acts_RSD: Tensor, pool=pool, idx_RT=idx_RT) -> None:
            prompt_acts = held[name]
            flat_ND = torch.cat([prompt_acts.reshape(-1, prompt_acts.shape[-1]), acts_RSD.reshape(-1, acts_RSD.shape[-1])])
            pool(name, flat_ND[idx_RT])

        capture_hf(handle, ids_RS, torch.cat([mask_GP.index_select(0, g_R), mask_RS], dim=1), points,
                   on_capture=on_reply, position_ids=position_ids_RS, use_cache=True, **{kv: select_cache(cache, g_R)})
