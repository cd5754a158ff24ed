"""SAE benchmarks on gemma-3-270m, side by side in one process; writes scripts/results/bench_sae_<what>.json.

    python scripts/bench_sae.py store --out /tmp/usae/gemma_mix            # extract the training mix (all_tokens)
    python scripts/bench_sae.py quality --store DIR --tokens 240000        # TopK + JumpReLU x two sizes: EV, L0, dead, CE
    python scripts/bench_sae.py throughput --tokens 16384                  # store-fed vs LanguageModelSAETrainingRunner
    python scripts/bench_sae.py rss --store DIR --small-store DIR1         # peak RSS training from 1x vs 8x tokens

Thin launcher: the work is ``undertow.sae`` (train_from_store, evaluate_sae) and sae-lens' runner.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from undertow.core.provenance import package_versions, peak_rss_bytes

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

MODEL, HOOK, TL_HOOK = "gemma-3-270m", "resid_post.9", "blocks.9.hook_resid_post"
RESULTS = Path(__file__).resolve().parent / "results"


def record(what: str, figures: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_sae_{what}.json"
    body = {"what": what, "figures": figures, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0]}, "versions": package_versions(("torch", "sae-lens", "transformer-lens", "transformers", "undertow")),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
    out.write_text(json.dumps(body, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    return out


def mix_rows(n_prose: int, n_suite: int, seed: int = 0):
    """The training mix: Debian prose + a seeded subset of the prompt suite (same as the store's rows)."""
    import random

    from undertow.experiments.prompts.suite import SuiteConfig, build_suite
    from undertow.sae.corpus import load_prose, training_mix

    prose, digest = load_prose(n_prose, 400, seed=seed)
    suite = build_suite(SuiteConfig(seed=seed))
    idx = sorted(random.Random(seed).sample(range(len(suite)), n_suite))
    return training_mix(prose, suite.select(idx), seed=seed), digest


def extract_store(handle, rows, out: str, max_rows: int | None = None):
    from undertow.activations import ExtractConfig, extract

    cfg = ExtractConfig(model=MODEL, hooks=[HOOK], positions=["all_tokens"], dtype="bfloat16", out_dir=out,
                        shard_size=512, batch_size=32, token_budget=4096, max_rows=max_rows)
    t0 = time.perf_counter()
    store = extract(handle, rows, cfg, overwrite=True)
    return store, time.perf_counter() - t0


def sae_config(arch: str, d_sae: int, tokens: int, out: str, batch: int = 1024, **arch_kw):
    from undertow.sae import SAEConfig

    return SAEConfig.from_dict({
        "arch": {"architecture": arch, "d_sae": d_sae, "k": 32, **arch_kw}, "data": {"hook": HOOK, "heldout_rows": 64},
        "train": {"total_tokens": tokens, "batch_size": batch, "lr": 1e-3, "lr_warm_up_steps": 10,
                  "lr_decay_steps": max(1, tokens // batch // 5), "n_checkpoints": 0, "out_dir": out,
                  "progress": False, "dead_feature_window": 100}}, "bench_sae")


def cmd_store(args) -> None:
    from undertow.activations import load_model

    rows, digest = mix_rows(args.prose, args.suite)
    store, seconds = extract_store(load_model(MODEL), rows, args.out)
    record("store", {"rows": len(rows), "tokens": store.manifest["tokens"], "seconds": seconds,
                     "tokens_per_s": store.manifest["tokens"] / seconds, "corpus_hash": digest, "out": args.out})


def tl_only():
    """The TransformerLens model alone: the HF copy it was converted from is dropped (peak RSS 4.7 GB with
    both alive plus 262k-vocab logits; TL alone leaves room under 3 GB)."""
    import gc

    from undertow.activations import load_model
    from undertow.activations.engine.heap import trim_host_heap

    handle = load_model(MODEL, backend="transformer_lens")
    tl = handle.model
    del handle
    gc.collect()
    trim_host_heap()
    return tl


def rss_mb() -> float:
    return peak_rss_bytes() / 2**20


def cmd_quality(args) -> None:
    from undertow.activations import ActivationStore
    from undertow.sae.data import open_store_tokens
    from undertow.sae.evals import evaluate_sae, pack_tokens
    from undertow.sae.train import train_from_store

    store = ActivationStore(args.store)
    heldout = open_store_tokens(store, HOOK, heldout_rows=64).heldout()
    rows, _ = mix_rows(args.prose, args.suite)
    tail = rows.select(range(len(rows) - 64, len(rows))).to_list()
    tl = tl_only()
    windows = pack_tokens(tl.tokenizer, tail, 128, args.ce_windows)
    runs = []
    small, large = args.sizes
    jump = {"l0_coefficient": args.l0, "jumprelu_init_threshold": args.threshold}
    for arch, d_sae, kw in [("topk", small, {}), ("topk", large, {}), ("jumprelu", small, jump), ("jumprelu", large, jump)]:
        with tempfile.TemporaryDirectory() as tmp:
            res = train_from_store(sae_config(arch, d_sae, args.tokens, tmp, args.batch, **kw), store)
            ev = evaluate_sae(res.sae, heldout, tl, windows, TL_HOOK)
        runs.append({"architecture": arch, "d_sae": d_sae, **kw, "batch_size": args.batch, "tokens_trained": res.tokens,
                     "train_seconds": res.seconds, **ev.to_dict()})
        print(runs[-1], f"peak RSS {rss_mb():.0f} MB", flush=True)
    record("quality", {"model": MODEL, "hook": HOOK, "store": args.store, "store_tokens": store.manifest["tokens"],
                       "runs": runs, "peak_rss_mb": rss_mb()})


def runner_tokens_per_s(tl, windows, tokens: int, d_sae: int, batch: int) -> float:
    """sae-lens' own LanguageModelSAETrainingRunner on the same model, hook, tokens and SAE config."""
    import datasets
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig

    ds = datasets.Dataset.from_dict({"input_ids": windows.tolist()})
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LanguageModelSAERunnerConfig(
            sae=TopKTrainingSAEConfig(d_in=640, d_sae=d_sae, k=32, normalize_activations="none"),
            model_name="google/gemma-3-270m", hook_name=TL_HOOK, dataset_path="", is_dataset_tokenized=True,
            streaming=False, context_size=windows.shape[1], prepend_bos=False, training_tokens=tokens,
            train_batch_size_tokens=batch, store_batch_size_prompts=8, n_batches_in_buffer=64, lr=1e-3,
            device="cpu", dtype="float32", logger=LoggingConfig(log_to_wandb=False), checkpoint_path=tmp + "/ck",
            output_path=tmp + "/out", n_checkpoints=0, verbose=False, dead_feature_window=100,
            model_from_pretrained_kwargs={}, n_batches_for_norm_estimate=4)  # buffer: 64 x context tokens
        t0 = time.perf_counter()
        LanguageModelSAETrainingRunner(cfg, override_dataset=ds, override_model=tl).run()
        return tokens / (time.perf_counter() - t0)


def cmd_throughput(args) -> None:
    import gc

    from undertow.activations import load_model
    from undertow.activations.models.backends import to_transformer_lens
    from undertow.sae.evals import pack_tokens
    from undertow.sae.train import train_from_store

    handle = load_model(MODEL)
    rows, _ = mix_rows(args.prose, args.suite)
    n_rows = max(64 + 16, int(len(rows) * args.tokens / 110_000))  # ~57 tokens/row in the mix
    sub = rows.select(range(n_rows))
    windows = pack_tokens(handle.tokenizer, sub.to_list(), 128, 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        store, extract_s = extract_store(handle, sub, tmp + "/store")
        cfg = sae_config("topk", args.d_sae, args.tokens, tmp + "/sae", args.batch, normalize_activations="none")
        fed = train_from_store(cfg, store)
        store_tps = fed.tokens_per_s
        store_tokens = store.manifest["tokens"]
    tl = to_transformer_lens(handle.hf_model, handle.tokenizer, handle.dtype, handle.device)
    del handle
    gc.collect()
    runner_tps = runner_tokens_per_s(tl, windows, args.tokens, args.d_sae, args.batch)
    record("throughput", {"model": MODEL, "hook": HOOK, "sae": f"topk d_sae={args.d_sae} k=32", "tokens": args.tokens,
                          "batch_size": args.batch, "store_fed_tokens_per_s": store_tps,
                          "runner_tokens_per_s": runner_tps, "ratio": store_tps / runner_tps,
                          "store_tokens": store_tokens, "extract_seconds": extract_s,
                          "extract_tokens_per_s": store_tokens / extract_s, "peak_rss_mb": rss_mb()})


def cmd_rss_child(args) -> None:
    from undertow.activations import ActivationStore
    from undertow.sae.train import train_from_store

    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore(args.store)
        res = train_from_store(sae_config("topk", 2048, args.tokens, tmp, args.batch), store)
    print(json.dumps({"store_tokens": store.manifest["tokens"], "tokens_trained": res.tokens,
                      "peak_rss_mb": rss_mb()}))


def cmd_rss(args) -> None:
    out = {}
    for name, path in (("1x", args.small_store), ("8x", args.store)):
        proc = subprocess.run([sys.executable, __file__, "rss-child", "--store", path, "--tokens", str(args.tokens),
                               "--batch", str(args.batch)],
                              capture_output=True, text=True, check=True)
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ratio"] = out["8x"]["peak_rss_mb"] / out["1x"]["peak_rss_mb"]
    out["token_ratio"] = out["8x"]["store_tokens"] / out["1x"]["store_tokens"]
    record("rss", out)


def cmd_small_store(args) -> None:
    from undertow.activations import ActivationStore, load_model

    big = ActivationStore(args.store)
    rows, _ = mix_rows(args.prose, args.suite)
    store, seconds = extract_store(load_model(MODEL), rows, args.out, max_rows=len(rows) // 8)
    print(json.dumps({"tokens": store.manifest["tokens"], "big_tokens": big.manifest["tokens"], "seconds": seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["store", "small-store", "quality", "throughput", "rss", "rss-child"])
    p.add_argument("--store", default="/tmp/usae/gemma_mix")
    p.add_argument("--small-store", default="/tmp/usae/gemma_mix_1x")
    p.add_argument("--out", default="/tmp/usae/gemma_mix")
    p.add_argument("--prose", type=int, default=1500, help="prose rows in the mix")
    p.add_argument("--suite", type=int, default=600, help="suite rows in the mix")
    p.add_argument("--tokens", type=int, default=200_000, help="tokens to train per SAE")
    p.add_argument("--d-sae", type=int, default=2048)
    p.add_argument("--sizes", type=int, nargs=2, default=[2048, 4096], help="the two d_sae of the quality runs")
    p.add_argument("--batch", type=int, default=1024, help="tokens per SAE step")
    p.add_argument("--l0", type=float, default=2.0, help="JumpReLU L0 coefficient")
    p.add_argument("--threshold", type=float, default=0.01, help="JumpReLU initial threshold")
    p.add_argument("--ce-windows", type=int, default=8, help="128-token held-out windows for CE loss")
    args = p.parse_args()
    {"store": cmd_store, "small-store": cmd_small_store, "quality": cmd_quality, "throughput": cmd_throughput,
     "rss": cmd_rss, "rss-child": cmd_rss_child}[args.what](args)


if __name__ == "__main__":
    main()
