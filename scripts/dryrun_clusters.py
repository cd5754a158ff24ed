"""Dry-run every cluster config (experiments/configs/clusters/*.yaml) on its dataset: the README's table.

    python scripts/dryrun_clusters.py                     # hub config + tokenizer (needs the hub or its cache)
    python scripts/dryrun_clusters.py --offline-shapes    # no hub: the published shapes below, SmolLM2's tokenizer

With the hub (or a cache holding config.json and the tokenizer) every figure comes from the real config and
tokenizer. ``--offline-shapes`` builds the configs from the published hyperparameters (the hub's config.json
of each model, as of 2026) and counts tokens with SmolLM2's tokenizer (vocab 49k; Llama 3's 128k vocab
and Gemma 3's 262k give fewer tokens on English text), so its token and byte figures are stand-ins.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from undertow.activations.cluster.dryrun import DryRunError, load_cluster_yaml, plan_extraction

ROOT = Path(__file__).parents[1]


def published_config(model_id: str):
    """The architecture hyperparameters of the three cluster models (weights are never needed)."""
    from transformers import Gemma3Config, LlamaConfig

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    if "Llama-3.1-8B" in model_id:
        return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                           rope_parameters=rope, architectures=["LlamaForCausalLM"])
    if "Llama-3.3-70B" in model_id:
        return LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                           num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=131072,
                           rope_parameters=rope, architectures=["LlamaForCausalLM"])
    if "gemma-3-12b" in model_id:
        text = dict(vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                    num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                    sliding_window=1024, max_position_embeddings=131072)
        vision = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                      image_size=896, patch_size=14)
        cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256)
        cfg.architectures = ["Gemma3ForConditionalGeneration"]
        return cfg
    raise SystemExit(f"no published shape for {model_id}: run without --offline-shapes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offline-shapes", action="store_true")
    ap.add_argument("--max-rows", type=int, default=None, help="plan on a subset (default: the whole dataset)")
    args = ap.parse_args()
    from undertow.experiments.prompts.resolve import resolve_dataset

    tokenizer = None
    if args.offline_shapes:
        from undertow.activations.models.sources import load_hf

        tokenizer = load_hf("smollm2-135m-instruct", torch.float32).tokenizer
    print("| layout | model | GPUs | rows | tokens | TB on disk | host GiB/rank | GPU GiB/device (max) | wall h | GPU-hours |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted((ROOT / "experiments" / "configs" / "clusters").glob("*.yaml")):
        config, cluster = load_cluster_yaml(path)
        if args.max_rows:
            config = config.replace(max_rows=args.max_rows)
        data = resolve_dataset(config.dataset, config.seed)
        extra = dict(hf_config=published_config(config.model), tokenizer=tokenizer) if args.offline_shapes else {}
        try:
            r = plan_extraction(config, data, cluster=cluster, **extra)
        except DryRunError as e:
            print(f"| {path.stem} | {config.model} | {cluster.gpus} | refused: {e} |")
            continue
        print(f"| {path.stem} | {config.model} | {cluster.gpus} x {cluster.gpu} | {r.rows:,} | {r.tokens:,} | "
              f"{r.bytes_on_disk / 1e12:.3f} | {r.host_bytes_per_rank / 2**30:.0f} | "
              f"{max(r.gpu_bytes_per_device) / 2**30:.1f} | {r.seconds_per_rank / 3600:.4f} | {r.gpu_hours:.3f} |")


if __name__ == "__main__":
    main()
