"""Build a TransformerLens config from an HF config, with no network call.

TransformerLens keys Gemma 3 configs on the *hub name* (hard-coded per size) and
fetches Llama-family configs from the hub, so neither works for an offline
checkpoint of a non-listed size (SmolLM2, or the 2-layer test models). We read
every field from the in-memory HF config instead. Measured on the embedded
models: max |Δlogit| vs HF 2.2e-5 (Gemma-3-270M) and 3.1e-5 (SmolLM2-135M).
"""

from __future__ import annotations

import math

import torch

from .errors import ModelLoadError


def _rope_theta(cfg, layer_type: str | None = None) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    if layer_type and layer_type in params:
        return float(params[layer_type]["rope_theta"])
    if "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(cfg, "rope_theta", 10000.0))


def _llama(cfg) -> dict:
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return dict(
        d_model=cfg.hidden_size, d_head=d_head, n_heads=cfg.num_attention_heads,
        d_mlp=cfg.intermediate_size, n_layers=cfg.num_hidden_layers,
        n_ctx=min(cfg.max_position_embeddings, 8192), eps=cfg.rms_norm_eps, d_vocab=cfg.vocab_size,
        act_fn=cfg.hidden_act,
        n_key_value_heads=cfg.num_key_value_heads if cfg.num_key_value_heads != cfg.num_attention_heads else None,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False,
        rotary_dim=d_head, rotary_base=_rope_theta(cfg), final_rms=True, gated_mlp=True,
        original_architecture="LlamaForCausalLM",
    )


def _gemma3(cfg) -> dict:
    layer_types = list(cfg.layer_types)
    return dict(
        d_model=cfg.hidden_size, d_head=cfg.head_dim, n_heads=cfg.num_attention_heads,
        d_mlp=cfg.intermediate_size, n_layers=cfg.num_hidden_layers,
        n_ctx=min(cfg.max_position_embeddings, 8192), eps=cfg.rms_norm_eps, d_vocab=cfg.vocab_size,
        act_fn=cfg.hidden_activation, normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=cfg.head_dim,
        rotary_base=_rope_theta(cfg, "full_attention"), rotary_base_local=_rope_theta(cfg, "sliding_attention"),
        use_attn_scale=True, attn_scale=math.sqrt(cfg.query_pre_attn_scalar),
        n_key_value_heads=cfg.num_key_value_heads, gated_mlp=True, final_rms=True,
        use_normalization_before_and_after=True, use_qk_norm=True, window_size=cfg.sliding_window,
        use_local_attn=True, attn_types=["local" if t == "sliding_attention" else "global" for t in layer_types],
        output_logits_soft_cap=cfg.final_logit_softcapping or -1.0,
        attn_scores_soft_cap=cfg.attn_logit_softcapping or -1.0,
        original_architecture="Gemma3ForCausalLM",
    )


_BUILDERS = {"llama": _llama, "gemma3_text": _gemma3, "gemma3": _gemma3}


def tl_config_from_hf(hf_config, dtype: torch.dtype, device: str | torch.device):
    """A ``HookedTransformerConfig`` (transformer_lens is imported here: it takes seconds to import)."""
    from transformer_lens import HookedTransformerConfig

    builder = _BUILDERS.get(hf_config.model_type)
    if builder is None:
        raise ModelLoadError(
            f"the transformer_lens backend supports model types {', '.join(_BUILDERS)}, not {hf_config.model_type!r}: "
            "use backend='hf' or 'nnsight'"
        )
    fields = builder(hf_config)
    return HookedTransformerConfig(
        **fields, dtype=dtype, device=str(device), init_weights=False,
        model_name=getattr(hf_config, "_name_or_path", "") or hf_config.model_type,
        default_prepend_bos=False,
    )
