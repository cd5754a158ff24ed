"""ExtractConfig: validation, YAML loading, and every committed extract config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from undertow.activations import ExtractConfig, HookError, PositionError
from undertow.core.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[3] / "experiments" / "configs").glob("extract_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_committed_configs_load(path):
    cfg = ExtractConfig.from_yaml(path)
    assert cfg.hooks and cfg.positions and cfg.dataset


def test_committed_demo_exists():
    assert any(p.name == "extract_gemma_demo.yaml" for p in CONFIGS)


def test_normalisation():
    cfg = ExtractConfig(hooks="resid_post.*, mlp_out.6", positions="last_k:02", dtype="bf16")
    assert cfg.hooks == ["resid_post.*", "mlp_out.6"] and cfg.positions == ["last_k:2"] and cfg.dtype == "bfloat16"


@pytest.mark.parametrize("fields,error,match", [
    ({"backend": "jax"}, ConfigError, "backend: 'jax' is not one of hf, transformer_lens, nnsight"),
    ({"dtype": "int8"}, ConfigError, "dtype: 'int8' is not one of float32, fp32, float16, fp16, bfloat16, bf16"),
    ({"batch_size": 0}, ConfigError, "batch_size must be a positive integer"),
    ({"max_rows": -3}, ConfigError, "max_rows"),
    ({"template": "chatml"}, ConfigError, "template: 'chatml' is not one of auto, chat, plain"),
    ({"hooks": ["resid_mid.3"]}, HookError, "unknown hook"),
    ({"positions": ["last_token"]}, PositionError, "unknown position"),
])
def test_validation(fields, error, match):
    with pytest.raises(error, match=match):
        ExtractConfig(**fields)


def test_yaml_unknown_field_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: gemma-3-270m\nhooks: [resid_post.3]\nbatchsize: 4\n")
    with pytest.raises(ConfigError, match="unknown field.*batchsize"):
        ExtractConfig.from_yaml(p)
    p.write_text("model: gemma-3-270m\nhooks: [resid_post.3]\n")
    cfg = ExtractConfig.from_yaml(p, max_rows=5, out_dir=None)
    assert cfg.max_rows == 5 and cfg.out_dir == "runs/activations"
