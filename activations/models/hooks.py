"""Uniform hook-point names and their location in each backend.

undertow names a hook point ``{site}.{layer}`` with ``site`` one of

- ``resid_pre``  : the residual stream entering decoder layer ``layer``
                   (``embed`` is an alias for ``resid_pre.0``: embeddings after
                   any model-specific scaling, e.g. Gemma's sqrt(d_model))
- ``resid_post`` : the residual stream leaving decoder layer ``layer``
- ``attn_out``   : what the attention block adds to the residual stream
- ``mlp_out``    : what the MLP block adds to the residual stream

"What is added" matters for sandwich-norm models (Gemma 2/3): there the block
output passes through ``post_attention_layernorm`` / ``post_feedforward_layernorm``
before it is added, so those norms' outputs are the hook sites. In Llama,
``post_attention_layernorm`` is the *pre*-MLP norm, so the raw ``self_attn`` /
``mlp`` outputs are used. OLMo 2 (post-norm: no norm before the blocks, one
after each) follows the Gemma rule. TransformerLens names the same four sites
``blocks.{L}.hook_{site}``.

Patterns select several points: ``resid_post.*`` (every layer),
``resid_post.4-12`` (inclusive range), ``mlp_out.6``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from torch import nn

from ..errors import HookError

SITES = ("resid_pre", "attn_out", "mlp_out", "resid_post")  # forward order within a layer
_NAME_RE = re.compile(r"^(?P<site>[a-z_]+)\.(?P<layer>\*|\d+(?:-\d+)?)$")


@dataclass(frozen=True, order=True)
class HookPoint:
    """One hook site at one layer."""

    layer: int
    """Decoder layer index, 0-based."""
    site: str
    """One of ``SITES``."""

    @property
    def name(self) -> str:
        return f"{self.site}.{self.layer}"

    @property
    def tl_name(self) -> str:
        """The TransformerLens hook name for this point."""
        return f"blocks.{self.layer}.hook_{self.site}"

    @property
    def depth(self) -> int:
        """Index of the last decoder layer that must run to produce this point."""
        return self.layer - 1 if self.site == "resid_pre" else self.layer


def all_hook_names(n_layers: int) -> list[str]:
    """Every valid hook name for a model with ``n_layers`` decoder layers."""
    return ["embed"] + [f"{s}.{i}" for i in range(n_layers) for s in SITES]


def parse_hooks(patterns: str | list[str], n_layers: int | None) -> list[HookPoint]:
    """Expand hook names/patterns into sorted, deduplicated ``HookPoint``s.

    Raises ``HookError`` naming the valid sites/layers (and close matches) on a
    bad name or an out-of-range layer. ``n_layers=None`` checks the syntax only
    (a config before its model loads): no range check, ``*`` expands to nothing,
    and a hint never invents a layer range.
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    if not patterns:
        raise HookError("no hooks requested; pass e.g. 'resid_post.*' or 'resid_post.4-12'")
    points: set[HookPoint] = set()
    for pat in patterns:
        points.update(_parse_one(pat, n_layers))
    return sorted(points, key=lambda p: (p.layer, SITES.index(p.site)))


def _parse_one(pattern: str, n_layers: int) -> list[HookPoint]:
    if pattern == "embed":
        return [HookPoint(0, "resid_pre")]
    m = _NAME_RE.match(pattern)
    if m is None or m["site"] not in SITES:
        guess = n_layers if n_layers is not None else 1 + max((int(n) for n in re.findall(r"\d+", pattern)), default=0)
        close = difflib.get_close_matches(pattern, all_hook_names(guess), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        layers = f"layer 0-{n_layers - 1}" if n_layers is not None else "a layer number of the model"
        raise HookError(
            f"unknown hook {pattern!r}: valid hooks are 'embed' or '<site>.<layer>' with site in "
            f"{', '.join(SITES)} and {layers} (or '*', or a range like 4-12).{hint}"
        )
    layer = m["layer"]
    if layer == "*" and n_layers is None:
        return []
    if layer == "*":
        lo, hi = 0, n_layers - 1
    elif "-" in layer:
        lo, hi = (int(x) for x in layer.split("-"))
    else:
        lo = hi = int(layer)
    if lo > hi and n_layers is None:
        raise HookError(f"hook {pattern!r}: the layer range {lo}-{hi} is empty; write it low-high")
    if n_layers is not None and (lo > hi or hi >= n_layers):
        raise HookError(
            f"hook {pattern!r}: layer out of range; this model has {n_layers} layers (0-{n_layers - 1})"
        )
    return [HookPoint(i, m["site"]) for i in range(lo, hi + 1)]


_LAYER_PATHS = ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers")
_ATTN = ("self_attn", "attention", "attn")
_MLP = ("mlp", "feed_forward")


def decoder_path(hf_model: nn.Module) -> str:
    """Dotted path of the ModuleList of decoder layers (Llama/Gemma/Qwen/Mistral/Phi/OLMo: ``model.layers``;
    Gemma 3 multimodal: ``model.language_model.layers``; GPT-2: ``transformer.h``; NeoX: ``gpt_neox.layers``)."""
    for path in _LAYER_PATHS:
        obj = hf_model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return path
    raise HookError(f"cannot locate decoder layers in {type(hf_model).__name__}: looked for {', '.join(_LAYER_PATHS)}")


def decoder_layers(hf_model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers of a causal LM."""
    obj = hf_model
    for part in decoder_path(hf_model).split("."):
        obj = getattr(obj, part)
    return obj


def site_attr(layer: nn.Module, site: str) -> str | None:
    """Name of the submodule of ``layer`` whose output is ``attn_out`` / ``mlp_out`` (None: the layer itself,
    for ``resid_pre`` / ``resid_post``).

    "What is added to the residual stream": a layer with ``post_feedforward_layernorm`` (Gemma 2/3 sandwich
    norms, OLMo 2 post-norm) adds the *normed* block output, so the post norms are the sites; otherwise
    (Llama, Qwen, Mistral, Phi-3, most others; there ``post_attention_layernorm`` is the pre-MLP norm) the
    raw attention / MLP module output."""
    if site in ("resid_pre", "resid_post"):
        return None
    if hasattr(layer, "post_feedforward_layernorm"):
        return "post_attention_layernorm" if site == "attn_out" else "post_feedforward_layernorm"
    for name in _ATTN if site == "attn_out" else _MLP:
        if isinstance(getattr(layer, name, None), nn.Module):
            return name
    raise HookError(f"{type(layer).__name__} has no {'attention' if site == 'attn_out' else 'MLP'} submodule "
                    f"(looked for {', '.join(_ATTN if site == 'attn_out' else _MLP)}): hook resid_pre/resid_post instead")


def hf_site(hf_model: nn.Module, point: HookPoint) -> tuple[nn.Module, str]:
    """(module, "input" | "output") whose activation is ``point`` in the HF model."""
    layer = decoder_layers(hf_model)[point.layer]
    if point.site == "resid_pre":
        return layer, "input"
    attr = site_attr(layer, point.site)
    return (layer if attr is None else getattr(layer, attr)), "output"
