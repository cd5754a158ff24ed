"""Wrap one in-memory HF model for the ``transformer_lens`` and ``nnsight`` backends.

Both wrappers start from the same HF model, so the fingerprint (computed on the
HF weights) is the same across backends. TransformerLens gets converted copies
of the weights with no LayerNorm folding or centring, so its residual stream is
the HF residual stream (parity tested to <1e-3 relative).
"""

from __future__ import annotations

import torch
from torch import nn

from .tl_config import tl_config_from_hf

BACKENDS = ("hf", "transformer_lens", "nnsight")


def to_transformer_lens(hf_model: nn.Module, tokenizer, dtype: torch.dtype, device: torch.device):
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_gemma_weights, convert_llama_weights

    cfg = tl_config_from_hf(hf_model.config, dtype, device)
    convert = convert_llama_weights if cfg.original_architecture == "LlamaForCausalLM" else convert_gemma_weights
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
    state_dict = convert(hf_model, cfg)
    model.load_and_process_state_dict(
        state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )
    return model.to(device).eval()


def to_nnsight(hf_model: nn.Module, tokenizer):
    from nnsight import LanguageModel

    return LanguageModel(hf_model, tokenizer=tokenizer)
