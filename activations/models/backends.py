"""Wrap one in-memory HF model for the ``transformer_lens`` and ``nnsight`` backends.

Both wrappers start from the same HF model, so the fingerprint (computed on the
HF weights) is the same across backends. TransformerLens gets converted copies
of the weights with no LayerNorm folding or centring, so its residual stream is
the HF residual stream (parity per architecture: ``tests/activations/test_architectures.py``).
nnsight wraps the HF model itself (no copy) as a ``TransformersModel`` (0.8
deprecates ``LanguageModel``, which is that class pinned to text generation).
"""

from __future__ import annotations

import importlib
from typing import Literal, get_args

import torch
from torch import nn

from .tl_config import tl_config_from_hf

Backend = Literal["hf", "transformer_lens", "nnsight"]
"""A backend: the config field type (its choices listed by flags and errors)."""
BACKENDS: tuple[str, ...] = get_args(Backend)

_CONVERTERS = {  # TL original_architecture -> its weight converter (transformer_lens.pretrained.weight_conversions)
    "LlamaForCausalLM": "convert_llama_weights", "MistralForCausalLM": "convert_mistral_weights",
    "Qwen2ForCausalLM": "convert_qwen2_weights", "Qwen3ForCausalLM": "convert_qwen3_weights",
    "Gemma2ForCausalLM": "convert_gemma_weights", "Gemma3ForCausalLM": "convert_gemma_weights",
    "Phi3ForCausalLM": "convert_phi3_weights", "Olmo2ForCausalLM": "convert_olmo2_weights",
}


def to_transformer_lens(hf_model: nn.Module, tokenizer, dtype: torch.dtype, device: torch.device):
    from transformer_lens import HookedTransformer

    cfg = tl_config_from_hf(hf_model.config, dtype, device)
    conversions = importlib.import_module("transformer_lens.pretrained.weight_conversions")
    convert = getattr(conversions, _CONVERTERS[cfg.original_architecture])
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
    state_dict = convert(hf_model, cfg)
    model.load_and_process_state_dict(
        state_dict, fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )
    return model.to(device).eval()


def to_nnsight(hf_model: nn.Module, tokenizer):
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(hf_model, task="text-generation", tokenizer=tokenizer)
