"""Run the deepest layer of a forward only at the tokens that are read.

An extraction stops after its deepest hooked layer, and with row positions (``last_prompt_token``,
``mean_response``, ...) it reads that layer's output at a few tokens per row. Every block of a decoder layer
works token by token except the attention's mixing: its keys and values are needed at every token (the read
tokens attend to them), but its query projection, its output projection and the MLP are needed only at the
tokens read. ``narrow_layer`` hooks those three modules of one layer so they run on the read tokens alone:
the input's rows are gathered before the module, the module's output is scattered back into a zero tensor of
the full shape after it. Elsewhere the layer's output is not that token's value (a zero query attends evenly,
a zero MLP output adds nothing); no later layer runs and no position reads it.

On Gemma-3-270M (hidden 640, MLP 2,048, 4 query heads of 256, 1 key/value head) the three modules are 94% of a
layer's matrix products per token; on the 256 unique lm-survival-instinct rows (83.5 tokens a row, 6 read by
``last_prompt_token`` + ``mean_response``) the deepest layer then computes ~12% of its full cost.

Modules narrowed, where the layer has them: the MLP (``mlp`` / ``feed_forward``), and the attention's
``q_proj`` and ``o_proj`` (Llama, Gemma, Qwen, Mistral, OLMo; a fused ``qkv_proj`` / ``c_attn`` is left whole).
The hooks run before any other forward hook of those modules, so a hook on ``mlp_out`` sees the full shape.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .hooks import _ATTN, _MLP

TOKENWISE_ATTN = ("q_proj", "o_proj")
"""Attention submodules that work token by token (a fused projection that also makes keys is not one)."""


def tokenwise_modules(layer: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of ``layer``'s blocks that work token by token and whose output is needed only
    at the tokens read: its MLP, and its attention's query and output projections."""
    found = []
    for attn_name in _ATTN:
        attn = getattr(layer, attn_name, None)
        if isinstance(attn, nn.Module):
            found += [(f"{attn_name}.{n}", getattr(attn, n)) for n in TOKENWISE_ATTN
                      if isinstance(getattr(attn, n, None), nn.Module)]
            break
    for mlp_name in _MLP:
        if isinstance(getattr(layer, mlp_name, None), nn.Module):
            found.append((mlp_name, getattr(layer, mlp_name)))
            break
    return found


def _narrowed(module: nn.Module, rows_R: Tensor) -> list[RemovableHandle]:
    """Hooks that run ``module`` on rows ``rows_R`` of its first input, flattened over all but the last axis,
    and scatter its output back into zeros of the full shape."""
    lead: list = []

    def gather(mod, args):
        x = args[0]
        lead[:] = [x.shape[:-1], rows_R.to(x.device)]
        return (x.reshape(-1, x.shape[-1]).index_select(0, lead[1])[None], *args[1:])

    def scatter(mod, args, out):
        y = out[0] if isinstance(out, tuple) else out
        shape, rows = lead
        full = y.new_zeros(*shape, y.shape[-1])
        full.view(-1, y.shape[-1]).index_copy_(0, rows, y[0])
        return (full, *out[1:]) if isinstance(out, tuple) else full

    return [module.register_forward_pre_hook(gather, prepend=True), module.register_forward_hook(scatter, prepend=True)]


def narrow_layer(layer: nn.Module, rows_R: Tensor) -> list[RemovableHandle]:
    """Make ``layer``'s MLP and query/output projections run only at the flat token indices ``rows_R`` (into
    its ``[B, T]`` input, row-major: ``b * T + t``; a packed ``[1, N]`` row: the row position). The layer's
    output is exact at those tokens and not meaningful elsewhere. Remove the returned hooks to undo."""
    return [h for _, m in tokenwise_modules(layer) for h in _narrowed(m, rows_R)]
