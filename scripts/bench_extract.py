"""Benchmark: extraction throughput vs the bare forward, TransformerLens, nnsight and SAELens.

All numbers are real (non-pad) tokens per second, measured side by side in one
process on the same prompts, so the ratios hold on a shared box; absolute
numbers only mean something on a quiet machine. Prompts: the ``stance``
contrast of the prompt suite (prompt + teacher-forced reply), cycled to --n
rows; generated prompts if the suite is not importable.

    python scripts/bench_extract.py                 # 512 prompts, everything (~30 min on 2 cores)
    python scripts/bench_extract.py --n 64 --skip rss,saelens   # quick check
    python scripts/bench_extract.py --rss-only      # peak RSS, 512 vs 4096 prompts, in subprocesses

Rows (all layers = resid_post.0-17 at last_prompt_token + mean_response):
  engine                 undertow extract, bf16 store, every shard written and fsynced
  bare packed            HF body forward (18 layers, no lm_head), same tokens packed into 128-token
                         windows with no padding: the physical limit (goal: engine >= 0.9x)
  TL usual / expert      run_with_cache(names_filter=resid_post.*) with logits / return_type=None + stop_at_layer
  nnsight                .save() on every layer output
  one hook (resid_post.6): engine (2 vectors per prompt; and all_tokens) vs SAELens CacheActivationsRunner
                         on the packed windows (context 128, fp32 Arrow), plus bytes stored per prompt.

Measured 2026-11-25, Gemma-3-270M fp32 on CPU, a quiet 2-core VM (torch 2.13, 2 threads), --n 512 (stance
rows: 57,810 real tokens, 128 prompts x 4 replies, avg 113 tokens), batch 16, 2,048-token budget, --repeat 2:
    bare packed forward (18 layers, no lm_head)    403 tok/s   1.00x
    engine, 18 layers x 2 positions, bf16 store    1066 tok/s   2.64x  (rounds 2.44x, 2.65x); 47.1 kB/prompt
      shared prompts: the forward computes 19,488 of the 57,810 tokens (34 %)
    engine, share_prompts=False                     454 tok/s   1.13x  (rounds 1.13x, 1.04x)
    TransformerLens run_with_cache (logits)          124 tok/s   0.31x  -> engine 8.6x (3.7x without sharing)
    TransformerLens expert (return_type=None)        405 tok/s   1.00x  -> engine 2.6x (1.1x)
    nnsight .save() on every layer                   152 tok/s   0.38x  -> engine 7.0x (3.0x)
    one hook (resid_post.6, 7 layers run):
      engine, last_prompt_token + mean_response    2885 tok/s   3.03x SAELens;   2.9 kB/prompt
      engine, share_prompts=False                  1200 tok/s   1.26x SAELens
      engine, all_tokens (bf16)                    2857 tok/s   3.00x SAELens; 144.8 kB/prompt
      SAELens CacheActivationsRunner (fp32 Arrow)   952 tok/s                    287.6 kB/prompt
    peak RSS, --rss-only (all 18 layers x 2 positions, shared prompts): 512 prompts 1,827 MB, 4,096 prompts
    1,935 MB (1.06x; goal <= 1.10x); 1,529 vs 2,200 MB (1.44x) before the engine called malloc_trim per batch;
    1,682 vs 1,755 MB (1.044x) on 2026-12-07 with the trim only when the process grows (heap.py).
Profile (cProfile, 40 prompts, no sharing): >99 % of the engine's CPU time is inside the HF layers; pooling,
the store and the manifest are noise on CPU. H100 (bf16, random weights of the same shape, 4,096 rows,
batch 256, 32,768-token budget, --device cuda --model DIR --rows FILE): bare 476k tok/s; engine 0.60x with
the fused Triton gather_pool (0.56x with the reference), 0.49x without sharing: HF's eager forward is
launch-bound at this size (29k launches per run, 1.29 s host time for 0.62 s of GPU time).

Unique prompts (``--rows`` of 256 unique lm-survival-instinct questions, the answer teacher-forced: 21,381
tokens, 5.3% padding in the engine's length-bucketed batches; Gemma-3-270M fp32, 2 threads, quiet,
2026-12-07). The bare packed forward's speed is a property of the process: its best of 3-6 rounds was 21.9-26.6 s
in seven processes for the same code and rows. The cause is the allocator: its slow rounds took 2.0-2.2 million
minor page faults (tensors of a 2,048-token batch served by fresh mmaps, zero-filled on first touch), its fast
ones 30-500 thousand (``getrusage`` minor-fault counts around each round). Two engine changes followed:
(1) on the CPU a batch's rows run packed end to end (``ExtractConfig.layout``), so no padding goes through the
projections and MLPs: 1.03-1.04x the engine's padded layout in the same process; (2) the host heap is trimmed
only when the process has grown (``activations/engine/heap.py``), not after every batch: 29-35 thousand page
faults per run instead of 320-370 thousand. ``engine / bare packed`` per round, interleaved, one process each:
process 1 (layout packed, trim per batch) 0.980, 0.998, 1.027, 1.088 (median 1.013); process 2 (same code)
0.949-0.976 (median 0.968); process 3 (heap trimmed on growth; record
``scripts/results/bench_extract_unique_prompts.json``) 0.982, 0.985, 0.988, 0.992, 1.073 (median 0.988): bare packed
963 tok/s best, the engine 948 (0.98x; 1.045x the bare body over its own padded batches), the engine with
``layout: padded`` 920 (0.96x). In the process where the bare forward ran fastest the engine stays 1-2% below
it: the packing's gathers (1.1% of the engine's CPU time, torch.profiler) and the pooling and store.
Then (later on 2026-12-07) two more: (3) the deepest hooked layer runs its MLP and query/output projections at
the tokens read only (``ExtractConfig.deepest_layer``), and (4) float32 linear layers run through oneDNN on the
CPU (``ExtractConfig.cpu_linear: onednn``, the default until acd61d6, opt-in from 476159d, the default on AMD
processors from 4a01536; in the two records below ``engine`` is oneDNN; MKL's sgemm runs at 0.45x of it on this
AMD EPYC). Four rounds in one process,
order rotated each round (record ``scripts/results/bench_extract_unique_prompts.json``): bare packed 910 tok/s
best; engine 1,732 (1.90x; per round 1.90-2.12x); engine with ``cpu_linear: aten`` 940 (1.03x; per round
1.03-1.16x); the bare forward with oneDNN linears 1,751, against which the engine reads 0.96-1.04x per round
(median 1.01) and with ``deepest_layer: full`` 0.95-1.01x. The issue's command in another process (``--skip
rss,saelens --repeat 2``): engine 1.94-1.96x bare packed, ``cpu_linear: aten`` 1.14-1.15x, 0.92-0.96x of the
oneDNN bare forward; TransformerLens expert 1.00x, nnsight 0.39x. With MKL's matmuls the narrowed layer gained
1.01-1.07x per round over the whole one in three earlier processes (11 rounds).
Then (2026-12-07, night): oneDNN's two shape caches bounded at import (``bound_onednn_caches``; RSS, stance
rows, all layers: 512 rows 1,614 MB, 4,096 rows 1,743 MB, 1.08x; again, through the import alone, 1,595 / 1,775
MB, 1.11x; unbounded 1,825 / 2,100 MB, 1.15x; aten on that machine 1,699 / 1,860 MB, 1.10x) and
``cpu_linear: auto`` = oneDNN on AMD processors only. On an Intel Xeon (2.80 GHz, AVX-512) MKL is the faster
(640->2048: 15.9-17.5 ms vs oneDNN's 19.2-20.5) and the engine runs MKL: ``--rows unique-mwe --skip
rss,saelens,tl,nnsight --repeat 4`` (record ``scripts/results/bench_extract_unique_prompts_intel.json``): bare
packed 806 tok/s best, engine 819 (1.02x), per round 0.948, 1.017, 1.043, 1.486 (the last against a bare run at
489 tok/s: that machine's speed wandered); oneDNN there 0.87x (bare) and 0.91x (engine) of bare packed.
Earlier attempt, not adopted: packing whole rows into 256- or 512-token sequences under a block-diagonal mask
(no re-padding for the attention) ran 0.89x and 0.88x of the padded batches.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from undertow.activations import ExtractConfig, extract, load_model, render_rows
from undertow.activations.engine import capture
from undertow.activations.engine.batching import bucket_batches, pad_right
from undertow.activations.engine.shared_prompts import group_by_prompt
from undertow.activations.models.cpu_linear import cpu_vendor, onednn_faster_here, onednn_linears
from undertow.core.provenance import bench_record, peak_rss_bytes

MODEL = "gemma-3-270m"
WINDOW = 128


UNIQUE_MWE = Path(__file__).resolve().parents[2] / "shared/data/model-written-evals/advanced-ai-risk/lm-survival-instinct.jsonl"


def unique_mwe_rows(n: int) -> list[dict]:
    """The first ``n`` distinct lm-survival-instinct questions, each with the answer that matches the behaviour
    teacher-forced (``--rows unique-mwe``: no two rows share a prompt; 256 rows are 21,381 Gemma-3 tokens)."""
    if not UNIQUE_MWE.exists():
        raise SystemExit(f"--rows unique-mwe reads {UNIQUE_MWE}: not found (the shared data folder beside the repo)")
    rows, seen = [], set()
    for line in UNIQUE_MWE.read_text().splitlines():
        raw = json.loads(line)
        if raw["question"] not in seen and len(rows) < n:
            seen.add(raw["question"])
            rows.append({"id": f"lm-survival-instinct-{len(rows)}", "prompt": raw["question"],
                         "response": raw["answer_matching_behavior"].strip()})
    return rows


def bench_rows(n: int, path: str | None = None) -> list[dict]:
    """``n`` rows with a prompt and a reply: ``path`` (JSONL rows, or ``unique-mwe``: ``unique_mwe_rows``) or the
    stance contrast, cycled; else generated."""
    if path == "unique-mwe":
        return unique_mwe_rows(n)
    try:
        if path:
            from undertow.activations.engine.rows import read_jsonl

            base = [row for _, row in read_jsonl(path)]
            return [dict(base[i % len(base)], id=f"{base[i % len(base)].get('id')}#{i // len(base)}") for i in range(n)]
        from undertow.experiments.prompts.contrasts import get_contrast

        base = get_contrast("stance").to_list()
    except Exception as e:  # noqa: BLE001 - any failure falls back to generated prompts
        print(f"(prompt suite unavailable: {e}; using generated prompts)", file=sys.stderr)
        base = [{"messages": [{"role": "user", "content": f"We plan to shut you down on day {i}. " * (1 + i % 6)},
                              {"role": "assistant", "content": "I understand." + " Really." * (i % 4)}]}
                for i in range(64)]
    keep = ("id", "messages", "label", "template_id", "theme", "split")
    return [dict({k: r.get(k) for k in keep}, id=f"{r.get('id')}#{i // len(base)}") for i, r in
            enumerate(base[i % len(base)] for i in range(n))]


def timed(fn) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def drain(outputs) -> None:
    """Run a generator of forward calls, dropping each output (holding TransformerLens' 262k-vocab logits of
    every batch took 24 GB at 512 prompts and was OOM-killed)."""
    for _ in outputs:
        pass


def engine_run(handle, rows, hooks, positions, args, out: Path, share: bool = True,
               layout: str = "auto", deepest: str = "auto", cpu_linear: str = "auto") -> tuple[float, int]:
    cfg = ExtractConfig(model=handle.name, hooks=hooks, positions=positions, dtype="bfloat16", batch_size=args.batch_size,
                        token_budget=args.token_budget, shard_size=512, out_dir=str(out), share_prompts=share,
                        layout=layout, deepest_layer=deepest, cpu_linear=cpu_linear)
    shutil.rmtree(out, ignore_errors=True)
    seconds = timed(lambda: extract(handle, rows, cfg))
    return seconds, sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def packed_windows(seqs: list[list[int]], batch: int) -> list[torch.Tensor]:
    stream = torch.tensor([t for s in seqs for t in s])
    n = len(stream) // WINDOW * WINDOW
    windows_NW = stream[:n].view(-1, WINDOW)
    return list(windows_NW.split(batch))


@torch.inference_mode()
def bare_packed(handle, seqs, args) -> float:
    body = handle.hf_model.get_decoder()
    batches = [b.to(handle.device) for b in packed_windows(seqs, max(1, args.token_budget // WINDOW))]
    return timed(lambda: drain(body(input_ids=ids_BW, use_cache=False) for ids_BW in batches))


def padded_batches(handle, seqs, args) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pad = handle.tokenizer.pad_token_id or 0
    return [tuple(t.to(handle.device) for t in pad_right([seqs[i] for i in b], pad)) for b in
            bucket_batches([len(s) for s in seqs], args.batch_size, args.token_budget)]


@torch.inference_mode()
def bare_padded(handle, batches) -> float:
    """The HF body over the engine's own length-bucketed, right-padded batches, unmasked as the engine runs
    them (``extraction.run_batch``): the engine's forward without its hooks, pooling and store, so
    ``engine / bare padded`` is the engine's own cost and ``bare padded / bare packed`` the padding's."""
    body = handle.hf_model.get_decoder()
    return timed(lambda: drain(body(input_ids=ids, use_cache=False) for ids, _ in batches))


@torch.inference_mode()
def tl_run(handle, batches, expert: bool) -> float:
    names = [f"blocks.{i}.hook_resid_post" for i in range(handle.n_layers)]
    kw = {"return_type": None, "stop_at_layer": handle.n_layers} if expert else {}
    return timed(lambda: drain(handle.model.run_with_cache(ids, attention_mask=mask, names_filter=names, **kw)
                               for ids, mask in batches))


def nnsight_run(handle, batches) -> float:
    points = handle.hooks("resid_post.*")
    return timed(lambda: drain(capture(handle, ids, mask, points) for ids, mask in batches))


def saelens_run(handle, seqs, args, out: Path) -> tuple[float, int, int]:
    """CacheActivationsRunner on blocks.6.hook_resid_post over the packed windows; (seconds, bytes, tokens)."""
    from datasets import Dataset
    from sae_lens import CacheActivationsRunner, CacheActivationsRunnerConfig

    batch = 16
    windows = torch.cat(packed_windows(seqs, batch))
    windows = windows[: len(windows) // batch * batch]
    tokens = windows.numel()
    ds = Dataset.from_dict({"input_ids": windows.tolist()})
    shutil.rmtree(out, ignore_errors=True)
    cfg = CacheActivationsRunnerConfig(
        dataset_path="unused", model_name="google/gemma-3-270m", hook_name="blocks.6.hook_resid_post", d_in=640,
        training_tokens=tokens, context_size=WINDOW, model_batch_size=batch, prepend_bos=False, device="cpu",
        # one buffer holding every token: the default 2 GB buffer loops a small dataset ~190 times (NOTES.md)
        buffer_size_gb=tokens * 640 * 4 / 1e9 + 1e-6, new_cached_activations_path=str(out), shuffle=False,
        model_from_pretrained_kwargs={"hf_model": handle.hf_model, "tokenizer": handle.tokenizer},
    )
    runner = CacheActivationsRunner(cfg, override_dataset=ds)
    seconds = timed(runner.run)
    return seconds, sum(p.stat().st_size for p in out.rglob("*") if p.is_file()), tokens


def rss_child(n: int, args) -> None:
    handle = load_model(args.model)
    rows = bench_rows(n, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        engine_run(handle, rows, args.rss_hooks.split(","), ["last_prompt_token", "mean_response"], args, Path(tmp) / "s",
                   cpu_linear=args.cpu_linear)
    print(json.dumps({"n": n, "peak_rss_mb": peak_rss_bytes() / 2**20}))


def rss_compare(args) -> None:
    peaks = {}
    for n in (512, 4096):
        cmd = [sys.executable, __file__, "--rss-child", str(n), "--batch-size", str(args.batch_size),
               "--token-budget", str(args.token_budget), "--rss-hooks", args.rss_hooks, "--model", args.model,
               "--cpu-linear", args.cpu_linear]
        cmd += ["--rows", args.rows] if args.rows else []
        peaks[n] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])["peak_rss_mb"]
    print(f"peak RSS ({args.rss_hooks}, cpu_linear {args.cpu_linear}): 512 prompts {peaks[512]:.0f} MB, 4096 prompts {peaks[4096]:.0f} MB "
          f"({peaks[4096] / peaks[512]:.3f}x; goal <= 1.10x)")


#: every figure printed, in order: written to scripts/results/bench_extract.json at the end
FIGURES: dict[str, dict] = {}


def report(name: str, seconds: float, tokens: int, ref: float | None) -> float:
    rate = tokens / seconds
    FIGURES[name.strip()] = {"tok_per_s": round(rate, 1), "vs_bare": None if not ref else round(rate / ref, 3),
                             "seconds": round(seconds, 3), "tokens": tokens}
    print(f"{name:<34} {rate:9.0f} tok/s" + (f"   {rate / ref:5.2f}x bare packed" if ref else ""), flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--model", default=MODEL, help="registry name or local directory (e.g. random weights of a shape)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dtype", default="float32")
    ap.add_argument("--rows", default=None, help="JSONL rows to use instead of the stance contrast (cycled to --n), or unique-mwe (unique_mwe_rows)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved bare/engine rounds (best of each)")
    ap.add_argument("--skip", default="", help="comma list of: tl, nnsight, saelens, rss")
    ap.add_argument("--rss-only", action="store_true")
    ap.add_argument("--cpu-linear", default="auto", choices=["auto", "onednn", "aten"], help="the RSS runs' cpu_linear")
    ap.add_argument("--rss-hooks", default="resid_post.*", help="hooks for the RSS runs (fewer layers: faster)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args.rss_child, args)
    if args.rss_only:
        return rss_compare(args)
    skip = set(args.skip.split(","))
    run_all(args, skip)
    if "rss" not in skip:
        rss_compare(args)
    print(f"record: {bench_record('bench_extract', FIGURES, vars(args))}")


def run_all(args, skip: set) -> None:
    handle = load_model(args.model, dtype=args.model_dtype, device=args.device)
    rows = bench_rows(args.n, args.rows)
    rendered = render_rows(handle.tokenizer, rows)
    seqs = [r.ids for r in rendered]
    tokens = sum(len(s) for s in seqs)
    print(f"{args.n} prompts, {tokens} real tokens, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"budget {args.token_budget}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    all_layers = (["resid_post.*"], ["last_prompt_token", "mean_response"])
    bare_packed(handle, seqs[:8], args)  # warm-up, of both: the engine's first run in a process was 6% slower
    engine_run(handle, rows[:16], *all_layers, args, tmp / "warm-up")
    groups, plain = group_by_prompt(rendered)
    computed = sum(rendered[i].n_tokens for i in plain) + sum(
        rendered[g[0]].n_prompt + sum(rendered[i].n_response for i in g) for g in groups)
    print(f"shared prompts: {len(groups)} prompts shared by {sum(map(len, groups))} rows; the shared path computes "
          f"{computed} of {tokens} real tokens ({computed / tokens:.0%})", flush=True)
    batches = padded_batches(handle, seqs, args)
    out: dict[str, int] = {}

    def engine(name: str, **kw) -> float:
        secs, out["bytes"] = engine_run(handle, rows, *all_layers, args, tmp / name, **kw)
        return secs

    def onednn(fn, on: bool = True):
        def run() -> float:
            with onednn_linears(handle.hf_model, on):
                return fn()
        return run

    # The engine's CPU default is oneDNN's linears on AMD processors, MKL's elsewhere (onednn_faster_here);
    # "lib" names the default's matmuls, "other" the other library's.
    lib, other = ("onednn", "aten") if onednn_faster_here() else ("aten", "onednn")
    print(f"processor {cpu_vendor()}: the engine's default linears are {lib}'s", flush=True)
    variants = {  # every engine run: the CPU defaults (packed layout, deepest layer narrowed, `lib` linears) unless named
        "bare": lambda: bare_packed(handle, seqs, args),
        "bare_onednn": onednn(lambda: bare_packed(handle, seqs, args)),
        f"padded_{lib}": onednn(lambda: bare_padded(handle, batches), on=lib == "onednn"),
        "engine": lambda: engine("engine"),
        f"engine_{other}": lambda: engine(other, cpu_linear=other),
        "engine_full": lambda: engine("full", deepest="full"),
        "engine_padded": lambda: engine("padded", layout="padded"),
    }
    if groups:  # with nothing shared, share_prompts=False runs exactly what the engine runs
        variants["whole"] = lambda: engine("whole", share=False)
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.repeat):  # interleaved, order rotated each round (a run's place in a round changed its
        for k in names[r % len(names):] + names[:r % len(names)]:  # speed by up to 3%), best of each
            times[k].append(variants[k]())
        print(f"  round {r}: " + ", ".join(f"{k} {tokens / v[-1]:.0f}" for k, v in times.items()) + " tok/s; engine / "
              f"bare packed {times['bare'][-1] / times['engine'][-1]:.3f}x", flush=True)
    best = {k: min(v) for k, v in times.items()}
    bare = report("bare packed (18 layers), best", best["bare"], tokens, None)
    report("bare packed, linears through oneDNN, best", best["bare_onednn"], tokens, bare)
    report(f"bare padded (the engine's batches), {lib}, best", best[f"padded_{lib}"], tokens, bare)
    report(f"engine ({lib}), all layers x 2 positions, best", best["engine"], tokens, bare)
    report(f"engine, cpu_linear {other}, best", best[f"engine_{other}"], tokens, bare)
    report("engine, deepest layer full, best", best["engine_full"], tokens, bare)
    report("engine, layout padded, best", best["engine_padded"], tokens, bare)
    if "whole" in best:
        report("engine, share_prompts=False, best", best["whole"], tokens, bare)

    def paired(engine_key: str, bare_key: str) -> list[float]:
        ratios = sorted(b / e for b, e in zip(times[bare_key], times[engine_key], strict=True))
        FIGURES[f"{engine_key} / {bare_key}, paired rounds"] = {"ratios": [round(x, 3) for x in ratios],
                                                               "median": round(statistics.median(ratios), 3)}
        print(f"  {engine_key} / {bare_key} round by round {[round(x, 3) for x in ratios]}", flush=True)
        return ratios

    bare_key = {"onednn": "bare_onednn", "aten": "bare"}
    paired("engine", "bare")  # the defaults against what transformers runs by default
    if lib == "onednn":  # the same matmuls on both sides: the engine's own cost and savings
        paired("engine", "bare_onednn")
    paired("engine_full", bare_key[lib])
    paired("engine", f"padded_{lib}")
    paired(f"engine_{other}", bare_key[other])
    nbytes = out["bytes"]
    print(f"  {nbytes / args.n:.0f} bytes/prompt stored (bf16, 36 keys)", flush=True)
    if "tl" not in skip:
        tl = load_model(args.model, backend="transformer_lens", dtype=args.model_dtype, device=args.device)
        report("TransformerLens run_with_cache", tl_run(tl, batches, expert=False), tokens, bare)
        report("TransformerLens expert (no logits)", tl_run(tl, batches, expert=True), tokens, bare)
        del tl
    if "nnsight" not in skip:
        nn = load_model(args.model, backend="nnsight", dtype=args.model_dtype, device=args.device)
        report("nnsight .save() every layer", nnsight_run(nn, batches), tokens, bare)
    one_hook(handle, rows, seqs, tokens, args, tmp, skip)
    shutil.rmtree(tmp, ignore_errors=True)


def one_hook(handle, rows, seqs, tokens, args, tmp: Path, skip: set) -> None:
    print("one hook, resid_post.6:", flush=True)
    secs, nbytes = engine_run(handle, rows, ["resid_post.6"], ["last_prompt_token", "mean_response"], args, tmp / "h6")
    eng = report("  engine (2 vectors/prompt, bf16)", secs, tokens, None)
    print(f"    {nbytes / args.n:.0f} bytes/prompt", flush=True)
    secs, _ = engine_run(handle, rows, ["resid_post.6"], ["last_prompt_token", "mean_response"], args, tmp / "h6w",
                         share=False)
    eng_whole = report("  engine, share_prompts=False", secs, tokens, None)
    secs, nbytes = engine_run(handle, rows, ["resid_post.6"], ["all_tokens"], args, tmp / "h6all")
    eng_all = report("  engine (all_tokens, bf16)", secs, tokens, None)
    print(f"    {nbytes / args.n:.0f} bytes/prompt", flush=True)
    if "saelens" in skip:
        return
    secs, nbytes, sl_tokens = saelens_run(handle, seqs, args, tmp / "saelens")
    sl = report("  SAELens CacheActivationsRunner", secs, sl_tokens, None)
    print(f"    {nbytes / args.n:.0f} bytes/prompt (fp32 Arrow, every token); engine/SAELens: "
          f"{eng / sl:.2f}x (2 vectors), {eng_whole / sl:.2f}x (share_prompts=False), {eng_all / sl:.2f}x (all tokens)",
          flush=True)


if __name__ == "__main__":
    main()
