"""A stable model fingerprint: sha256 over the architecture config and the weights.

The weights are hashed after rounding to bfloat16, so the same checkpoint
loaded in fp32 or bf16 gets the same fingerprint (fp32 -> bf16 is a
deterministic round-to-nearest). It is always computed on the HF model before
any backend wraps it, so it is identical across ``hf``, ``transformer_lens`` and
``nnsight``. Cost: ~0.6 s for Gemma-3-270M on 2 CPU cores (cached for embedded models).
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

_CONFIG_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "vocab_size", "head_dim", "rms_norm_eps", "tie_word_embeddings",
)


def config_digest(config) -> dict:
    """The architecture fields that define the computation (JSON-serialisable)."""
    return {k: getattr(config, k, None) for k in _CONFIG_KEYS}


@torch.no_grad()
def fingerprint(hf_model: nn.Module) -> str:
    """``sha256:<16 hex>`` over config digest + every parameter and buffer-free weight."""
    h = hashlib.sha256(json.dumps(config_digest(hf_model.config), sort_keys=True).encode())
    for name, tensor in sorted(hf_model.state_dict().items()):
        if not tensor.is_floating_point():
            continue
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]
