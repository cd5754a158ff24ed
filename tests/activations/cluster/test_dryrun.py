"""The dry-run planner: bytes and tokens equal a real run's, the cluster configs plan on random-weight replicas of
their architectures, a model too large for the GPUs given is refused in one line before anything loads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from undertow.activations import ExtractConfig, extract, load_model
from undertow.activations.cluster.devicemap import ClusterConfig
from undertow.activations.cluster.dryrun import (
    DryRunError,
    load_cluster_yaml,
    plan_extraction,
    safetensors_bytes,
)
from undertow.activations.models.hooks import decoder_layers

CLUSTERS = sorted((Path(__file__).parents[3] / "experiments" / "configs" / "clusters").glob("*.yaml"))


def test_safetensors_size_is_exact():
    from safetensors.torch import save

    dtypes = {"int64": torch.int64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    rng = random.Random(0)
    for _ in range(50):
        specs = [(rng.choice(["resid@last_k:3", "stats/all_tokens/m2", 'token:"x"']) + str(i), rng.choice(list(dtypes)),
                  [rng.randint(0, 999) for _ in range(rng.randint(1, 3))]) for i in range(rng.randint(1, 8))]
        real = save({n: torch.zeros(s, dtype=dtypes[d]) for n, d, s in specs})
        assert safetensors_bytes(specs) == len(real), specs


def _hook_bytes(store_dir: Path) -> dict[str, int]:
    manifest = json.loads((store_dir / "manifest.json").read_text())
    out: dict[str, int] = {}
    for shard in manifest["shards"]:
        for hook, f in shard["files"].items():
            if hook != "__rows__":
                out[hook] = out.get(hook, 0) + f["bytes"]
    return out


def test_bytes_tokens_and_shards_equal_a_real_run(tiny_llama_dir, chat_rows, tmp_path):
    rows = chat_rows(23)
    config = ExtractConfig(model=str(tiny_llama_dir), hooks=["embed", "resid_post.*", "mlp_out.1"],
                           positions=["last_prompt_token", "mean_response", "last_k:2", "all_tokens"], dtype="bfloat16",
                           shard_size=10, batch_size=4, token_budget=300, out_dir=str(tmp_path / "store"))
    report = plan_extraction(config, rows, gpu="cpu")
    store = extract(load_model(str(tiny_llama_dir)), rows, config)
    manifest = store.manifest
    assert report.rows == len(store) == 23 and report.shards == len(manifest["shards"]) == 3
    assert report.tokens == sum(s["tokens"] for s in manifest["shards"])
    assert report.bytes_per_hook == _hook_bytes(Path(config.out_dir))
    assert report.tokens_computed >= report.tokens * 0.3  # shared prompts computed once, padding added
    assert report.seconds_per_rank > 0 and report.gpu_hours == 0.0


def _replica(model_id: str, vocab: int):
    """A 2-layer random config of the class the hub id names (the dry-run reads nothing else of it)."""
    from transformers import Gemma3Config, LlamaConfig

    if "gemma-3" in model_id:
        text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                    layer_types=["sliding_attention", "full_attention"])
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                      patch_size=14)
        cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
        cfg.architectures = ["Gemma3ForConditionalGeneration"]
        return cfg
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rope_parameters=rope,
                       architectures=["LlamaForCausalLM"])


def test_a_gpu_plan_counts_padded_tokens_and_a_packed_layout_real_ones(tiny_llama_dir, chat_rows):
    """layout auto pads on a GPU (the planned device) and packs on the CPU; packed computes the real tokens
    through the projections (``ExtractConfig.layout``), so a plan for each says so."""
    rows = chat_rows(23)
    config = ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.*"], share_prompts=False, batch_size=4,
                           token_budget=300, out_dir="unused")
    gpu, cpu = plan_extraction(config, rows, gpu="H100"), plan_extraction(config, rows, gpu="cpu")
    packed_gpu = plan_extraction(config.replace(layout="packed"), rows, gpu="H100")
    assert cpu.tokens_computed == packed_gpu.tokens_computed == cpu.tokens < gpu.tokens_computed
    assert cpu.batches == gpu.batches  # the same batches, laid out differently


@pytest.mark.parametrize("path", CLUSTERS, ids=[p.stem for p in CLUSTERS])
def test_cluster_configs_dry_run_on_replicas(path, small_tokenizer, chat_rows):
    config, cluster = load_cluster_yaml(path)
    assert config.dataset and cluster.gpus >= 1
    replica = _replica(config.model, len(small_tokenizer))
    report = plan_extraction(config, chat_rows(40), cluster=cluster, hf_config=replica, tokenizer=small_tokenizer)
    assert report.rows == 40 and report.tokens > 0 and report.bytes_on_disk > 0
    assert len(report.gpu_bytes_per_device) == cluster.gpus_per_rank and report.gpu_hours > 0
    assert report.architecture == replica.architectures[0]
    assert all(line for line in report.lines())


def _llama_70b_shape():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64, num_key_value_heads=8, architectures=["LlamaForCausalLM"])


def test_a_model_that_does_not_fit_the_gpus_is_refused_before_anything_loads(small_tokenizer, chat_rows):
    config = ExtractConfig(model="meta-llama/Llama-3.3-70B-Instruct", model_dtype="bfloat16", hooks=["resid_post.*"])
    rows = chat_rows(8)
    calls = []
    tokenizer = _counting(small_tokenizer, calls)
    with pytest.raises(DryRunError) as e:
        plan_extraction(config, rows, cluster=ClusterConfig(gpu="H100"), hf_config=_llama_70b_shape(),
                        tokenizer=tokenizer)
    msg = str(e.value)
    assert "\n" not in msg and "does not fit the GPUs given" in msg and "gpus_per_rank >= 2" in msg
    assert calls == []  # refused on the meta-device shapes, before any row is tokenised
    fits = plan_extraction(config, rows, cluster=ClusterConfig(gpus_per_rank=4, device_map="layers"),
                           hf_config=_llama_70b_shape(), tokenizer=small_tokenizer)
    assert 69e9 < fits.n_params < 72e9 and max(fits.gpu_bytes_per_device) < 80 * 2**30


def _counting(tokenizer, calls: list):
    """``tokenizer`` with every call and ``apply_chat_template`` recorded in ``calls``."""

    class Counting:
        def __getattr__(self, name):
            attr = getattr(tokenizer, name)
            if name == "apply_chat_template":
                return lambda *a, **k: calls.append(name) or attr(*a, **k)
            return attr

        def __call__(self, *a, **k):
            calls.append("__call__")
            return tokenizer(*a, **k)

    return Counting()


@pytest.mark.slow
def test_embedded_model_predicted_vs_measured_on_this_cpu(chat_rows, tmp_path):
    """gemma-3-270m: bytes exact, and the tokens the plan computes are the tokens the extraction feeds layer 0.
    Predicted vs measured time is a benchmark (``scripts/bench_dryrun.py``), not a test: wall clock on a
    shared machine is not a property of the code."""
    rows = chat_rows(96)
    config = ExtractConfig(model="gemma-3-270m", hooks=["resid_post.*"], positions=["last_prompt_token", "mean_response"],
                           dtype="bfloat16", model_dtype="float32", batch_size=16, token_budget=2048, shard_size=48,
                           out_dir=str(tmp_path / "store"))
    report = plan_extraction(config, rows, gpu="cpu")
    handle = load_model("gemma-3-270m")
    fed: list[int] = []
    layer0 = decoder_layers(handle.hf_model)[0]

    def count(module, args, kwargs):
        fed.append(kwargs.get("hidden_states", args[0] if args else None).shape[:2].numel())

    hook = layer0.register_forward_pre_hook(count, with_kwargs=True)
    try:
        extract(handle, rows, config)
    finally:
        hook.remove()
    assert report.bytes_per_hook == _hook_bytes(Path(config.out_dir))
    assert report.tokens_computed == sum(fed) and report.batches == len(fed)


def test_the_cpu_timing_is_bounded_in_tokens_and_in_seconds(monkeypatch):
    """A 70B copy in bfloat16 took 9 min 37 s to time at its mean batch on a CPU without native bfloat16: the timed
    batch keeps at most MEASURE_TOKENS tokens (the length kept), and past MEASURE_SECONDS one timed forward follows
    the warm-up instead of three."""
    from transformers import LlamaConfig

    from undertow.activations.cluster import dryrun

    assert dryrun.measured_batch(22, 107) == (dryrun.MEASURE_TOKENS // 107, 107)
    assert dryrun.measured_batch(1, 900) == (1, 900) and dryrun.measured_batch(3, 20) == (3, 20)
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    calls = []
    real = torch.nn.Module.__call__

    def counting(self, *a, **kw):
        if type(self).__name__ == "LlamaModel":
            calls.append(kw["input_ids"].shape)
        return real(self, *a, **kw)

    monkeypatch.setattr(torch.nn.Module, "__call__", counting)
    assert dryrun.measured_cpu_layer_seconds(cfg, 2, 8, torch.float32) > 0 and len(calls) == 4  # quick: 1 + 3
    calls.clear()
    monkeypatch.setattr(dryrun, "MEASURE_SECONDS", 0.0)
    assert dryrun.measured_cpu_layer_seconds(cfg, 2, 8, torch.float32) > 0
    assert calls == [torch.Size([2, 8])] * 2  # warm-up + one timed forward
