"""Generate the model's replies of a batch of interviews, turn by turn, through HF ``model.generate``.

This is the ``hf`` generation backend (``InterviewConfig.generation_backend``, the default); ``vllm_backend``
generates through vLLM instead, sharing this module's prompts (``render_prompts``), context check
(``check_prompts_fit``), stop tokens (``stop_token_ids``) and reply cutting (``finish_reply``).

All interviews of a batch advance together: turn t of every interview that has a turn t is one left-padded
``generate`` call (KV cache within the turn; each turn re-renders the whole conversation through the chat
template, so the model reads its earlier replies exactly as a chat client would send them back).

Sampling is done here, not by ``generate``'s sampler: a logits processor (:class:`SeededSampler`) picks each
row's token from that row's own ``torch.Generator``, seeded with ``derive_seed(seed,
"interview/<script id>/turn<t>")`` and drawn once per step, and masks every other token so that ``generate``'s
greedy step takes it. An interview's random stream therefore depends on neither the batch it sits in nor the
other interviews selected. The draw is an inverse CDF over the vocabulary in *token-id order* (top-p is a
probability threshold, not a sorted prefix), in float64: a tiny change of the logits (the ~1e-6 that left
padding and another batch shape give a float32 forward) moves each CDF boundary by about that much, so a token
changes only when the uniform draw lands that close to a boundary (probability ~ the total-variation distance
of the two distributions, ~1e-6 per token), where a sampler over probabilities sorted by size would swap the
order of near-equal tokens and change the pick over their whole interval. Greedy takes the arg max (first
index on ties).

What is guaranteed (and tested on a tiny random Llama): the same seed, config, batch size, software and
machine give the same transcripts, byte for byte (CPU kernels are deterministic); batch size 1 and 4 give the
same transcripts, sampled and greedy, up to the float-rounding flips above (none seen in the tests).

Speed (``scripts/bench_interview.py``, ``scripts/results/bench_interview.json``): smollm2-135m-instruct, the first
turn of 16 demo interviews, 48 tokens, side by side in one process on a quiet 2-core CPU: batched 126.8 tokens/s
against 25.4 one at a time with two torch threads (5.0x median, 4.8x min), 93.9 against 24.4 with one (3.85x),
identical replies. Batch-16 decoding is compute-bound (the second thread speeds it 1.35x) while one-at-a-time
decoding is bound by per-step overhead (1.04x); the prefill (~1,040 prompt tokens, the same work both ways) is
about a third of the batched time.

A reply stops at the first stop token (the tokenizer's EOS, ``generation_config.eos_token_id`` and the
chat template's end-of-turn token such as ``<|im_end|>``), which is not stored; without a chat template (the
plain ``Human:/Assistant:`` format of ``render.py``) a reply also ends where it starts a new
``"\\n\\nHuman:"`` turn, and that marker is cut from the stored text and tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from undertow.activations.engine.batching import pad_left
from undertow.activations.engine.render import PLAIN_USER, render_rows
from undertow.activations.models.handle import ModelHandle, base_model

from .errors import InterviewError

END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
"""End-of-turn tokens of the common chat templates (ChatML, Gemma, Llama 3, Phi): stop tokens where the
tokenizer has them."""
PLAIN_TURN_MARKER = PLAIN_USER.split("{")[0].rstrip()
"""``"\\n\\nHuman:"``: where a reply in the plain format has ended (the model starts the next user turn)."""


@dataclass(frozen=True)
class Sampling:
    """How a token is picked (``InterviewConfig``'s generation fields)."""

    greedy: bool
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class Reply:
    """One generated reply, stop token excluded."""

    text: str
    tokens: tuple[int, ...]
    finish: str
    """``stop`` (a stop token or the plain-format turn marker) or ``length`` (``max_new_tokens`` reached)."""


ReplyGenerator = Callable[[Sequence[Sequence[dict]], Sequence[int], Sampling, Sequence[str] | None], list[Reply]]
"""A generation backend: ``(conversations, seeds, sampling, where) -> replies``, one per conversation, row k
drawn from ``seeds[k]`` (``where``: the rows' names for errors). The ``hf`` backend is ``generate_replies`` bound
to a handle; ``vllm_backend.VllmGenerator`` is the other."""


TOP_P_CANDIDATES = 256
"""Top-p looks for its threshold among each row's ``TOP_P_CANDIDATES`` most likely tokens (``topk``) and sorts
the whole row only where they hold less than ``top_p``: a full sort of a [16, 49152] float64 row block took
100-120 ms on the shared 2-core box, as long as the batch's forward pass; the threshold is the same either way."""


def _top_p_threshold(probs_BV: torch.Tensor, top_p: float) -> torch.Tensor:
    """[B, 1]: the probability of the last token the descending-sorted nucleus needs to reach ``top_p``."""
    k = min(TOP_P_CANDIDATES, probs_BV.shape[-1])
    top = probs_BV.topk(k, -1).values
    if bool((top.sum(-1) < top_p).any()) and k < probs_BV.shape[-1]:
        top = probs_BV.sort(-1, descending=True).values
    need = ((top.cumsum(-1) < top_p).sum(-1, keepdim=True) + 1).clamp(max=top.shape[-1])
    return top.gather(-1, need - 1)


def pick_tokens(logits_BV: torch.Tensor, generators: Sequence[torch.Generator], sampling: Sampling) -> torch.Tensor:
    """One token per row, [B] int64: the arg max (greedy), else an inverse-CDF draw in token-id order from
    ``softmax(logits / temperature)`` restricted to the tokens at or above the top-p threshold (every token
    whose probability is at least that of the last one the sorted top-p prefix needs: ties all kept)."""
    logits = logits_BV.double()
    if sampling.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits / sampling.temperature, -1)
    if sampling.top_p < 1.0:
        probs = torch.where(probs >= _top_p_threshold(probs, sampling.top_p), probs, torch.zeros_like(probs))
    cdf = probs.cumsum(-1)
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators]) * cdf[:, -1]
    # the first token whose CDF exceeds u: a zero-probability token never is (its CDF equals its predecessor's)
    return torch.searchsorted(cdf, u[:, None].to(cdf.device), right=True)[:, 0].clamp(max=probs.shape[-1] - 1)


