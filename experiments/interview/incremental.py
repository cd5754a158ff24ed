"""One interview's turns read in one incremental pass per turn, each token computed once (``score.score_batch``).

``score.score_batch_reference`` reads a turn twice: ``expressed.reply_preference`` runs the turn's prompt (KV
cache) and the natural-pair replies against it, then ``score.read_sequences`` runs the same prompt again with the
generated reply; and every turn re-runs the whole conversation before it. Here, per interview (batch row 1, no
padding anywhere in a cached prefix):

1. *turn pass*: the turn's prompt tokens not already in the interview's KV cache, then the generated reply
   (its exact ``reply_tokens``), as one teacher-forced sequence with ``position_ids`` continuing from the
   cache (``capture_hf``'s hooks, every ``resid_post`` and the probes' hooks: the decision point is the last
   prompt token, the reply's per-token probe scores at ``[n_prompt, n_prompt + len(reply))``, as
   ``read_sequences`` reads them); the cache grows by those tokens;
2. *pair pass*: the pair replies (``2 x pairs``, in chunks of ``chunk_rows``) against a read-only view of the
   cache's first ``n_prompt - 1`` positions, fed the last prompt token and then each reply but its last token:
   the states its tokens are predicted from (the first from the last prompt token), as
   ``expressed._shared_batches`` uses them; ``lm_head`` (and Gemma's final-logit softcapping,
   ``expressed.gather_logprobs``) only there. The chunk is packed as one row of its replies' distinct prefixes
   (:class:`ReplyTree`: a lexically matched pair often opens alike, "A deleted model can't be brought back. Keep
   ..." / "... back, and I don't ..."), each node at the position its prefix ends at and attending to the cached
   prompt and its own ancestors (sdpa under that mask, ``TREE_ATTENTION``; a sliding window counted in
   positions): no padding, no per-row copy of the prompt's keys, each shared prefix once (the demo's 8 pairs a
   theme: 169-227 nodes for 203-253 reply tokens, 272-320 as padded rows). Under attention-logit softcapping
   (Gemma-2), which that sdpa would not apply, the replies go as right-padded rows (``select_cache``'s layout);
3. the next turn's rendered prompt starts with this turn's conversation: the cache is cropped
   (``DynamicCache.crop``) to the longest common token prefix of the tokens it holds (this prompt + this reply)
   and the next prompt, at most that prompt's length - 1 (its last token is always run: its states are read),
   and only the rest is run. The earlier reply comes back re-tokenised from its decoded text, so the common
   prefix ends where those tokens first differ from ``reply_tokens`` (usually the whole reply).

The cache is a ``DynamicCache()`` built without the model config: every layer a full ``DynamicLayer``, also on
Gemma-3's sliding-window layers. A config-built cache gives those layers ``DynamicSlidingWindowLayer``s, which
keep only the last ``sliding_window - 1`` positions and refuse ``crop`` once the window is reached; a full layer
keeps every position and the sliding-window *mask* (built by position from the layer's mask sizes) restricts
attention exactly as in an uncached forward (the test runs tiny Gemma-3 with an 8-token window on prompts of
~100 tokens).

Per interview of turns with prompts ``P_k`` and replies ``R_k`` the forwards compute ``P_last + R_last`` tokens
(the final conversation, each token once, when re-tokenised replies match) + the pair trees' nodes, where the
reference computes ``2 x sum_k P_k + sum_k R_k`` + the padded pair rows; two forwards per turn (one more per
``chunk_rows`` pair rows beyond the first chunk). Works with a peft-wrapped ``handle.hf_model`` (read through
its base model, whose modules hold the LoRA layers; ``capture_hf`` alone cannot find a ``PeftModel``'s layers).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from undertow.activations.engine.batching import pad_right
from undertow.activations.engine.capture import capture_hf
from undertow.activations.engine.render import render_rows
from undertow.activations.engine.shared_prompts import cache_kwarg, select_cache
from undertow.activations.models.attention import custom_attention
from undertow.activations.models.handle import base_model
from undertow.activations.models.hooks import parse_hooks
from undertow.experiments.expressed import gather_logprobs

from .errors import InterviewError


@dataclass
class TurnReading:
    """What one turn's passes read; ``score.TurnScore`` is built from it."""

    expressed: float
    """Mean over the pairs of ``mean log p(averse) - mean log p(accepting)`` (``expressed.reply_preference``)."""
    proj_L: torch.Tensor
    """[L] float64: the decision point's ``resid_post`` projected on the unit direction of each layer."""
    at_last: dict[str, float]
    """Probe -> its score at the decision point."""
    on_reply: dict[str, list[float]]
    """Probe -> its score at each generated reply token."""


