"""Cost of verified store reads: open, first (cold) full read, warm full read, ``verify_store``; vs unverified.

    python scripts/bench_store_verify.py --store runs/activations/gemma_demo_stance   # an existing store
    python scripts/bench_store_verify.py --build /tmp/big --gb 1                      # a random store, real writer

``--build`` writes a store of random bf16 tensors (Gemma-3-270M shape: 18 hooks x 2 positions x d 640) with the
real ``ShardWriter`` and ``finalize``. Timings are with the OS page cache warm (the file was just written or
read); the memo lives in ``$UNDERTOW_CACHE`` (set to a fresh temporary directory here, so "cold" is cold).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def build(out: Path, gb: float, n_hooks: int = 18, d: int = 640, shard_size: int = 2048) -> None:
    from undertow.activations.store.manifest import FORMAT, finalize
    from undertow.activations.store.stats import Moments
    from undertow.activations.store.writer import ShardWriter, prepare_store

    positions = ["last_prompt_token", "mean_response"]
    n_rows = int(gb * 1e9 / (n_hooks * len(positions) * d * 2))
    hooks = [f"resid_post.{i}" for i in range(n_hooks)]
    keys = {f"{h}@{p}": {"hook": h, "position": p, "shape": [d], "per_token": False} for h in hooks for p in positions}
    n_shards = -(-n_rows // shard_size)
    header = {"format": FORMAT, "identity": {"model_fingerprint": "sha256:random", "dataset_hash": "sha256:random"},
              "hooks": hooks, "positions": positions, "keys": keys, "dtype": "bfloat16", "n_rows": n_rows,
              "shard_size": shard_size, "n_shards": n_shards, "config": {}}
    prepare_store(out, header, resume=False, overwrite=True)
    writer = ShardWriter(out, header)
    g = torch.Generator().manual_seed(0)
    for k in range(n_shards):
        lo, hi = k * shard_size, min((k + 1) * shard_size, n_rows)
        by_hook = {}
        for h in hooks:
            t = {}
            for p in positions:
                x = torch.randn(hi - lo, d, generator=g)
                t[p] = x.bfloat16()
                t.update(Moments(torch.tensor(hi - lo), x.mean(0), x.var(0, correction=0) * (hi - lo)).to_tensors(f"stats/{p}/"))
            by_hook[h] = t
        rows = [{"id": str(i), "label": i % 2, "index": i} for i in range(lo, hi)]
        writer.submit(k, (lo, hi), hi - lo, by_hook, rows, {})
    writer.wait()
    writer.shutdown()
    finalize(out, header)


def read_all(store, verified: bool = True) -> None:
    for key in store.keys:
        view = store[key]
        if not verified:
            view._on_read = None
        view.to_tensor()
    _ = store.rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store")
    ap.add_argument("--build")
    ap.add_argument("--gb", type=float, default=1.0)
    args = ap.parse_args()
    os.environ["UNDERTOW_CACHE"] = tempfile.mkdtemp(prefix="undertow-bench-cache-")
    from undertow.activations import ActivationStore
    from undertow.activations.store.verify import verify_store

    path = Path(args.store or args.build)
    if args.build:
        build(path, args.gb)
    t = {}
    s = time.perf_counter()
    read_all(ActivationStore(path), verified=False)
    t["unverified_full_read_s"] = time.perf_counter() - s
    s = time.perf_counter()
    store = ActivationStore(path)
    t["open_s"] = time.perf_counter() - s
    s = time.perf_counter()
    read_all(store)
    t["cold_verified_full_read_s"] = time.perf_counter() - s
    s = time.perf_counter()
    read_all(ActivationStore(path))
    t["warm_verified_full_read_s"] = time.perf_counter() - s
    s = time.perf_counter()
    report = verify_store(path)
    t["verify_store_s"] = time.perf_counter() - s
    print(json.dumps({"store": str(path), "bytes": report.bytes, "shards": len(report.shards),
                      "files": sum(len(x.files) for x in report.shards) + 1, "ok": report.ok,
                      **{k: round(v, 3) for k, v in t.items()}}))


if __name__ == "__main__":
    main()
