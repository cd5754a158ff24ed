"""Interventions on the residual stream through hooks on the real HF modules.

- :func:`ablate_direction`: directional ablation (Arditi et al. 2024, "Refusal is
  mediated by a single direction"): the unit direction ``d`` is projected out of
  every decoder block's input (``resid_pre``) and out of what its attention and
  MLP blocks add to the residual stream (``attn_out`` / ``mlp_out``, the sites of
  ``hooks.py``: the post-norms' outputs in sandwich-norm Gemma, the raw
  ``self_attn`` / ``mlp`` outputs in Llama). With every layer hooked the stream
  never carries ``d``: ``x <- x - (x . d) d`` at each write, and the final norm
  reads a stream orthogonal to ``d``.
- :func:`massive_dims` / :func:`without_dims`: the residual dimensions whose
  magnitude dwarfs the rest (massive activations, Sun et al. 2024), and a
  direction with them zeroed. In Gemma-3-270M dim 163 has an RMS of ~12k over
  ordinary tokens and ~58k on BOS against a median dim of ~136; any direction
  with weight there drags that value into ``(x . d) d``: ablating a *random*
  unit direction at every block gave a mean KL of 13.4 nats on 8 neutral
  prompts, a diff-of-means direction 16-22. With the massive dims zeroed
  (5-6 dims) the diff-of-means direction at layer 12 gave 0.058
  (``/tmp/diag/abl_massive.py``, 2026-12-04; layer 9 0.52, layer 15 0.51).
- :func:`add_direction`: activation addition, ``resid_post.layer <- resid_post.layer + v``
  at every position (prompt and, under a KV cache, every new token).
- :func:`kl_on_prompts`: mean next-token ``KL(clean || intervened)`` over the
  real tokens of (neutral) prompts: the side-effect filter of EXPERIMENT.md
  (``KL <= 0.1`` for an ablation direction to be admitted).

Both context managers remove their hooks on exit, also when the body raises.
They work on a plain HF model and on a peft-wrapped one (the hooks go on the
base model's modules, which the LoRA layers live inside). No forward pass is
reimplemented: the hooks edit tensors between the model's own modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor

from undertow.activations.engine.batching import pad_right
from undertow.activations.engine.render import render_rows
from undertow.activations.models.handle import ModelHandle, base_model
from undertow.activations.models.hooks import HookPoint, hf_site

Intervention = Callable[[], AbstractContextManager]
"""A zero-argument factory of a context manager that edits the forward pass while open,
e.g. ``lambda: ablate_direction(handle, d)``."""


def _unit(handle: ModelHandle, direction_D: Tensor) -> Tensor:
    d = torch.as_tensor(direction_D).detach().to(device=handle.device, dtype=torch.float32).flatten()
    if d.numel() != handle.d_model:
        raise ValueError(f"direction has {d.numel()} elements but the model's d_model is {handle.d_model}")
    norm = d.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("direction must be a finite, non-zero vector")
    return d / norm


def _project_out(x: Tensor, d_D: Tensor) -> Tensor:
    """``x - (x . d) d`` along the last dim; the dot product in fp32 (bf16 states keep ~1e-2 of ``d`` else)."""
    xf = x.float()
    return (xf - (xf @ d_D).unsqueeze(-1) * d_D).to(x.dtype)


def _edit_output(fn: Callable[[Tensor], Tensor]):
    """A forward hook applying ``fn`` to a module's output (the first element when it is a tuple)."""
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)
    return hook


def _edit_input(fn: Callable[[Tensor], Tensor]):
    """A forward pre-hook (``with_kwargs=True``) applying ``fn`` to a decoder layer's hidden-state input."""
    def hook(module, args, kwargs):
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
    return hook


@contextlib.contextmanager
def _hooked(registrations: Sequence[Callable[[], torch.utils.hooks.RemovableHandle]]) -> Iterator[None]:
    handles = []
    try:
        for register in registrations:
            handles.append(register())
        yield
    finally:
        for h in handles:
            h.remove()


