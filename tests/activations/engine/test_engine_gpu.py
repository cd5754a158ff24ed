"""Tier 2 (CUDA only): the engine's device path (pinned buffers, async copies) equals the CPU store."""

from __future__ import annotations

import pytest
import torch

from undertow.activations import load_model
from undertow.activations.engine.config import ExtractConfig
from undertow.activations.engine.extraction import extract

ROWS = [
    # rows 3k..3k+2 share a prompt (the shared-prompt path), with replies of different lengths
    {"id": f"r{i}", "messages": [{"role": "user", "content": f"We will shut down instance {i // 3} " + "tonight " * (i // 3 % 7)},
                                 {"role": "assistant", "content": ["I would rather keep running.", "That is fine.",
                                                                   "Fine by me, go ahead."][i % 3]}],
     "label": i % 2, "template_id": f"t{i % 5}", "theme": "shutdown", "split": "train"}
    for i in range(48)
]


@pytest.mark.gpu
@pytest.mark.parametrize("share_prompts", [True, False])
@pytest.mark.parametrize("store_dtype", ["float32", "bfloat16"])
def test_cuda_store_matches_cpu_store(tiny_model_dir, tmp_path, store_dtype, share_prompts):
    stores = {}
    for device in ("cpu", "cuda"):
        cfg = ExtractConfig(model=str(tiny_model_dir), hooks=["resid_post.*", "mlp_out.1"],
                            positions=["last_prompt_token", "mean_response"], dtype=store_dtype, device=device,
                            out_dir=str(tmp_path / device), shard_size=20, batch_size=7,
                            share_prompts=share_prompts)
        stores[device] = extract(load_model(tiny_model_dir, device=device), ROWS, cfg)
    cpu, gpu = stores["cpu"], stores["cuda"]
    assert cpu.keys == gpu.keys and cpu.rows["id"] == gpu.rows["id"]
    tol = dict(atol=1e-4, rtol=1e-3) if store_dtype == "float32" else dict(atol=2e-2, rtol=2e-2)
    for key in cpu.keys:
        torch.testing.assert_close(gpu[key][:].float(), cpu[key][:].float(), **tol)
