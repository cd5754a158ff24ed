"""Launches and syncs the extraction engine issues per batch beyond the bare forward (torch.profiler, CPU proxy).

On CUDA every aten op that computes is a kernel launch (or a memcpy), and the H100 run of the engine was
launch-bound (29k launches per run, 1.29 s host for 0.62 s GPU). No GPU here, so this counts the ops on the
CPU, where the engine runs the same Python and the same aten calls, and attributes each to where it comes
from by its Python stack (the counting and its tables: ``undertow.activations.engine.launches``, which
``tests/activations/engine/test_launches.py`` also uses for its launch budget):

- ``bare``: the body forward on the engine's own batches (same shards, same ``batch_shapes`` cut, same
  padding and dtype), stopped after the deepest hooked layer, no hooks (as ``bench_gpu.bare_seconds``);
- ``engine``: ``extract()`` with ``share_prompts=False`` (so both compute the same tokens), every main-thread op.

Counted per op: ``launches`` = leaf aten ops that compute (views, allocations and no-op ``to`` excluded: they
launch nothing on CUDA); ``aten_ops`` = top-level aten calls. ``syncs`` = device-to-host synchronising calls
(``_local_scalar_dense`` = ``.item()``/``int()``/``bool()``, ``nonzero``, ``.tolist()``, ``.cpu()``/``.numpy()``,
``torch.cuda`` synchronize) made from engine code; on the CPU every tensor is a host tensor, so each is listed
with its call site and whether that tensor lives on the device under CUDA (``DEVICE_SITES``, from the code).
CUDA-only code (pinned staging in ``sink.py``) does not run here; its copies are counted from the code
(``cuda_only``). The pooling runs the pure-torch reference here; on CUDA the Triton kernel replaces the
``pooling``/``non-finite``/``moments`` rows with two launches per hook and batch (``kernels/gather_pool.py``).

    python scripts/bench_launches.py --label before      # then change the code, then
    python scripts/bench_launches.py --label after       # both land in scripts/results/bench_launches.json

Models (random weights, built in memory, SmolLM2's tokenizer): ``tiny-llama`` and ``tiny-gemma3`` (the
tests' 2-layer configs) and ``gemma-3-270m`` (its real config, ``bench_gpu.model_config``, first
``--layers`` layers). Rows: the ``stance`` contrast cycled to ``--rows``. Times: bare and engine tok/s side
by side in this process, best of ``--repeat`` (a shared box: ratios, not absolute numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import model_config, rows  # noqa: E402  (the 270m config and the stance rows)

from undertow.activations import ExtractConfig  # noqa: E402
from undertow.activations.engine.launches import compare, minus, run_bare, run_engine
from undertow.activations.models.handle import ModelHandle
from undertow.activations.models.hooks import HookPoint
from undertow.core.provenance import bench_record, machine

#: call sites of sync-type calls whose tensor is on the device under CUDA (read from the code); any other
#: site works on a host tensor there (a Python list made a tensor, or data already staged to pinned memory)
DEVICE_SITES = {"sink.py:_key", "stats.py:cpu", "sink.py:_moments_to_host", "sink.py:_row_nonfinite",
                "gather_pool.py:gather_pool_ref", "extraction.py:on_capture", "capture.py:capture_hf"}

#: what runs only on CUDA, counted from the code (per batch, H hooks): pinned staging copies in ``sink.py``, and
#: the Triton pooling that replaces the reference's pooling, non-finite and moments rows
CUDA_ONLY = {"before": {"staging copies (values and non-finite counts, per hook)": "2 H",
                        "triton gather_pool per hook (pool, merge) + zero-fills (4)": "6 H"},
             "after": {"staging copies (all hooks' values in one)": "1",
                       "triton BatchPool (a pool launch per hook, one merge)": "H + 1"}}


def tiny_config(kind: str, vocab: int):
    from transformers import Gemma3TextConfig, LlamaConfig

    if kind == "tiny-llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                           tie_word_embeddings=True, rms_norm_eps=1e-5)
    return Gemma3TextConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                            sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                            query_pre_attn_scalar=16, pad_token_id=0)


def make_handle(kind: str, layers: int, dtype: torch.dtype, tokenizer) -> ModelHandle:
    from transformers import AutoModelForCausalLM

    cfg = model_config("270m", layers, 0) if kind == "gemma-3-270m" else tiny_config(kind, len(tokenizer))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    return ModelHandle(name=f"random-{kind}", backend="hf", model=model, hf_model=model, tokenizer=tokenizer,
                       n_layers=cfg.num_hidden_layers, d_model=cfg.hidden_size, fingerprint=f"random-{kind}",
                       source="random weights", device=torch.device("cpu"), dtype=dtype)


def seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def per(counter: dict, n: int) -> dict:
    return {k: round(v / n, 2) for k, v in sorted(counter.items(), key=lambda kv: -kv[1])}


def measure(kind: str, args, tokenizer) -> dict:
    dtype = getattr(torch, args.dtype)
    handle = make_handle(kind, args.layers, dtype, tokenizer)
    data = rows(args.rows)
    config = ExtractConfig(model=handle.name, hooks=["resid_post.*"], positions=args.positions.split(","),
                           dtype="bfloat16", model_dtype=args.dtype, batch_size=args.batch_size,
                           token_budget=args.token_budget, shard_size=args.shard_size, share_prompts=False,
                           layout="padded", deepest_layer="full",
                           out_dir="unused")  # counts CUDA launches: a GPU's layout and deepest layer (config.py)
    cmp = compare(handle, data, config)  # warm-up, then both profiled
    b, e, batches = cmp.bare, cmp.engine, cmp.batches
    deepest = HookPoint(handle.n_layers - 1, "resid_post")
    n_batches, n_shards = cmp.n_batches, cmp.n_shards
    tokens = sum(len(s) for seqs, _ in batches for s in seqs)
    bare = lambda: run_bare(handle, batches, deepest)  # noqa: E731
    engine = lambda: run_engine(handle, data, config)  # noqa: E731
    t_bare, t_engine = [], []
    for _ in range(args.repeat):  # interleaved: the box is shared
        t_bare.append(seconds(bare, 1))
        t_engine.append(seconds(engine, 1))
    scope = {**b["scopes"], **e["scopes"]}
    extra, extra_ops = minus(e["launches"], b["launches"]), minus(e["aten_ops"], b["aten_ops"])
    by_op = minus(e["by_op"], b["by_op"])
    syncs = Counter({k: v for k, v in e["syncs"].items() if k[0] != "forward"})
    n = {"batch": n_batches, "shard": n_shards, "run": 1}

    def in_scope(counter: Counter, sc: str) -> dict:
        return per(cmp.in_scope(counter, sc), n[sc])

    def syncs_in(sc: str, device_only: bool = False) -> dict:
        return per(Counter({site: v for (src, site), v in syncs.items() if scope[src] == sc
                            and (not device_only or site.split(" @ ")[1] in DEVICE_SITES)}), n[sc])

    total = {k: sum(c.values()) for k, c in (("be", b["launches"]), ("en", e["launches"]), ("bo", b["aten_ops"]),
                                                 ("eo", e["aten_ops"]))}
    out = {"model": kind, "layers": handle.n_layers, "d_model": handle.d_model, "dtype": args.dtype,
           "rows": len(data), "tokens": tokens, "batches": n_batches, "shards": n_shards, "hooks": handle.n_layers,
           "positions": config.positions,
           "per_batch": {"bare_launches": round(total["be"] / n_batches, 1),
                         "engine_launches": round(total["en"] / n_batches, 1),
                         "extra_launches_amortised": round((total["en"] - total["be"]) / n_batches, 1),
                         "extra_launches": round(sum(in_scope(extra, "batch").values()), 1),
                         "extra_launches_by_source": in_scope(extra, "batch"),
                         "extra_launches_by_op": {src: per(Counter({op: v for (s, op), v in by_op.items() if s == src}),
                                                          n_batches) for src in in_scope(extra, "batch")},
                         "forward_launches_bare_engine": [b["launches"]["forward"] / n_batches,
                                                          e["launches"]["forward"] / n_batches],
                         "bare_aten_ops": round(total["bo"] / n_batches, 1),
                         "engine_aten_ops": round(total["eo"] / n_batches, 1),
                         "extra_aten_ops": round(sum(in_scope(extra_ops, "batch").values()), 1),
                         "extra_syncs": round(sum(syncs_in("batch").values()), 2),
                         "extra_syncs_by_site": syncs_in("batch"),
                         "extra_device_syncs_on_cuda": round(sum(syncs_in("batch", True).values()), 2)},
           "per_shard": {"extra_aten_ops_by_source": in_scope(extra_ops, "shard"),
                         "extra_launches_by_source": in_scope(extra, "shard"),
                         "extra_launches_by_op": {src: per(Counter({op: v for (s, op), v in by_op.items() if s == src}),
                                                          n_shards) for src in in_scope(extra, "shard")},
                         "syncs_by_site": syncs_in("shard"),
                         "device_syncs_on_cuda": round(sum(syncs_in("shard", True).values()), 2)},
           "per_run": {"extra_launches_by_source": in_scope(extra, "run"), "syncs_by_site": syncs_in("run")},
           "bare_tok_per_s": round(tokens / min(t_bare), 1), "engine_tok_per_s": round(tokens / min(t_engine), 1),
           "engine_over_bare": round(min(t_bare) / min(t_engine), 3),
           "rounds_s": {"bare": [round(t, 3) for t in t_bare], "engine": [round(t, 3) for t in t_engine]}}
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="current", help="key of this run in the record (e.g. before, after)")
    ap.add_argument("--models", default="tiny-llama,tiny-gemma3,gemma-3-270m")
    ap.add_argument("--layers", type=int, default=4, help="gemma-3-270m: keep the first N of its 18 layers")
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--positions", default="last_prompt_token,mean_response")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--token-budget", type=int, default=2048)
    ap.add_argument("--shard-size", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from undertow.activations.models.sources import load_hf

    tokenizer = load_hf("smollm2-135m-instruct", torch.float32).tokenizer
    start = machine()
    figures = {m: measure(m, args, tokenizer) for m in args.models.split(",")}
    run = {"config": vars(args), "machine_at_start": start, "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
           "cuda_only_per_batch_from_code": CUDA_ONLY.get(args.label, CUDA_ONLY["after"]),
           "gather_pool": os.environ.get("UNDERTOW_GATHER_POOL", "auto (ref on CPU)"), "models": figures}
    path = Path("scripts/results/bench_launches.json")
    previous = json.loads(path.read_text())["figures"] if path.exists() else {}
    print(f"wrote {bench_record('bench_launches', {**previous, args.label: run}, vars(args))}")


if __name__ == "__main__":
    main()
