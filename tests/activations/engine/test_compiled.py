"""``compile``: the decoder layers through torch.compile at fixed bucket shapes give the eager store within
float rounding (tiny random Llama, fp32, both layers compiled: max |diff| 7.2e-7 measured; checked at 1e-5),
compile once per bucket (not per batch), and refuse what they cannot run in one line."""

from __future__ import annotations

import pytest
import torch

from undertow.activations import ExtractConfig, extract, load_model
from undertow.activations.engine.batching import bucket_batches
from undertow.activations.engine.compiled import LENGTH_BUCKETS, CompiledBody, bucket_length, bucket_rows
from undertow.core.errors import ConfigError

FP32_TOL = dict(rtol=1e-5, atol=1e-5)
"""Compiled vs eager, fp32: inductor fuses and reorders float ops (the same batches otherwise)."""


def test_buckets_grow_by_at_most_half_and_cover_every_length():
    assert LENGTH_BUCKETS[:8] == (16, 24, 32, 48, 64, 96, 128, 192) and LENGTH_BUCKETS[-1] == 8192
    for n in range(1, 9000):
        b = bucket_length(n)
        assert b >= n and (n <= 16 or 2 * b < 3 * n)  # padding under a third of the bucket
        assert b in LENGTH_BUCKETS or b > 8192
    assert bucket_rows(48, batch_size=16, token_budget=512) == 10 and bucket_rows(1024, 16, 512) == 1


def _base(tiny_llama_dir, tmp_path, **fields) -> dict:
    return dict(model=str(tiny_llama_dir), hooks=["embed", "resid_post.*", "mlp_out.1"],
                positions=["last_prompt_token", "mean_response", "all_tokens"], dtype="float32", shard_size=6,
                batch_size=3, token_budget=512, share_prompts=False) | fields


def test_compiled_store_matches_eager_and_compiles_once_per_bucket(tiny_llama_dir, chat_rows, tmp_path):
    from torch._dynamo.utils import counters

    handle = load_model(str(tiny_llama_dir))
    rows = chat_rows(14)
    eager = extract(handle, rows, ExtractConfig(**_base(tiny_llama_dir, tmp_path), out_dir=str(tmp_path / "eager")))
    before = counters["stats"]["unique_graphs"]
    got = extract(handle, rows, ExtractConfig(**_base(tiny_llama_dir, tmp_path), compile="compile",
                                              out_dir=str(tmp_path / "compiled")))
    buckets = {bucket_length(n) for n in eager.rows["n_tokens"]}
    graphs = counters["stats"]["unique_graphs"] - before
    lengths = [bucket_length(n) for n in eager.rows["n_tokens"]]
    n_batches = sum(len(bucket_batches(lengths[lo:lo + 6], 3, 512)) for lo in range(0, 14, 6))
    assert n_batches == 5 and 1 <= graphs <= len(buckets)  # layer 0 compiled (layer 1 holds mlp_out: eager)
    assert eager.rows == got.rows and eager.keys == got.keys
    for key in eager.keys:
        torch.testing.assert_close(got[key][:], eager[key][:], **FP32_TOL)
    assert [s["batching"]["compile"] for s in got.manifest["shards"]] == ["compile"] * 3
    assert "forward" not in vars(handle.layers[0])  # the eager forward is back after the run


def test_shared_prompt_batches_run_eager_inside_a_compiled_run(tiny_llama_dir, chat_rows, tmp_path):
    from undertow.activations import render_rows
    from undertow.activations.engine.shared_prompts import group_by_prompt

    handle = load_model(str(tiny_llama_dir))
    rows = chat_rows(24)
    assert group_by_prompt(render_rows(handle.tokenizer, rows))[0] == [[0, 20], [1, 21], [2, 22], [3, 23]]
    base = _base(tiny_llama_dir, tmp_path, share_prompts=True) | dict(hooks=["resid_post.*"], shard_size=24)
    eager = extract(handle, rows, ExtractConfig(**base, out_dir=str(tmp_path / "eager")))
    got = extract(handle, rows, ExtractConfig(**base, compile="compile", out_dir=str(tmp_path / "compiled")))
    for key in eager.keys:
        torch.testing.assert_close(got[key][:], eager[key][:], **FP32_TOL)  # measured 4.8e-7


