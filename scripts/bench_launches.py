"""Launches and syncs the extraction engine issues per batch beyond the bare forward (torch.profiler, CPU proxy).

On CUDA every aten op that computes is a kernel launch (or a memcpy), and the H100 run of the engine was
launch-bound (29k launches per run, 1.29 s host for 0.62 s GPU). No GPU here, so this counts the ops on the
CPU, where the engine runs the same Python and the same aten calls, and attributes each to where it comes
from by its Python stack:

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
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import model_config, rows  # noqa: E402  (the 270m config and the stance rows)

from undertow.activations import ExtractConfig, capture_hf, extract, render_rows  # noqa: E402
from undertow.activations.engine.batching import pad_right
from undertow.activations.engine.compiled import batch_shapes
from undertow.activations.models.handle import ModelHandle
from undertow.activations.models.hooks import HookPoint
from undertow.core.provenance import bench_record, machine

NO_LAUNCH = {"aten::" + n for n in (
    "empty", "empty_strided", "empty_like", "view", "_unsafe_view", "as_strided", "as_strided_", "slice", "select",
    "expand", "expand_as", "permute", "reshape", "_reshape_alias", "unsqueeze", "squeeze", "t", "transpose",
    "alias", "detach", "lift_fresh", "resolve_conj", "resolve_neg", "to", "contiguous", "unbind", "split", "narrow",
    "unflatten", "flatten", "chunk", "view_as", "set_", "resize_", "result_type", "is_nonzero", "item",
    "_has_compatible_shallow_copy_type", "size", "stride", "dim", "numel", "is_same_size", "lift_fresh_copy")}
"""Ops that launch no kernel on CUDA themselves (a ``to``/``contiguous``/``reshape`` that copies has a copy child)."""
DESCEND = {"aten::" + n for n in (
    "isfinite", "__and__", "__or__", "__invert__", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like",
    "new_zeros", "new_ones", "new_full", "new_empty", "_to_copy", "clone", "matmul", "linear", "einsum", "index",
    "embedding", "softmax", "type_as", "float", "repeat", "dropout", "scaled_dot_product_attention", "tensor",
    "scalar_tensor", "rsub", "masked_fill", "pad", "constant_pad_nd")}
"""Ops that decompose into other aten ops: their children are the launches."""

COPY_CALLS = ("<built-in method to", "<built-in method cpu", "<built-in method cuda")
SYNC_OPS = {"aten::_local_scalar_dense": "item", "aten::nonzero": "nonzero"}
SYNC_METHODS = {"tolist": "tolist", "cpu": "to host", "numpy": "to host", "synchronize": "synchronize"}

#: (file, function) of engine code -> (source, scope). The innermost engine frame of an op decides; an op
#: under a capture_hf frame with library frames in between belongs to the model's own forward.
INHERIT = ("caller's", "")
SOURCES = {
    ("capture.py", "capture_hf"): ("forward", "batch"),
    ("capture.py", "*"): ("hooks", "batch"),
    ("shared_prompts.py", "*"): ("hooks", "batch"),
    ("compiled.py", "*"): ("hooks", "batch"),
    ("gather_pool.py", "_nonfinite"): ("non-finite checks", "batch"),
    ("gather_pool.py", "_moments"): ("moments", "batch"),
    ("gather_pool.py", "span_index"): ("index tensors", "batch"),
    ("gather_pool.py", "*"): ("pooling", "batch"),
    ("batch_pool.py", "index"): ("index tensors", "batch"),
    ("batch_pool.py", "_spans_on"): ("index tensors", "batch"),
    ("batch_pool.py", "*"): ("pooling", "batch"),
    ("engine.py", "on_capture"): ("hooks", "batch"),
    ("engine.py", "_on_other_device"): ("hooks", "batch"),
    ("engine.py", "_pooler"): ("index tensors", "batch"),
    ("engine.py", "_batch_index"): ("index tensors", "batch"),
    ("engine.py", "run_batch"): ("batch inputs", "batch"),
    ("batching.py", "*"): ("batch inputs", "batch"),
    ("sink.py", "put"): ("copies to host", "batch"),
    ("sink.py", "_stage"): ("copies to host", "batch"),
    ("sink.py", "_close"): ("copies to host", "batch"),
    ("sink.py", "put_tokens"): ("non-finite checks", "batch"),
    ("sink.py", "start_batch"): ("index tensors", "batch"),
    ("sink.py", "*"): ("shard finish (order, moments merge, copies to host)", "shard"),
    ("stats.py", "from_slots"): ("moments merge (stats.py)", "shard"),
    ("stats.py", "*"): INHERIT,
    ("engine.py", "_shard_files"): ("shard files (non-finite summary, stats tensors)", "shard"),
}
ENGINE_DIRS = ("/activations/", "/kernels/")
COMPREHENSIONS = ("<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>")  # attributed to the enclosing function

#: call sites of sync-type calls whose tensor is on the device under CUDA (read from the code); any other
#: site works on a host tensor there (a Python list made a tensor, or data already staged to pinned memory)
DEVICE_SITES = {"sink.py:_key", "stats.py:cpu", "sink.py:_moments_to_host", "sink.py:_row_nonfinite",
                "gather_pool.py:gather_pool_ref", "engine.py:on_capture", "capture.py:capture_hf"}

#: functions that build host tensors (index tensors from Python lists, data already staged to pinned memory):
#: on CUDA only their device moves (a childless ``to``) launch anything
HOST_SITES = {"engine.py:_pooler", "engine.py:_batch_index", "sink.py:start_batch", "sink.py:_tokens",
              "engine.py:_shard_files", "stats.py:to_tensors", "batching.py:pad_right", "batching.py:run_bare",
              "sink.py:_unstack", "sink.py:_values", "sink.py:_nonfinite", "sink.py:finish"}

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


def bare_batches(handle: ModelHandle, data: list[dict], config: ExtractConfig) -> list[list[list[int]]]:
    """The engine's plain batches (token ids): per shard, ``batch_shapes`` over the shard's rendered rows."""
    rendered = render_rows(handle.tokenizer, data, config.template)
    out = []
    for lo in range(0, len(rendered), config.shard_size):
        shard = rendered[lo:lo + config.shard_size]
        for batch, _, _ in batch_shapes([r.n_tokens for r in shard], config.batch_size, config.token_budget, False):
            out.append([shard[i].ids for i in batch])
    return out


def run_bare(handle: ModelHandle, batches: list[list[list[int]]], deepest: HookPoint) -> None:
    for seqs in batches:
        ids_BT, mask_BT = pad_right(seqs, 0)
        capture_hf(handle, ids_BT.to(handle.device), mask_BT.to(handle.device), [deepest], on_capture=lambda *_: None)


def run_engine(handle: ModelHandle, data: list[dict], config: ExtractConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        extract(handle, data, config.replace(out_dir=f"{tmp}/store"))


def _frame(name: str) -> tuple[str, str] | None:
    """(file name, function) of a profiler Python event of engine code (or of ``run_bare``), else None."""
    if "bench_launches.py(" in name and name.endswith(": run_bare"):
        return "batching.py", "run_bare"
    if ".py(" not in name or not any(d in name for d in ENGINE_DIRS) or "site-packages" in name:
        return None
    path, _, func = name.partition("): ")
    return path.rsplit("/", 1)[-1].split("(")[0], func


def _python(name: str) -> bool:
    return ".py(" in name or name.startswith("<built-in")


def classify(evt) -> tuple[str, str, str, bool]:
    """(source, scope, site, host) of an aten op: the innermost engine frame above it that names a source
    (``stats.py`` helpers take their caller's; library frames between the op and ``capture_hf`` make it the
    forward's own); ``host``: a frame on the way is in ``HOST_SITES``, or the code runs once per run."""
    library, host, site = False, False, None
    parent = evt.cpu_parent
    while parent is not None:
        frame = _frame(parent.name)
        if frame is not None and frame[1] not in COMPREHENSIONS:
            file, func = frame
            here = f"{file}:{func}"
            site = site or here
            host = host or here in HOST_SITES
            if library and func == "capture_hf":
                return "forward", "batch", site, host
            source = SOURCES.get((file, func), SOURCES.get((file, "*"), ("engine other (per run)", "run")))
            if source is not INHERIT:
                return (*source, site, host or source[1] == "run")
        if _python(parent.name) and not parent.name.startswith("<built-in"):
            library = True
        parent = parent.cpu_parent
    return "outside engine code", "run", "?", True


def launches(evt, host: bool = False) -> int:
    """CUDA launches of one aten op: a compute op is one kernel (its CPU-side helpers, such as the ``fill_``
    inside a CPU ``sum``, are not); views, allocations and decomposing ops (``DESCEND``) launch what their
    children launch. A childless ``to`` (a device move: a no-op on the CPU) is one copy."""
    children = [c for c in evt.cpu_children if c.name.startswith("aten::")]
    if evt.name == "aten::to" and not children:  # a copy when Python asked for it (.to/.cpu), else a no-op
        call = evt.cpu_parent.name.split(" of ")[0] if evt.cpu_parent is not None else ""
        return int(call in COPY_CALLS and not (host and call == "<built-in method cpu"))
    if host or evt.name in NO_LAUNCH or evt.name in DESCEND:
        return sum(launches(c, host) for c in children)
    return 1


def count(prof) -> dict:
    """Launches, aten ops and syncs of one profile, by source (each top-level aten op attributed once)."""
    n_launches, aten_ops, syncs, by_op = Counter(), Counter(), Counter(), Counter()
    scopes: dict[str, str] = {}
    for evt in prof.events():
        name = evt.name
        if name.startswith("aten::") and not (evt.cpu_parent is not None and evt.cpu_parent.name.startswith("aten::")):
            source, scope, site, host = classify(evt)
            scopes[source] = scope
            aten_ops[source] += 1
            k = launches(evt, host)
            n_launches[source] += k
            if k and source != "forward":
                by_op[source, f"{evt.name.removeprefix('aten::')} @ {site}"] += k
            for sync in (SYNC_OPS[n] for n in _names(evt) if n in SYNC_OPS):
                syncs[source, f"{sync} @ {site}"] += 1
        elif name.startswith("<built-in method ") and " of Tensor object" in name:
            method = name.split()[2]
            if method in SYNC_METHODS:
                source, scope, site, _ = classify(evt)
                scopes[source] = scope
                syncs[source, f"{SYNC_METHODS[method]} @ {site}"] += 1
    return {"launches": n_launches, "aten_ops": aten_ops, "syncs": syncs, "scopes": scopes, "by_op": by_op}


def _names(evt):
    yield evt.name
    for c in evt.cpu_children:
        if c.name.startswith("aten::"):
            yield from _names(c)


def profiled(fn) -> dict:
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        fn()
    return count(prof)


def seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def minus(engine: Counter, bare: Counter) -> Counter:
    """Engine minus bare by source, negatives kept (the forward's own ops cancel: same batches)."""
    out = Counter(engine)
    out.subtract(bare)
    return Counter({k: v for k, v in out.items() if v})


def per(counter: dict, n: int) -> dict:
    return {k: round(v / n, 2) for k, v in sorted(counter.items(), key=lambda kv: -kv[1])}


def measure(kind: str, args, tokenizer) -> dict:
    dtype = getattr(torch, args.dtype)
    handle = make_handle(kind, args.layers, dtype, tokenizer)
    data = rows(args.rows)
    config = ExtractConfig(model=handle.name, hooks=["resid_post.*"], positions=args.positions.split(","),
                           dtype="bfloat16", model_dtype=args.dtype, batch_size=args.batch_size,
                           token_budget=args.token_budget, shard_size=args.shard_size, share_prompts=False,
                           out_dir="unused")
    batches = bare_batches(handle, data, config)
    deepest = HookPoint(handle.n_layers - 1, "resid_post")
    n_batches, n_shards = len(batches), -(-len(data) // args.shard_size)
    tokens = sum(len(s) for b in batches for s in b)
    bare = lambda: run_bare(handle, batches, deepest)  # noqa: E731
    engine = lambda: run_engine(handle, data, config)  # noqa: E731
    bare(), engine()  # warm-up
    b, e = profiled(bare), profiled(engine)
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
        return per(Counter({k: v for k, v in counter.items() if scope[k] == sc}), n[sc])

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