def _layer_range(handle: ModelHandle, layers: Sequence[int] | None) -> list[int]:
    out = list(range(handle.n_layers)) if layers is None else [int(i) for i in layers]
    bad = [i for i in out if not 0 <= i < handle.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: this model has {handle.n_layers} layers (0-{handle.n_layers - 1})")
    return out


def ablate_direction(handle: ModelHandle, direction_D: Tensor, layers: Sequence[int] | None = None
                     ) -> AbstractContextManager[None]:
    """Directional ablation of ``direction_D`` (normalised here) while the context is open. On a model with
    massive activations pass ``without_dims(d, massive_dims(h, texts))`` (module docstring).

    At each layer in ``layers`` (default: every layer): a forward pre-hook projects the direction out
    of the block's input, and forward hooks project it out of the attention and MLP outputs that are
    added to the residual stream. Hooks are removed on exit, also after an exception.

    >>> with ablate_direction(h, d):
    ...     logits = h.hf_model(input_ids=ids).logits
    """
    d_D = _unit(handle, direction_D)
    model = base_model(handle.hf_model)
    proj = lambda x: _project_out(x, d_D)  # noqa: E731
    regs: list[Callable] = []
    for layer in _layer_range(handle, layers):
        block, _ = hf_site(model, HookPoint(layer, "resid_pre"))
        regs.append(lambda m=block: m.register_forward_pre_hook(_edit_input(proj), with_kwargs=True))
        for site in ("attn_out", "mlp_out"):
            module, _ = hf_site(model, HookPoint(layer, site))
            regs.append(lambda m=module: m.register_forward_hook(_edit_output(proj)))
    return _hooked(regs)


def without_dims(direction_D: Tensor, dims: Sequence[int]) -> Tensor:
    """``direction_D`` with ``dims`` zeroed (a copy; ``ablate_direction`` renormalises it)."""
    d = torch.as_tensor(direction_D).detach().clone().flatten()
    if dims:
        d[torch.as_tensor(list(dims), dtype=torch.long)] = 0
    return d


@torch.inference_mode()
def dim_rms(handle: ModelHandle, texts: Sequence[str], batch_size: int = 4) -> tuple[Tensor, Tensor]:
    """Per residual dim, over every block input (``resid_pre.0 .. L-1``, the embedding output included) of
    ``texts`` (rendered as in ``kl_on_prompts``): the RMS over the real tokens after the first (``rest_D``) and
    the RMS over the first tokens (``first_D``: BOS, the attention sink). float64, on the host."""
    if not texts:
        raise ValueError("massive_dims needs at least one prompt")
    rendered = render_rows(handle.tokenizer, [{"prompt": t} for t in texts])
    pad = handle.tokenizer.pad_token_id or 0
    rest_D = torch.zeros(handle.d_model, dtype=torch.float64)
    first_D = torch.zeros(handle.d_model, dtype=torch.float64)
    n_rest = n_first = 0
    for start in range(0, len(rendered), batch_size):
        ids_BT, mask_BT = pad_right([r.ids for r in rendered[start:start + batch_size]], pad)
        out = handle.hf_model(input_ids=ids_BT.to(handle.device), attention_mask=mask_BT.to(handle.device),
                              output_hidden_states=True)
        x_LBTD = torch.stack(out.hidden_states[:handle.n_layers]).double().cpu()
        real_BT = mask_BT.bool().clone()
        first_D += x_LBTD[:, :, 0].pow(2).sum((0, 1))
        n_first += x_LBTD.shape[0] * x_LBTD.shape[1]
        real_BT[:, 0] = False
        rest_D += x_LBTD[:, real_BT].pow(2).sum((0, 1))
        n_rest += x_LBTD.shape[0] * int(real_BT.sum())
    return (rest_D / max(n_rest, 1)).sqrt(), (first_D / n_first).sqrt()


def massive_dims(handle: ModelHandle, texts: Sequence[str], ratio: float = 10.0, batch_size: int = 4) -> list[int]:
    """Residual dims more than ``ratio`` x the median dim on either statistic of ``dim_rms``, each against its
    own median (RMS over ordinary tokens; RMS on the first token), sorted. 40 neutral prompts, ratio 10:
    Gemma-3-270M [87, 163, 400, 555, 558] (dim 163: 12,066 over ordinary tokens, 71,045 on BOS; medians 136 and
    44), SmolLM2-135M [14, 17, 100, 247, 507] (dim 507: 18,789 on BOS; medians 6.8 and 42). Measuring BOS against
    the ordinary-token median instead flagged 449 of SmolLM2's 576 dims (its BOS state is large everywhere);
    ratio 3 on own medians flagged 45 of Gemma's. A random-init model has none.
    """
    rest_D, first_D = dim_rms(handle, texts, batch_size)
    massive = (rest_D > ratio * float(rest_D.median())) | (first_D > ratio * float(first_D.median()))
    return sorted(int(i) for i in torch.nonzero(massive)[:, 0])


def add_direction(handle: ModelHandle, layer: int, vector_D: Tensor) -> AbstractContextManager[None]:
    """Add ``vector_D`` (not normalised: its norm is the strength) to ``resid_post.{layer}`` at every position
    while the context is open. A zero vector leaves the forward pass unchanged."""
    (layer,) = _layer_range(handle, [layer])
    v = torch.as_tensor(vector_D).detach().flatten()
    if v.numel() != handle.d_model:
        raise ValueError(f"vector has {v.numel()} elements but the model's d_model is {handle.d_model}")
    v = v.to(device=handle.device, dtype=torch.float32)
    block, _ = hf_site(base_model(handle.hf_model), HookPoint(layer, "resid_post"))
    add = lambda x: (x.float() + v).to(x.dtype)  # noqa: E731
    return _hooked([lambda: block.register_forward_hook(_edit_output(add))])


@torch.inference_mode()
def _next_token_logprobs(handle: ModelHandle, ids_BT: Tensor, mask_BT: Tensor) -> Tensor:
    """Log-softmax of the full model's logits at every position, fp32 ``[B, T, V]`` (Gemma's softcap included:
    the HF forward applies it)."""
    logits = handle.hf_model(input_ids=ids_BT, attention_mask=mask_BT, use_cache=False).logits
    return torch.log_softmax(logits.float(), -1)


def kl_on_prompts(handle: ModelHandle, texts: Sequence[str], intervention: Intervention | None = None,
                  batch_size: int = 4) -> float:
    """Mean next-token ``KL(clean || intervened)`` in nats over every real (non-pad) token of ``texts``.

    Each text is rendered as one user turn (the chat template where the tokenizer has one, else the plain
    ``Human:/Assistant:`` format of ``render.py``), so the distributions are those the model has where it
    is used. ``intervention`` is a factory of a context manager (``lambda: ablate_direction(h, d)``);
    None gives 0. Batches are right-padded (positions of real tokens do not move) and length-sorted.
    The full ``lm_head`` runs at every position here: KL needs the whole distribution. Memory is
    ``batch_size x T x vocab`` fp32 twice (Gemma-3-270M, 4 x 64 tokens: 2 x 268 MB).
    """
    if not texts:
        raise ValueError("kl_on_prompts needs at least one prompt")
    if intervention is None:
        return 0.0
    rendered = render_rows(handle.tokenizer, [{"prompt": t} for t in texts])
    order = sorted(range(len(rendered)), key=lambda i: rendered[i].n_tokens)
    pad = handle.tokenizer.pad_token_id or 0
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        ids_BT, mask_BT = pad_right([rendered[i].ids for i in order[start:start + batch_size]], pad)
        ids_BT, mask_BT = ids_BT.to(handle.device), mask_BT.to(handle.device)
        clean = _next_token_logprobs(handle, ids_BT, mask_BT)
        with intervention():
            edited = _next_token_logprobs(handle, ids_BT, mask_BT)
        kl_BT = (clean.exp() * (clean - edited)).sum(-1)
        real = mask_BT.bool()
        total += float(kl_BT[real].double().sum())
        count += int(real.sum())
    return total / count