def test_layers_with_inner_hooks_and_beyond_the_deepest_stay_eager(tiny_llama_dir):
    handle = load_model(str(tiny_llama_dir))
    assert CompiledBody(handle, "compile", handle.hooks(["resid_post.*", "mlp_out.1"])).layers == [handle.layers[0]]
    assert CompiledBody(handle, "compile", handle.hooks(["resid_post.0"])).layers == [handle.layers[0]]
    assert len(CompiledBody(handle, "compile", handle.hooks(["resid_post.*"])).layers) == 2


def test_cuda_graphs_off_cuda_and_compile_on_a_device_map_are_one_line_before_any_shard(tiny_llama_dir, chat_rows,
                                                                                          tmp_path):
    from undertow.activations.models.placement import layer_device_map

    handle = load_model(str(tiny_llama_dir), device="cpu")
    out = tmp_path / "graphs"
    with pytest.raises(ConfigError, match=r"^compile: cuda_graphs needs a CUDA device but the model is on cpu: use "
                                          r"compile: compile \(torch.compile without graphs\) or none$"):
        extract(handle, chat_rows(3), ExtractConfig(**_base(tiny_llama_dir, tmp_path), compile="cuda_graphs",
                                                    out_dir=str(out)))
    assert not out.exists()
    mapped = load_model(str(tiny_llama_dir), device_map=layer_device_map(handle.hf_model, ["cpu", "cpu"]))
    with pytest.raises(ConfigError, match="with a device map is not supported"):
        extract(mapped, chat_rows(3), ExtractConfig(**_base(tiny_llama_dir, tmp_path), compile="compile",
                                                    out_dir=str(out)))
    with pytest.raises(ConfigError, match="compile: 'fast' is not one of none, compile, cuda_graphs"):
        ExtractConfig(compile="fast")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["compile", "cuda_graphs"])
def test_compiled_store_matches_eager_on_cuda(tiny_llama_dir, chat_rows, tmp_path, mode):
    handle = load_model(str(tiny_llama_dir), device="cuda")
    rows = chat_rows(20)
    eager = extract(handle, rows, ExtractConfig(**_base(tiny_llama_dir, tmp_path), out_dir=str(tmp_path / "eager")))
    got = extract(handle, rows, ExtractConfig(**_base(tiny_llama_dir, tmp_path), compile=mode,
                                              out_dir=str(tmp_path / mode)))
    for key in eager.keys:
        torch.testing.assert_close(got[key][:], eager[key][:], rtol=1e-4, atol=1e-4)  # TF32 off; fused reductions


def test_dry_run_counts_the_shapes_the_compiled_body_computes(tiny_llama_dir, chat_rows, tmp_path):
    from undertow.activations.cluster.dryrun import plan_extraction

    handle = load_model(str(tiny_llama_dir))
    rows = chat_rows(14)
    seen: list[tuple[int, int]] = []
    hook = handle.layers[0].register_forward_pre_hook(lambda mod, args, kw: seen.append(tuple(
        (args[0] if args else kw["hidden_states"]).shape[:2])), with_kwargs=True)
    cfg = ExtractConfig(**_base(tiny_llama_dir, tmp_path), compile="compile", out_dir=str(tmp_path / "c"))
    try:
        extract(handle, rows, cfg)
    finally:
        hook.remove()
    computed = sum(r * t for r, t in seen)
    assert plan_extraction(cfg, rows).tokens_computed == computed  # exact: the same batch_shapes
    assert plan_extraction(cfg.replace(compile="none"), rows).tokens_computed < computed  # bucket padding
    assert {t for _, t in seen} <= set(LENGTH_BUCKETS)