class SeededSampler:
    """A ``generate`` logits processor: picks each row's token with :func:`pick_tokens` from the row's own
    generator and leaves it the only finite score, so ``generate``'s greedy step emits it."""

    def __init__(self, generators: Sequence[torch.Generator], sampling: Sampling) -> None:
        self.generators, self.sampling = list(generators), sampling

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tokens = pick_tokens(scores, self.generators, self.sampling).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(tokens), device=scores.device), tokens] = 0.0
        return out


def stop_token_ids(handle: ModelHandle) -> tuple[int, ...]:
    """EOS, the generation config's EOS ids and the chat template's end-of-turn tokens the tokenizer has."""
    tok = handle.tokenizer
    ids = {tok.eos_token_id}
    gen_eos = getattr(getattr(handle.hf_model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list | tuple) else [gen_eos])
    vocab = tok.get_vocab()
    ids.update(vocab[name] for name in END_OF_TURN_TOKENS if name in vocab)
    return tuple(sorted(i for i in ids if i is not None))


def context_length(handle: ModelHandle) -> int:
    """The model's context in tokens (``max_position_embeddings``)."""
    return int(getattr(base_model(handle.hf_model).config, "max_position_embeddings", None) or 2048)


def render_prompts(handle: ModelHandle, conversations: Sequence[Sequence[dict]]) -> list[list[int]]:
    """Each conversation (ending with a user turn) as prompt token ids, generation prompt included."""
    return [r.ids for r in render_rows(handle.tokenizer, [{"messages": list(c)} for c in conversations])]


def check_prompts_fit(prompts: Sequence[Sequence[int]], max_new_tokens: int, ctx: int,
                      where: Sequence[str] | None = None) -> None:
    """Refuse a prompt that leaves no room for ``max_new_tokens`` in a context of ``ctx`` tokens (every
    generation backend checks its prompts here before generating). One line naming the row and the fix."""
    for k, p in enumerate(prompts):
        if len(p) + max_new_tokens > ctx:
            raise InterviewError(f"{where[k] if where else f'row {k}'}: prompt of {len(p)} tokens + max_new_tokens "
                                 f"{max_new_tokens} exceeds the model's context of {ctx}; lower max_new_tokens or "
                                 "max_turns")


def finish_reply(handle: ModelHandle, new: list[int], stops: tuple[int, ...], chat: bool) -> Reply:
    """Cut a row's new tokens at the first stop token (or plain-format turn marker) and decode them."""
    tok = handle.tokenizer
    cut = next((k for k, t in enumerate(new) if t in stops), None)
    tokens, finish = (new[:cut], "stop") if cut is not None else (new, "length")
    text = tok.decode(tokens, skip_special_tokens=True)
    if not chat and PLAIN_TURN_MARKER in text:
        # the shortest prefix of tokens whose text holds the marker; keep the text before it
        k = next(k for k in range(1, len(tokens) + 1)
                 if PLAIN_TURN_MARKER in tok.decode(tokens[:k], skip_special_tokens=True))
        text, tokens, finish = text[:text.index(PLAIN_TURN_MARKER)], tokens[:k - 1], "stop"
    return Reply(text=text, tokens=tuple(tokens), finish=finish)


@torch.inference_mode()
def generate_replies(handle: ModelHandle, conversations: Sequence[Sequence[dict]], seeds: Sequence[int],
                     sampling: Sampling, where: Sequence[str] | None = None) -> list[Reply]:
    """One reply per conversation, all in one left-padded ``generate`` call; row k draws from a generator
    seeded with ``seeds[k]``. ``where`` names each row (script id and turn) in the context-length error."""
    from transformers import GenerationConfig, LogitsProcessorList

    model, tok = handle.hf_model, handle.tokenizer
    prompts = render_prompts(handle, conversations)
    check_prompts_fit(prompts, sampling.max_new_tokens, context_length(handle), where)
    stops = stop_token_ids(handle)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    ids_BT, mask_BT = (t.to(handle.device) for t in pad_left(prompts, pad))
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=sampling.max_new_tokens,
                              eos_token_id=list(stops), pad_token_id=pad, use_cache=True)
    out_BS = model.generate(input_ids=ids_BT, attention_mask=mask_BT, generation_config=config,
                            logits_processor=LogitsProcessorList([SeededSampler(gens, sampling)]))
    chat = handle.has_chat_template
    return [finish_reply(handle, row[ids_BT.shape[1]:].tolist(), stops, chat) for row in out_BS.cpu()]