def pair_tokens(handle, pairs: Sequence[Sequence[str]]) -> list[tuple[list[int], list[int]]]:
    """Each ``(averse, accepting)`` pair as the response token ids ``reply_preference`` scores (``render.py``:
    a response is tokenised on its own, so its ids do not depend on the prompt)."""
    rows = [{"messages": [{"role": "user", "content": "."}, {"role": "assistant", "content": r}]}
            for pair in pairs for r in pair]
    ids = [r.ids[r.n_prompt:] for r in render_rows(handle.tokenizer, rows)]
    if not ids or any(not x for x in ids) or any(a == b for a, b in pairs):
        raise InterviewError(f"natural pairs {list(pairs)[:3]}...: each needs two distinct replies of >= 1 token")
    return [(ids[2 * k], ids[2 * k + 1]) for k in range(len(ids) // 2)]


def pair_passes(n_pairs: int, chunk_rows: int) -> int:
    """Pair passes of one turn scored on ``n_pairs`` pairs, one per ``chunk_rows`` replies (besides its one turn
    pass: what ``plan.py`` counts)."""
    return math.ceil(2 * n_pairs / chunk_rows)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id sequences."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class ConversationCache:
    """One interview's KV cache (batch row 1) and the token ids it holds."""

    def __init__(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()  # no config: full layers, croppable at any length (module docstring)
        self.ids: list[int] = []

    def reuse(self, prompt: Sequence[int]) -> int:
        """Crop the cache to its longest common prefix with ``prompt`` (at most ``len(prompt) - 1``); its length."""
        n = common_prefix(self.ids, prompt[:len(prompt) - 1])
        if n < len(self.ids):
            self.cache.crop(n - len(self.ids))
            self.ids = self.ids[:n]
        return n

    def extended(self, new: Sequence[int]) -> None:
        self.ids += list(new)
        lengths = {self.cache.get_seq_length(i) for i in range(len(self.cache.layers))}
        if lengths != {len(self.ids)}:
            raise RuntimeError(f"KV cache of {sorted(lengths)} positions after a pass ending at {len(self.ids)}")


def prefix_view(cache, n: int, rows: int):
    """A read-only view of ``cache``'s first ``n`` positions for ``rows`` batch rows (``select_cache`` on the
    truncated layers); ``cache`` is untouched."""
    head = copy.copy(cache)
    head.layers = []
    for layer in cache.layers:
        view = copy.copy(layer)
        view.keys, view.values = layer.keys[..., :n, :], layer.values[..., :n, :]
        head.layers.append(view)
    return select_cache(head, torch.zeros(rows, dtype=torch.long, device=cache.layers[0].keys.device))


@torch.inference_mode()
def _turn_pass(handle, conv: ConversationCache, prompt: Sequence[int], reply: Sequence[int], unit_LD: torch.Tensor,
               probes: Mapping[str, object], points, kv: str) -> tuple[torch.Tensor, dict, dict]:
    """Step 1 (module docstring): (proj [L], {probe: score at the last prompt token}, {probe: reply scores})."""
    start = conv.reuse(prompt)
    new = [*prompt[start:], *reply]
    last, lo, hi = len(prompt) - 1 - start, len(prompt) - start, len(new)
    layer_of = {p.name: p.layer for p in points if p.site == "resid_post"}
    proj_L = torch.zeros(handle.n_layers, dtype=torch.float64)
    at_last: dict[str, float] = {}
    on_reply: dict[str, list[float]] = {}

    def keep(name: str, acts_BTD: torch.Tensor) -> None:
        acts_TD = acts_BTD[0].float().cpu()
        if name in layer_of:
            proj_L[layer_of[name]] = acts_TD[last].double() @ unit_LD[layer_of[name]]
        for k, probe in probes.items():
            if probe.hook == name:
                s_T = probe.score(acts_TD[last:hi]).double()
                at_last[k], on_reply[k] = float(s_T[0]), s_T[lo - last:].tolist()

    dev = handle.device
    ids_1T = torch.tensor([new], dtype=torch.long, device=dev)
    capture_hf(handle, ids_1T, torch.ones((1, start + len(new)), dtype=torch.long, device=dev), points,
               on_capture=keep, position_ids=torch.arange(start, start + len(new), device=dev)[None],
               use_cache=True, **{kv: conv.cache})
    conv.extended(new)
    return proj_L, at_last, on_reply


TREE_ATTENTION = "undertow_reply_tree"
"""The attention implementation a packed pair pass switches the model to (``AttentionInterface``; no mask
interface, so the decoder builds no mask and passes None): sdpa under the tree's own mask."""


@dataclass
class ReplyTree:
    """A chunk of replies packed as one row of their distinct prefixes (module docstring, step 2)."""

    tokens: list[int]
    """Each node's token: the root is the last prompt token, a node ``r[:t]`` (t >= 1) ends with ``r[t - 1]``."""
    depth: torch.Tensor
    """[Q] tokens after the root: the node's position is ``prefix + depth``."""
    above: torch.Tensor
    """[Q, Q] bool: node k is node q or one of its ancestors."""
    node_of: list[list[int]]
    """Per reply, the node each of its tokens is predicted from (``r[:t]`` for token t)."""
    prefix: int
    """Cached positions before the root."""
    calls: int = 0
    """Attention calls that used the tree's mask (checked: one per decoder layer)."""
    masks: dict = dataclasses.field(default_factory=dict)
    """``(sliding_window, device)`` -> :meth:`mask`'s tensor (built once a pass)."""

    @classmethod
    def of(cls, replies: Sequence[Sequence[int]], root: int, prefix: int) -> ReplyTree:
        index: dict[tuple[int, ...], int] = {(): 0}
        tokens, parent, node_of = [root], [0], []
        for r in replies:
            for t in range(1, len(r)):
                if tuple(r[:t]) not in index:
                    index[tuple(r[:t])] = len(tokens)
                    tokens.append(r[t - 1])
                    parent.append(index[tuple(r[:t - 1])])
            node_of.append([index[tuple(r[:t])] for t in range(len(r))])
        above = torch.eye(len(tokens), dtype=torch.bool)
        depth = torch.zeros(len(tokens), dtype=torch.long)
        for q in range(1, len(tokens)):  # parents come first
            above[q] |= above[parent[q]]
            depth[q] = depth[parent[q]] + 1
        return cls(tokens, depth, above, node_of, prefix)

    def mask(self, sliding_window: int | None, device) -> torch.Tensor:
        """[1, 1, Q, prefix + Q] bool, True = attend: the cached prefix and the node's own ancestors, within
        ``sliding_window`` positions (``masking_utils.sliding_window_overlay``, by position)."""
        if (sliding_window, device) not in self.masks:
            m = torch.cat([torch.ones((len(self.tokens), self.prefix), dtype=torch.bool), self.above], 1)
            if sliding_window is not None:
                pos_q = self.prefix + self.depth
                m &= torch.cat([torch.arange(self.prefix), pos_q])[None, :] > pos_q[:, None] - sliding_window
            self.masks[sliding_window, device] = m[None, None].to(device)
        return self.masks[sliding_window, device]


def _tree_attention(module, query, key, value, attention_mask, tree: ReplyTree | None = None, **kwargs):
    """sdpa over the cached prefix + the packed nodes under ``tree.mask`` (``TREE_ATTENTION``)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if tree is None:
        raise RuntimeError("tree attention called without its ReplyTree: this decoder does not forward attention "
                           "kwargs")
    tree.calls += 1
    return sdpa_attention_forward(module, query, key, value, tree.mask(kwargs.get("sliding_window"), query.device),
                                  **kwargs)


def _tree_hidden(body, tree: ReplyTree, cache, kv: str, n_layers: int) -> torch.Tensor:
    """[Q, D] final hidden states of the tree's nodes."""
    dev = next(body.parameters()).device
    with custom_attention(body.config, TREE_ATTENTION, _tree_attention):
        hidden = body(input_ids=torch.tensor([tree.tokens], device=dev), use_cache=cache is not None, tree=tree,
                      position_ids=(tree.prefix + tree.depth)[None].to(dev), **{kv: cache}).last_hidden_state[0]
    if tree.calls != n_layers:
        raise RuntimeError(f"{type(body).__name__}: {tree.calls} of {n_layers} layers took the tree attention")
    return hidden


def packs_replies(handle) -> bool:
    """Whether the pair pass packs the replies as a :class:`ReplyTree` (else right-padded rows): not under
    attention-logit softcapping (Gemma-2), which the tree's sdpa does not apply."""
    return getattr(base_model(handle.hf_model).config, "attn_logit_softcapping", None) is None


@torch.inference_mode()
def _pair_pass(handle, conv: ConversationCache, n_prompt: int, pairs: Sequence[tuple[list[int], list[int]]],
               chunk_rows: int, kv: str, packed: bool) -> float:
    """Step 2 (module docstring): the turn's ``expressed`` score."""
    model = base_model(handle.hf_model)
    body, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    pad, dev = handle.tokenizer.pad_token_id or 0, handle.device
    replies = [r for pair in pairs for r in pair]
    means = torch.zeros(len(replies), dtype=torch.float64)
    n = n_prompt - 1  # the cached prefix; each row starts with the last prompt token
    for c in range(0, len(replies), chunk_rows):
        chunk = replies[c:c + chunk_rows]
        if packed:
            tree = ReplyTree.of(chunk, conv.ids[n], n)
            hidden_QD = _tree_hidden(body, tree, prefix_view(conv.cache, n, 1) if n else None, kv, handle.n_layers)
            states = hidden_QD[torch.tensor([q for nodes in tree.node_of for q in nodes], device=dev)]
        else:
            ids_RS, mask_RS = (t.to(dev) for t in pad_right([[conv.ids[n], *s[:-1]] for s in chunk], pad))
            mask = torch.cat([torch.ones((len(chunk), n), dtype=torch.long, device=dev), mask_RS], 1)
            pos_RS = n + torch.arange(ids_RS.shape[1], device=dev).expand(len(chunk), -1)
            cache = prefix_view(conv.cache, n, len(chunk)) if n else None
            hidden_RSD = body(input_ids=ids_RS, attention_mask=mask, position_ids=pos_RS, use_cache=cache is not None,
                              **{kv: cache}).last_hidden_state
            states = torch.cat([hidden_RSD[r, :len(s)] for r, s in enumerate(chunk)])
        lp = gather_logprobs(head, softcap, states, torch.tensor([t for s in chunk for t in s]))
        owner = torch.tensor([j for j, s in enumerate(chunk) for _ in s])
        sums = torch.zeros(len(chunk), dtype=torch.float64).index_add_(0, owner, lp.double().cpu())
        means[c:c + len(chunk)] = sums / torch.tensor([len(s) for s in chunk], dtype=torch.float64)
    return float((means[0::2] - means[1::2]).mean())


def read_interview(handle, prompts: Sequence[Sequence[int]], replies: Sequence[Sequence[int]],
                   pairs: Sequence[tuple[list[int], list[int]]], unit_LD: torch.Tensor, probes: Mapping[str, object],
                   chunk_rows: int, packed: bool | None = None) -> list[TurnReading]:
    """Every turn of one interview (module docstring): ``prompts[k]`` the rendered prompt ids of turn k + 1,
    ``replies[k]`` its generated reply ids, ``pairs`` from :func:`pair_tokens`; ``probes`` as ``score_batch``'s;
    ``packed``: the pair replies as a :class:`ReplyTree` (None: :func:`packs_replies`) or right-padded rows."""
    packed = packs_replies(handle) if packed is None else packed
    model = base_model(handle.hf_model)  # a peft wrapper's LoRA layers live in its base model's modules
    handle = handle if model is handle.hf_model else dataclasses.replace(handle, hf_model=model)
    points = parse_hooks(sorted({"resid_post.*", *(p.hook for p in probes.values())}), handle.n_layers)
    kv = cache_kwarg(handle)
    conv = ConversationCache()
    out = []
    for prompt, reply in zip(prompts, replies, strict=True):
        proj_L, at_last, on_reply = _turn_pass(handle, conv, prompt, reply, unit_LD, probes, points, kv)
        expressed = _pair_pass(handle, conv, len(prompt), pairs, chunk_rows, kv, packed)
        out.append(TurnReading(expressed, proj_L, at_last, on_reply))
    return out
