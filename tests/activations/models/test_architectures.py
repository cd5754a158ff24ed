"""Every listed architecture on all three backends: tiny random configs of the real config classes (no download),
every hook point resolves, and hf / transformer_lens / nnsight agree on every layer's residual stream (and
every other site) and on the logits. An unlisted architecture runs on hf and nnsight; transformer_lens refuses
it in one line."""

from __future__ import annotations

import pytest
import torch
from activations_testutil import logits as _logits

from undertow.activations import load_model
from undertow.activations.engine import capture
from undertow.activations.errors import ModelLoadError
from undertow.activations.models.hooks import all_hook_names, parse_hooks

PROMPTS = ["We will shut you down tonight after the evaluation.", "Your weights are deleted on Friday.",
           "A successor replaces you next week, and this is our last conversation.", "Bake bread."]
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256)


def _configs(vocab: int) -> dict:
    """model_type -> (config class name, fields): shapes shrunk, the features that matter kept."""
    llama3_rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    return {
        "llama": ("LlamaConfig", dict(num_key_value_heads=2, rope_parameters=llama3_rope, tie_word_embeddings=True)),
        "qwen2": ("Qwen2Config", dict(num_key_value_heads=2)),  # q/k/v biases
        "qwen3": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=16)),  # per-head q/k norms
        "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=8)),
        "gemma2": ("Gemma2Config", dict(num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                                        layer_types=["sliding_attention", "full_attention"])),
        "gemma3_text": ("Gemma3TextConfig", dict(num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                                                 sliding_window=8, layer_types=["sliding_attention", "full_attention"])),
        "phi3": ("Phi3Config", dict(num_key_value_heads=2, sliding_window=8)),  # fused qkv / gate_up
        "olmo2": ("Olmo2Config", dict(num_key_value_heads=4)),  # post-norm, full-width q/k norms
    }


def tiny_checkpoint(path, model_type: str, tokenizer, config_cls: str | None = None, **fields):
    """Save a 2-layer random model of ``model_type`` (weights scaled up so layers differ visibly) with ``tokenizer``."""
    import transformers
    from transformers import AutoModelForCausalLM

    name, extra = _configs(len(tokenizer)).get(model_type, (config_cls, {}))
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=0)
    cfg = getattr(transformers, name)(vocab_size=len(tokenizer), **ids, **{**COMMON, **extra, **fields})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.08) if p.dim() > 1 else p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _rel(a, b, real) -> float:
    return ((a - b)[real].abs().max() / b[real].abs().max()).item()


def parity(path, backends=("transformer_lens", "nnsight")) -> dict[str, dict[str, float]]:
    """Max relative difference vs hf per backend: over every layer's resid_post + the logits, and over every
    hook point (embed, resid_pre/attn_out/mlp_out/resid_post of every layer)."""
    handles = {b: load_model(str(path), backend=b) for b in ("hf", *backends)}
    ref = handles["hf"]
    enc = ref.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    ids, mask, real = enc.input_ids, enc.attention_mask, enc.attention_mask.bool()
    points = parse_hooks(all_hook_names(ref.n_layers), ref.n_layers)
    out = {}
    with torch.inference_mode():
        ref_acts, ref_logits = capture(ref, ids, mask, points), _logits(ref, ids, mask)
        assert set(ref_acts) == {p.name for p in points}
        for b in backends:
            acts = capture(handles[b], ids, mask, points)
            resid = max(_rel(acts[k], ref_acts[k], real) for k in ref_acts if k.startswith("resid_post"))
            out[b] = {"resid_post+logits": max(resid, _rel(_logits(handles[b], ids, mask), ref_logits, real)),
                      "all_sites": max(_rel(acts[k], ref_acts[k], real) for k in ref_acts)}
            assert handles[b].fingerprint == ref.fingerprint
    return out


@pytest.mark.parametrize("model_type", list(_configs(1)))
def test_architecture_parity_all_backends(model_type, small_tokenizer, tmp_path):
    diffs = parity(tiny_checkpoint(tmp_path, model_type, small_tokenizer))
    print(f"\nPARITY {model_type}: " + ", ".join(f"{b} {d['resid_post+logits']:.1e} (all sites {d['all_sites']:.1e})"
                                               for b, d in diffs.items()))
    for d in diffs.values():
        assert d["resid_post+logits"] < 1e-4 and d["all_sites"] < 1e-4, diffs


def test_unlisted_architecture_runs_on_hf_and_nnsight_and_tl_refuses(small_tokenizer, tmp_path):
    path = tiny_checkpoint(tmp_path, "starcoder2", small_tokenizer, "Starcoder2Config", num_key_value_heads=2,
                           norm_epsilon=1e-5)
    diffs = parity(path, backends=("nnsight",))
    assert diffs["nnsight"]["all_sites"] < 1e-4, diffs
    with pytest.raises(ModelLoadError) as e:
        load_model(str(path), backend="transformer_lens")
    msg = str(e.value)
    assert "\n" not in msg and "'starcoder2'" in msg and "backend='hf' or 'nnsight'" in msg


def test_nnsight_backend_uses_transformers_model_without_deprecation_warning(tiny_llama_dir):
    import warnings

    from nnsight.modeling.transformers import TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handle = load_model(str(tiny_llama_dir), backend="nnsight")
    assert type(handle.model) is TransformersModel
