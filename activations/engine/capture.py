"""Capture hook points for one tokenised batch on any backend.

``capture_hf`` is the fast path the engine uses: forward hooks on the real HF
modules and an early exit right after the deepest requested layer (no later
layers, no lm_head: on Gemma-3-270M the 262k-vocab unembedding is ~65% of a
full forward). ``capture_transformer_lens`` / ``capture_nnsight`` produce the same
tensors through those libraries, for parity tests and for users who want them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..models.handle import ModelHandle
from ..models.hooks import HookPoint, decoder_path, hf_site, site_attr
from ..models.narrow import narrow_layer


class _StopForward(Exception):
    """Raised from a hook to end the forward pass after the deepest hooked layer."""


def _first(x):
    return x[0] if isinstance(x, tuple) else x


@torch.inference_mode()
def capture_hf(handle: ModelHandle, input_ids_BT: Tensor, attention_mask_BT: Tensor | None,
               points: Iterable[HookPoint], on_capture=None, read_rows: Tensor | None = None,
               **forward_kwargs) -> dict[str, Tensor]:
    """Run the HF body up to the deepest point, returning ``{hook name: acts_BTD}``.

    ``on_capture(name, acts_BTD)`` (optional) is called as each point is produced,
    so callers can pool/downcast on the fly instead of holding every layer.
    ``read_rows`` (optional): the flat token indices (``b * T + t``) at which the deepest layer's points are
    read; that layer's MLP and query/output projections then run there only (``models/narrow.py``), and its
    points are exact at those tokens alone.
    ``forward_kwargs`` go to the body (``position_ids``, ``past_key_values``,
    ``use_cache``: ``shared_prompts.py``); the default is one uncached pass.
    """
    points = list(points)
    out: dict[str, Tensor] = {}
    deepest = max(p.depth for p in points)
    handles = []

    def record(name: str, acts: Tensor) -> None:
        if on_capture is not None:
            on_capture(name, acts)
        else:
            out[name] = acts

    for p in points:
        module, kind = hf_site(handle.hf_model, p)
        if kind == "input":
            hook = (lambda n: lambda mod, args, kwargs: record(n, args[0] if args else kwargs["hidden_states"]))(p.name)
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook((lambda n: lambda mod, i, o: record(n, _first(o)))(p.name)))

    def stop(*_):
        raise _StopForward

    if deepest >= 0:
        if read_rows is not None:
            handles += narrow_layer(handle.layers[deepest], read_rows)
        handles.append(handle.layers[deepest].register_forward_hook(stop))
    else:  # only resid_pre.0 / embed: stop as layer 0 starts, after the pre-hook ran
        handles.append(handle.layers[0].register_forward_pre_hook(stop))
    body = handle.hf_model.get_decoder() if hasattr(handle.hf_model, "get_decoder") else handle.hf_model
    try:
        body(input_ids=input_ids_BT, attention_mask=attention_mask_BT, **{"use_cache": False, **forward_kwargs})
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


@torch.inference_mode()
def capture_transformer_lens(handle: ModelHandle, input_ids_BT: Tensor, attention_mask_BT: Tensor | None,
                             points: Iterable[HookPoint]) -> dict[str, Tensor]:
    """``run_with_cache`` in its expert form: ``return_type=None``, ``stop_at_layer``."""
    points = list(points)
    names = {p.tl_name: p.name for p in points}
    stop = max(p.layer for p in points) + 1
    _, cache = handle.model.run_with_cache(
        input_ids_BT, attention_mask=attention_mask_BT, names_filter=list(names),
        return_type=None, stop_at_layer=stop,
    )
    return {names[k]: v for k, v in cache.items()}


@torch.inference_mode()
def capture_nnsight(handle: ModelHandle, input_ids_BT: Tensor, attention_mask_BT: Tensor | None,
                    points: Iterable[HookPoint]) -> dict[str, Tensor]:
    """nnsight ``.save()`` on every requested module."""
    points = list(points)
    layers = handle.model
    for part in decoder_path(handle.hf_model).split("."):  # the same path on nnsight's envoy tree
        layers = getattr(layers, part)
    saved: list = []
    inputs = {"input_ids": input_ids_BT}
    if attention_mask_BT is not None:
        inputs["attention_mask"] = attention_mask_BT
    with handle.model.trace(inputs):
        for p in points:
            layer = layers[p.layer]
            if p.site == "resid_pre":
                saved.append(layer.input.save())
            elif p.site == "resid_post":
                saved.append(layer.output.save())
            else:
                saved.append(getattr(layer, site_attr(handle.layers[p.layer], p.site)).output.save())
    return {p.name: _first(getattr(s, "value", s)) for p, s in zip(points, saved, strict=True)}


def capture(handle: ModelHandle, input_ids_BT: Tensor, attention_mask_BT: Tensor | None,
            points: Iterable[HookPoint]) -> dict[str, Tensor]:
    """Dispatch on ``handle.backend``."""
    fn = {"hf": capture_hf, "transformer_lens": capture_transformer_lens, "nnsight": capture_nnsight}[handle.backend]
    return fn(handle, input_ids_BT, attention_mask_BT, points)
