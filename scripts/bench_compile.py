"""Benchmark: the engine with an eager vs a compiled body (``ExtractConfig.compile``), side by side in one process.

Same rows, same hooks, same store; real (non-pad) tokens per second. The compiled engine batches by bucket
length and pads each batch to its bucket shape (``activations/compiled.py``), so it computes more padded
tokens than eager; both counts are printed. Its first run compiles one graph per (bucket, layer kind) and is
reported apart (compile seconds); the rounds after reuse them. Rounds interleave eager and compiled, best of
each (the box is shared, so noise is one-sided). ``share_prompts`` is off by default: shared-prompt batches
run eager in both, which would dilute the comparison.

    python scripts/bench_compile.py                            # gemma-3-270m, 128 stance rows, batch 16
    python scripts/bench_compile.py --device cuda --model DIR --n 4096 --batch-size 256 --token-budget 32768 \\
        --modes none,compile,cuda_graphs                       # on a GPU (absolute numbers mean something there)

Writes scripts/results/bench_compile.json (``bench_record``). Measured: see the module doc of
``activations/compiled.py`` and the record.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from bench_extract import bench_rows, timed
from torch._dynamo.utils import counters

from undertow.activations import ExtractConfig, extract, load_model, render_rows
from undertow.activations.engine.compiled import batch_shapes
from undertow.core.provenance import bench_record


def computed_tokens(lengths: list[int], args, bucketed: bool) -> int:
    """Padded tokens the forwards compute: eager pads to each batch's longest row, compiled to its bucket shape."""
    return sum(rows * length for _, rows, length in batch_shapes(lengths, args.batch_size, args.token_budget, bucketed))


def run(handle, rows, args, mode: str, out: Path) -> float:
    cfg = ExtractConfig(model=handle.name, hooks=args.hooks.split(","), positions=["last_prompt_token", "mean_response"],
                        dtype="bfloat16", batch_size=args.batch_size, token_budget=args.token_budget, shard_size=512,
                        share_prompts=args.share_prompts, compile=mode, out_dir=str(out))
    shutil.rmtree(out, ignore_errors=True)
    return timed(lambda: extract(handle, rows, cfg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dtype", default="float32")
    ap.add_argument("--rows", default=None, help="JSONL rows instead of the stance contrast (cycled to --n)")
    ap.add_argument("--hooks", default="resid_post.*")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--share-prompts", action="store_true")
    ap.add_argument("--modes", default="none,compile", help="compile modes to compare, eager (none) first")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    handle = load_model(args.model, dtype=args.model_dtype, device=args.device)
    rows = bench_rows(args.n, args.rows)
    lengths = [r.n_tokens for r in render_rows(handle.tokenizer, rows)]
    tokens, modes = sum(lengths), args.modes.split(",")
    print(f"{args.model} {args.model_dtype} on {args.device}, {args.n} rows, {tokens:,} real tokens, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}, budget {args.token_budget}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-compile-"))
    figures: dict = {"tokens": tokens, "computed_tokens_eager": computed_tokens(lengths, args, False),
                     "computed_tokens_bucketed": computed_tokens(lengths, args, True)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for mode in modes[1:]:  # first run of each compiled mode: compiles its graphs
        before = counters["stats"]["unique_graphs"]
        secs = run(handle, rows, args, mode, tmp / mode)
        figures[f"{mode}_first_run_s"] = round(secs, 2)
        figures[f"{mode}_graphs"] = counters["stats"]["unique_graphs"] - before
        print(f"  {mode}: first run {secs:.1f}s ({figures[f'{mode}_graphs']} graphs compiled)", flush=True)
    for r in range(args.repeat):
        for mode in modes:
            times[mode].append(run(handle, rows, args, mode, tmp / mode))
        print(f"  round {r}: " + ", ".join(f"{m} {tokens / times[m][-1]:.0f} tok/s" for m in modes), flush=True)
    eager = tokens / min(times[modes[0]])
    for mode in modes:
        rate = tokens / min(times[mode])
        figures[mode] = {"tok_per_s": round(rate, 1), "vs_eager": round(rate / eager, 3),
                         "seconds": round(min(times[mode]), 3), "rounds_s": [round(t, 3) for t in times[mode]]}
        print(f"{mode:<12} {rate:8.0f} tok/s  {rate / eager:5.2f}x eager", flush=True)
    print(f"computed tokens: eager {figures['computed_tokens_eager']:,}, bucketed {figures['computed_tokens_bucketed']:,}"
          f" ({figures['computed_tokens_bucketed'] / figures['computed_tokens_eager']:.2f}x)")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"record: {bench_record('bench_compile', figures, vars(args))}")


if __name__ == "__main__":
    main()
