"""Build a TransformerLens config from an HF config, with no network call.

TransformerLens keys many configs on the *hub name* (Gemma 2/3 and OLMo 2 are
hard-coded per size) and fetches the rest from the hub, so neither works for an
offline checkpoint of a non-listed size (SmolLM2, the tiny test models, a
fine-tune in a local directory). We read every field from the in-memory HF
config instead, one builder per ``model_type``; ``TL_ARCHITECTURES`` is the
supported list. Parity vs HF (max relative difference over every layer's
resid_post and the logits, tiny random configs, fp32):
``tests/activations/test_architectures.py``; on the embedded models max
|Δlogit| 2.2e-5 (Gemma-3-270M) and 3.1e-5 (SmolLM2-135M).
"""

from __future__ import annotations

import math

import torch

from ..errors import ModelLoadError


def _rope(cfg, layer_type: str | None = None) -> dict:
    """The rope parameters of ``cfg`` (transformers 5 ``rope_parameters``; per layer type for Gemma 3)."""
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    if layer_type and isinstance(params.get(layer_type), dict):
        return params[layer_type]
    if "rope_theta" not in params:
        params["rope_theta"] = float(getattr(cfg, "rope_theta", 10000.0))
    return params


def _d_head(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def _window(cfg, n_layers: int) -> dict:
    """Sliding-window attention on every layer (Mistral, Phi-3), when the config enables it."""
    window = getattr(cfg, "sliding_window", None)
    if getattr(cfg, "use_sliding_window", True) is False or not window:
        return {}
    return dict(use_local_attn=True, window_size=window, attn_types=["local"] * n_layers)


def _decoder(cfg, architecture: str) -> dict:
    """Fields shared by every pre-norm RMS / rotary / gated-MLP decoder."""
    d_head = _d_head(cfg)
    n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    rope = _rope(cfg)
    return dict(
        d_model=cfg.hidden_size, d_head=d_head, n_heads=cfg.num_attention_heads,
        d_mlp=cfg.intermediate_size, n_layers=cfg.num_hidden_layers,
        n_ctx=min(cfg.max_position_embeddings, 8192), eps=cfg.rms_norm_eps, d_vocab=cfg.vocab_size,
        act_fn=getattr(cfg, "hidden_act", None) or cfg.hidden_activation,
        n_key_value_heads=n_kv if n_kv != cfg.num_attention_heads else None,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False,
        rotary_dim=round(d_head * float(rope.get("partial_rotary_factor", 1.0))),
        rotary_base=float(rope["rope_theta"]), final_rms=True, gated_mlp=True,
        original_architecture=architecture,
    )


def _llama(cfg) -> dict:
    """Llama 1-3.x; Llama 3.x's ``llama3`` rope scaling is TL's NTK-by-parts rope."""
    fields = _decoder(cfg, "LlamaForCausalLM")
    rope = _rope(cfg)
    if rope.get("rope_type") == "llama3":
        fields.update(use_NTK_by_parts_rope=True, NTK_by_parts_factor=float(rope["factor"]),
                      NTK_by_parts_low_freq_factor=float(rope["low_freq_factor"]),
                      NTK_by_parts_high_freq_factor=float(rope["high_freq_factor"]),
                      NTK_original_ctx_len=int(rope["original_max_position_embeddings"]))
    elif rope.get("rope_type", "default") != "default":
        raise ModelLoadError(f"rope_type {rope['rope_type']!r} has no TransformerLens equivalent: use backend='hf' or 'nnsight'")
    return fields


def _mistral(cfg) -> dict:
    return {**_decoder(cfg, "MistralForCausalLM"), **_window(cfg, cfg.num_hidden_layers)}


def _qwen2(cfg) -> dict:
    """Qwen 2 / 2.5: q/k/v biases (the converter carries them), optional sliding window."""
    return {**_decoder(cfg, "Qwen2ForCausalLM"), **_window(cfg, cfg.num_hidden_layers)}


def _qwen3(cfg) -> dict:
    """Qwen 3: per-head RMS q/k norms."""
    return {**_decoder(cfg, "Qwen3ForCausalLM"), "use_qk_norm": True}


def _phi3(cfg) -> dict:
    """Phi-3: fused qkv and gate_up projections (split by the converter), sliding window on every layer."""
    return {**_decoder(cfg, "Phi3ForCausalLM"), **_window(cfg, cfg.num_hidden_layers)}


def _olmo2(cfg) -> dict:
    """OLMo 2: post-norm (norms on the block outputs, none before), q/k RMS norms over the full projection
    (TL keys both on ``original_architecture``)."""
    return {**_decoder(cfg, "Olmo2ForCausalLM"), "attn_types": ["global"] * cfg.num_hidden_layers}


def _gemma_common(cfg, architecture: str) -> dict:
    """Gemma 2 / 3: sandwich norms, sqrt(query_pre_attn_scalar) attention scale, local/global layers."""
    fields = _decoder(cfg, architecture)
    fields.update(
        n_key_value_heads=cfg.num_key_value_heads, use_attn_scale=True,
        attn_scale=math.sqrt(cfg.query_pre_attn_scalar), use_normalization_before_and_after=True,
        window_size=cfg.sliding_window, use_local_attn=True,
        attn_types=["local" if t == "sliding_attention" else "global" for t in cfg.layer_types],
        output_logits_soft_cap=cfg.final_logit_softcapping or -1.0,
        attn_scores_soft_cap=cfg.attn_logit_softcapping or -1.0,
    )
    return fields


def _gemma2(cfg) -> dict:
    return _gemma_common(cfg, "Gemma2ForCausalLM")


def _gemma3(cfg) -> dict:
    """Gemma 3: per-head q/k norms, separate rope bases for local and global layers."""
    fields = _gemma_common(cfg, "Gemma3ForCausalLM")
    fields.update(use_qk_norm=True, rotary_base=float(_rope(cfg, "full_attention")["rope_theta"]),
                  rotary_base_local=float(_rope(cfg, "sliding_attention")["rope_theta"]))
    return fields


_BUILDERS = {"llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma2": _gemma2,
             "gemma3_text": _gemma3, "gemma3": _gemma3, "phi3": _phi3, "olmo2": _olmo2}
TL_ARCHITECTURES = tuple(_BUILDERS)
"""HF ``model_type``s the transformer_lens backend converts (Llama 3.x, Mistral, Qwen 2.5/3, Gemma 2/3,
Phi-3, OLMo 2)."""


def text_config(hf_config):
    """The decoder's config: Gemma 3 multimodal checkpoints (4B-27B) nest it under ``text_config``."""
    return getattr(hf_config, "text_config", None) or hf_config


def tl_refusal(hf_config) -> str | None:
    """Why the transformer_lens backend cannot take this model (one line), or None when it can."""
    model_type = text_config(hf_config).model_type
    if model_type in _BUILDERS:
        return None
    arch = (getattr(hf_config, "architectures", None) or [model_type])[0]
    return (f"transformer_lens backend: undertow converts model types {', '.join(TL_ARCHITECTURES)} to "
            f"TransformerLens, not {model_type!r} ({arch}); use backend='hf' or 'nnsight', which hook any HF "
            "decoder")


def tl_config_from_hf(hf_config, dtype: torch.dtype, device: str | torch.device):
    """A ``HookedTransformerConfig`` (transformer_lens is imported here: it takes seconds to import)."""
    reason = tl_refusal(hf_config)
    if reason is not None:
        raise ModelLoadError(reason)
    from transformer_lens import HookedTransformerConfig

    cfg = text_config(hf_config)
    fields = _BUILDERS[cfg.model_type](cfg)
    return HookedTransformerConfig(
        **fields, dtype=dtype, device=str(device), init_weights=False,
        model_name=getattr(hf_config, "_name_or_path", "") or cfg.model_type,
        default_prepend_bos=False,
    )
