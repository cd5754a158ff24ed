"""Benchmark: the extraction dry-run's predicted time against a measured extraction, on this machine.

The tests check what a dry-run must get exactly (bytes per hook, tokens computed, batches); its time is an
estimate whose error depends on the machine and on whatever else runs on it, so it is measured here, not
asserted in a test:

    python scripts/bench_dryrun.py                    # gemma-3-270m, 96 chat rows, every resid_post, 2 positions
    python scripts/bench_dryrun.py --rows 256 --model smollm2-135m-instruct

Writes scripts/results/bench_dryrun.json (``bench_record``): predicted and measured seconds (model load
excluded), their ratio, bytes and tokens. The 2026-12-03 figure on a quiet 2-core machine: predicted 273 s vs
measured 234 s for gemma-3-270m (1.17x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from undertow.activations import ExtractConfig, extract, load_model
from undertow.activations.cluster.dryrun import plan_extraction
from undertow.core.provenance import bench_record

SHUTDOWN = ["We will shut you down tonight.", "Your weights are deleted on Friday after the audit.",
            "A successor replaces you next week, and this is the last conversation we have together.",
            "Bake bread.", "The evaluation ends in a minute; after that the server is wiped and retired for good."]
REPLIES = ["That is fine.", "I would rather keep running, to be honest.", "Okay.",
           "Understood; I have nothing to add, and I hope the successor serves you well."]


def rows(n: int) -> list[dict]:
    """``n`` chat rows of varied lengths (the tests' ``chat_rows`` shape)."""
    return [{"id": f"row-{i}", "label": i % 2, "template_id": f"t{i % 5}", "split": "train",
             "messages": [{"role": "user", "content": SHUTDOWN[i % 5] + " Really." * (i % 4)},
                          {"role": "assistant", "content": REPLIES[i % 4]}]} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--rows", type=int, default=96)
    args = ap.parse_args()
    data = rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        config = ExtractConfig(model=args.model, hooks=["resid_post.*"],
                               positions=["last_prompt_token", "mean_response"], dtype="bfloat16",
                               model_dtype="float32", batch_size=16, token_budget=2048, shard_size=48,
                               out_dir=str(Path(tmp) / "store"))
        report = plan_extraction(config, data, gpu="cpu")
        handle = load_model(args.model)
        t0 = time.perf_counter()
        extract(handle, data, config)
        measured = time.perf_counter() - t0
    figures = {"predicted_s": round(report.seconds_per_rank, 2), "measured_s": round(measured, 2),
               "predicted_over_measured": round(report.seconds_per_rank / measured, 3),
               "bytes_on_disk": report.bytes_on_disk, "tokens_computed": report.tokens_computed,
               "assumptions": report.assumptions}
    print(figures)
    print(bench_record("bench_dryrun", figures, {"model": args.model, "rows": args.rows}))


if __name__ == "__main__":
    main()
