"""``extract``: stream activations of chosen hooks at chosen positions into an ``ActivationStore``.

Per shard (a contiguous range of ``shard_size`` rows, in dataset order):
render + tokenise the rows, resolve position spans, cut length-sorted batches
under the token budget, and per batch run the model body with hooks (the
batch's rows end to end in one row on the CPU, right-padded on a GPU:
``ExtractConfig.layout``, ``run_packed``). On the
``hf`` backend ``capture_hf`` calls back per hook as the forward reaches it
and stops after the deepest hooked layer (no later layers, no lm_head); the
callback pools/gathers every row position of that hook in one
``undertow.kernels.gather_pool`` call on the device, downcasts, and hands the
result to the ``ShardSink`` (async copy to pinned host memory on CUDA;
moments merged once per shard), so at most one layer's ``acts_BTD`` is alive
at a time. The sink restores dataset order, so the store's row order never
depends on batching. The shard is then written atomically (``writer.py``, in
a background thread) and listed in the manifest; the next shard is tokenised
in another thread meanwhile.

Rows that share their prompt with other rows (matched replies, as in the
``stance`` contrast) run as shared-prompt batches instead (``shared_prompts.py``):
each prompt once, its replies against its KV cache, the same pooling after.

Measured (``scripts/bench_extract.py``; all layers x (last_prompt_token,
mean_response), real tokens/s over the packed bare forward): Gemma-3-270M on
2 CPU cores, 512 stance rows: 2.96x with shared prompts (34 % of the tokens
computed), 1.01-1.13x without. H100, bf16, random weights of that shape, 4,096
stance rows: 0.60x shared with the fused Triton ``gather_pool`` (0.56x with the
pure-torch reference, ~25 small kernels per hook per batch), 0.49x without
sharing. There the gap is host-side launch overhead of HF's eager forward on a
small model (torch.profiler: 29k launches, 1.29 s host vs 0.62 s GPU per run).

On the CPU the deepest hooked layer runs its MLP and query/output projections at the tokens read only
(``config.deepest_layer``, ``models/narrow.py``), and on AMD processors float32 linear layers run through oneDNN
instead of MKL (``config.cpu_linear``, ``models/cpu_linear.py``; 2.2x per layer on AMD EPYC, where MKL takes its
generic path). 256 unique rows (``scripts/bench_extract.py --rows unique-mwe``): AMD EPYC 1.90-2.12x the bare HF
forward per round, 0.92-1.04x of a bare forward given the same oneDNN linears; Intel Xeon (MKL on both sides)
0.95-1.04x.

``config.compile`` (``compiled.py``) runs the decoder layers through ``torch.compile`` (or CUDA graphs) at
fixed bucket shapes for the plain batches; on 2 CPU cores it is 0.88x eager (bucket padding outweighs the
fusion there), on a GPU it removes the launch overhead above.

Non-finite activations are stored as they are (not zeroed), counted per key
and row in the manifest (``nonfinite``: values and the first row indices),
left out of the moments, and reported with a ``NonFiniteWarning`` and in the
CLI summary: a probe reading them fails loudly rather than learning from zeros.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from undertow.kernels import gather_pool
from undertow.kernels.batch_pool import BatchPool
from undertow.kernels.gather_pool import index_for

from ..models.cpu_linear import onednn_linears
from ..models.handle import ModelHandle
from ..models.hooks import HookPoint
from ..models.packed import check_used, packed_forward, packed_ids
from ..store.manifest import MANIFEST, finalize
from ..store.preflight import check_free_space, store_bytes_estimate
from ..store.reader import ActivationStore
from ..store.writer import ShardWriter, prepare_store
from .batching import pad_right
from .capture import capture, capture_hf
from .compiled import CompiledBody, batch_shapes, rows_only
from .config import ExtractConfig
from .context import fit_context
from .heap import HeapTrimmer, trim_host_heap
from .plan import BATCHING_FIELDS, Plan, make_plan
from .positions import row_spans
from .render import Rendered, render_rows
from .rows import row_metadata
from .shared_prompts import capture_shared, group_by_prompt, shared_batches
from .sink import ShardSink

Progress = Callable[[int, int], None]
"""``progress(rows, real_tokens)`` after each batch."""


class NonFiniteWarning(UserWarning):
    """Non-finite activations were stored (counted in the manifest's ``nonfinite``)."""


def extract(handle: ModelHandle, dataset, config: ExtractConfig, *, resume: bool = False, overwrite: bool = False,
            progress: Progress | None = None, on_plan: Callable[[Plan, dict], None] | None = None) -> ActivationStore:
    """Extract ``config.hooks`` x ``config.positions`` for every row of ``dataset`` into ``config.out_dir``.

    ``dataset``: a ``datasets.Dataset`` or a list of dict rows (``render.py``).
    ``resume`` continues an incomplete store with the same identity; ``overwrite``
    replaces an existing one; with neither, an existing store is an error.
    ``on_plan(plan, done_shards)`` is called once before the first shard (the CLI sizes its bar).
    """
    torch.manual_seed(config.seed)
    plan = make_plan(handle, dataset, config)
    done = prepare_store(plan.out_dir, plan.header, resume, overwrite)
    check_room(plan, done)
    if on_plan is not None:
        on_plan(plan, done)
    writer = ShardWriter(plan.out_dir, plan.header, MANIFEST, done)
    run_shards(handle, plan, writer, [k for k in range(plan.n_shards) if k not in done], progress)
    manifest = finalize(plan.out_dir, plan.header)
    warn_nonfinite(manifest)
    return ActivationStore(plan.out_dir)


def check_room(plan: Plan, done: dict) -> None:
    """Refuse to start when the disk cannot hold the shards still to write (fixed-size keys; ~5 % margin)."""
    todo = plan.n_shards - len(done)
    if todo > 0:
        need = store_bytes_estimate(plan.header["keys"], plan.n_rows, plan.out_dtype.itemsize) * todo // plan.n_shards
        check_free_space(plan.out_dir, int(need * 1.05))


def warn_nonfinite(manifest: dict) -> None:
    bad = {k: v["values"] for k, v in manifest.get("nonfinite", {}).items()}
    if bad:
        worst = ", ".join(f"{k}: {n}" for k, n in list(bad.items())[:4])
        warnings.warn(f"non-finite activations stored ({worst}{', ...' if len(bad) > 4 else ''}); rows are listed in "
                      "manifest['nonfinite'], excluded from stats: check the model dtype or the inputs", NonFiniteWarning,
                      stacklevel=3)


def _render_shard(handle: ModelHandle, plan: Plan, k: int) -> tuple[list[dict], list[Rendered], list[int]]:
    """(raw rows, rendered rows within the model's context, tokens cut per row) of shard ``k``."""
    lo, hi = plan.shard_rows(k)
    raw = plan.source.get(lo, hi)
    rendered = render_rows(handle.tokenizer, raw, plan.config.template, offsets=plan.needs_offsets, first_index=lo)
    return raw, *fit_context(rendered, plan.max_tokens, plan.config.truncate, lambda i: _where(plan, raw, lo, i))


def _shard_extra(plan: Plan, lo: int, cut: list[int]) -> dict:
    """What the shard's manifest entry records besides its files: the batching that computed it (batch size and
    token budget change bf16 values, so a resumed run with other values is visible per shard) and truncation."""
    extra: dict = {"batching": {k: getattr(plan.config, k) for k in BATCHING_FIELDS}
                   | {"layout": plan.layout, "deepest_layer": "narrow" if plan.narrow else "full",
                      "cpu_linear": "onednn" if plan.onednn else "aten"}}
    if any(cut):
        extra["truncated"] = {"rows": [lo + i for i, c in enumerate(cut) if c][:100], "tokens": sum(cut)}
    return extra


def _shard_files(plan: Plan, lo: int, raw: list[dict], rendered: list[Rendered], tensors: dict, moments: dict,
                 nonfinite_S: dict, cut: list[int]) -> tuple[dict, list[dict], dict]:
    """(tensors by hook file, row metadata, non-finite summary) of one extracted shard."""
    by_hook: dict[str, dict] = {p.name: {} for p in plan.points}
    for key, spec in plan.header["keys"].items():
        by_hook[spec["hook"]][spec["position"]] = tensors[key].contiguous()
        by_hook[spec["hook"]].update(moments[key].to_tensors(f"stats/{spec['position']}/"))
    totals = {key: int(v.sum()) for key, v in nonfinite_S.items()}  # host tensors (sink.finish)
    nonfinite = {key: {"values": totals[key], "rows": [lo + i for i in v.nonzero()[:100, 0].tolist()]}
                 for key, v in nonfinite_S.items() if totals[key] > 0}
    meta = [dict(row_metadata(r, plan.source.indices[lo + i]), n_prompt_tokens=x.n_prompt,
                 n_response_tokens=x.n_response, n_tokens=x.n_tokens)
            for i, (r, x) in enumerate(zip(raw, rendered, strict=True))]
    if plan.config.truncate:
        for m, c in zip(meta, cut, strict=True):
            m["truncated_tokens"] = c
    return by_hook, meta, nonfinite


def run_shards(handle: ModelHandle, plan: Plan, writer: ShardWriter, shard_ids: list[int],
               progress: Progress | None = None) -> None:
    """Extract each shard of ``shard_ids`` in order, as a three-stage pipeline: shard k+1 is tokenised in a
    thread (the fast tokenizer releases the GIL) and shard k-1 written in another while shard k runs.
    Tokenising 4,096 suite rows takes ~1 s on 2 cores, ~40 % of an H100 pass over them with a 270M model."""
    renderer = ThreadPoolExecutor(1, thread_name_prefix="undertow-render")
    body = CompiledBody(handle, plan.config.compile, plan.points) if plan.config.compile != "none" else None
    trim = HeapTrimmer()
    try:
        with onednn_linears(handle.hf_model, plan.onednn):  # the model's own come back after the last shard
            nxt = renderer.submit(_render_shard, handle, plan, shard_ids[0]) if shard_ids else None
            for i, k in enumerate(shard_ids):
                raw, rendered, cut = nxt.result()
                if i + 1 < len(shard_ids):
                    nxt = renderer.submit(_render_shard, handle, plan, shard_ids[i + 1])
                lo, hi = plan.shard_rows(k)
                tensors, moments, nonfinite_S = extract_shard(handle, plan, raw, rendered, lo, progress, body, trim)
                by_hook, meta, nonfinite = _shard_files(plan, lo, raw, rendered, tensors, moments, nonfinite_S, cut)
                writer.submit(k, (lo, hi), sum(x.n_tokens for x in rendered), by_hook, meta, nonfinite,
                              _shard_extra(plan, lo, cut))
            writer.wait()
    finally:
        renderer.shutdown(wait=True, cancel_futures=True)
        writer.shutdown()


def _where(plan: Plan, raw: list[dict], lo: int, i: int) -> str:
    rid = raw[i].get("id")
    return f"dataset row {plan.source.indices[lo + i]}" + (f" (id {rid!r})" if rid is not None else "")


def extract_shard(handle: ModelHandle, plan: Plan, raw: list[dict], rendered: list[Rendered], lo: int,
                  progress: Progress | None, body: CompiledBody | None = None,
                  trim: Callable[[], None] = trim_host_heap):
    """Run every batch of one shard; returns the sink's (tensors, moments, non-finite per row).

    Rows that share a prompt with other rows run as shared-prompt batches (``shared_prompts.py``) when the
    config allows it on the ``hf`` backend; the rest in length-bucketed batches (batched by bucket length, the
    compiled ``body``'s shapes, when there is one)."""
    spans_NP = [row_spans(plan.row_positions, r, _where(plan, raw, lo, i)) for i, r in enumerate(rendered)]
    row_keys = {plan.key(p, pos): (p.name, plan.slots[pos.spec], pos.kind == "last_k")
                for p in plan.points for pos in plan.row_positions}
    token_keys = {plan.key(p, plan.token_position): p.name for p in plan.points} if plan.token_position else {}
    sink = ShardSink(len(rendered), [p.name for p in plan.points], row_keys, token_keys, handle.d_model,
                     plan.out_dtype, handle.device)
    groups, plain = [], list(range(len(rendered)))
    if plan.config.share_prompts and handle.backend == "hf" and max(p.depth for p in plan.points) >= 0:
        groups, plain = group_by_prompt(rendered)

    def pool_rows(batch: list[int], packed: bool = False, narrow: bool = False):
        return _pooler(handle, plan, sink, batch, [rendered[i].n_tokens for i in batch], [spans_NP[i] for i in batch],
                       packed, narrow)

    def done(batch: list[int]) -> None:
        trim()  # heap.py: when the process has grown, not after every batch
        if progress is not None:
            progress(len(batch), sum(rendered[i].n_tokens for i in batch))

    packed = plan.layout == "packed" and body is None
    for batch, _, _ in batch_shapes([rendered[i].n_tokens for i in plain], plan.config.batch_size,
                                    plan.config.token_budget, bucketed=body is not None):
        batch = [plain[j] for j in batch]
        on_capture, read = pool_rows(batch, packed, plan.narrow)
        run_batch(handle, plan, [rendered[i].ids for i in batch], on_capture, body, packed, read)
        done(batch)
    for shared in shared_batches(groups, rendered, plan.config.batch_size, plan.config.token_budget):
        capture_shared(handle, shared, rendered, plan.points, _pad_id(handle.tokenizer),
                       lambda rows: pool_rows(rows)[0])
        for chunk in shared.chunks:
            done([i for _, i in chunk])
    return sink.finish()


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def _batch_index(plan: Plan, lengths: list[int], spans_BP: list[list[tuple[int, int]]], pin: bool,
                 packed: bool = False, tail: Tensor | None = None) -> Tensor:
    """The batch's index tensors in one int64 host tensor (pinned on CUDA: moved in one async copy): the row
    positions' ``[2, B, P]`` span starts and ends, then ``all_tokens``' ``[2, B, T]`` (a pad column is an
    empty span), then ``tail`` (the read tokens, ``read_rows``). ``packed``: token positions of the packed row
    (row b's tokens start where rows 0..b-1 end)."""
    parts = []
    offsets_B1 = torch.tensor([0, *lengths[:-1]], dtype=torch.long).cumsum(0)[:, None] if packed else 0
    if plan.row_positions:
        parts.append((torch.tensor(spans_BP, dtype=torch.long).permute(2, 0, 1) + offsets_B1).reshape(-1))
    if plan.token_position is not None:
        starts_BT = torch.arange(max(lengths)).expand(len(lengths), -1)
        ends_BT = starts_BT + (starts_BT < torch.tensor(lengths, dtype=torch.long)[:, None])
        parts += [(starts_BT + offsets_B1).reshape(-1), (ends_BT + offsets_B1).reshape(-1)]
    if tail is not None:
        parts.append(tail)
    flat = torch.cat(parts)
    return flat.pin_memory() if pin else flat


def read_rows(lengths: list[int], spans_BP: list[list[tuple[int, int]]], packed: bool) -> Tensor:
    """The flat token indices that some row position reads (``b * T + t`` in the right-padded batch, or the
    packed row's positions), sorted and distinct: where the deepest layer must run (``Plan.narrow``)."""
    starts = [0, *itertools.accumulate(lengths[:-1])] if packed else [b * max(lengths) for b in range(len(lengths))]
    return torch.tensor(sorted({o + t for o, row in zip(starts, spans_BP, strict=True) for s, e in row
                                for t in range(s, e)}), dtype=torch.long)


def _pooler(handle: ModelHandle, plan: Plan, sink: ShardSink, batch: list[int], lengths: list[int],
            spans_BP: list[list[tuple[int, int]]], packed: bool = False,
            narrow: bool = False) -> tuple[Callable[[str, torch.Tensor], None], Tensor | None]:
    """Open ``batch`` (shard-local rows, right-padded to ``max(lengths)``, or ``packed`` end to end in one row)
    in the sink; returns the hook callback that pools each hook's ``acts_BTD`` into it, and (``narrow``) the
    tokens the deepest layer must run at on the device (``read_rows``; else None).

    Packed: the hook's ``[1, N, D]`` row is pooled as ``[B, N, D]`` through a stride-0 view on the row axis
    (``expand``: no copy), with every span moved to its row's tokens, so the pooling, the Triton kernel
    included, reads the packed row in place.

    Row positions: every hook's slots in one ``BatchPool`` per batch (per hook one gather, or one Triton
    launch; non-finite counts, moments and downcast once per batch for all hooks); ``max_span`` is known here
    on the host, so nothing syncs to find it. ``all_tokens``: one ``gather_pool`` call per hook. The index
    tensors reach the device in one copy per batch (per device of a device-mapped model).

    measured (``scripts/bench_launches.py``; CPU, reference pooling, Gemma-3-270M config at 4 layers, bf16,
    last_prompt_token + mean_response, batch 16): 129 launches per
    batch beyond the bare forward before (pooling 56, moments 40, non-finite checks 32, index 1), 44 after
    (pooling 22, moments 9, index 8, non-finite 5); no per-batch sync before or after."""
    dev = handle.device
    B, T = len(batch), max(lengths)
    read = read_rows(lengths, spans_BP, packed) if narrow else None
    index = _batch_index(plan, lengths, spans_BP, pin=dev.type == "cuda", packed=packed, tail=read).to(
        dev, non_blocking=True)
    if read is not None:
        index, read = index[:len(index) - len(read)], index[len(index) - len(read):]
    pool = None
    if plan.row_positions:
        P = len(spans_BP[0])
        se_2BP = index[: 2 * B * P].view(2, B, P)
        max_span = max(e - s for row in spans_BP for s, e in row)
        pool = BatchPool([p.name for p in plan.points], se_2BP[0], se_2BP[1], max_span, plan.out_dtype, dev)
        index = index[2 * B * P:]
    sink.start_batch(torch.tensor(batch, dtype=torch.long), lengths, pool)
    tokens: dict[tuple[torch.device, int], tuple] = {}  # all_tokens' spans (and reference index) per device

    def on_capture(name: str, acts_BTD: torch.Tensor) -> None:
        if packed:  # [1, N, D] -> [B, N, D], a view
            acts_BTD = acts_BTD.expand(B, -1, -1)
        if pool is not None:
            pool.add(name, acts_BTD)
        if plan.token_position is not None:
            here, key = acts_BTD.device, (acts_BTD.device, acts_BTD.shape[1])
            if key not in tokens:
                se_2BT = index.view(2, B, T).to(here)
                tokens[key] = (se_2BT[0], se_2BT[1], index_for(se_2BT[0], se_2BT[1], 1, acts_BTD.shape[1]))
            starts_BT, ends_BT, ix = tokens[key]
            pooled = gather_pool(acts_BTD, starts_BT, ends_BT, plan.out_dtype, 1, ix)
            if here != dev:  # a layer of a device-mapped model (devicemap.py): pooled there, the result moved
                pooled = type(pooled)(*(t.to(dev, non_blocking=True) for t in pooled))
            sink.put_tokens(name, pooled)

    return on_capture, read


def run_batch(handle: ModelHandle, plan: Plan, seqs: list[list[int]],
              on_capture: Callable[[str, torch.Tensor], None], body: CompiledBody | None = None,
              packed: bool = False, read: Tensor | None = None) -> None:
    """One forward pass over ``seqs`` (right-padded, or ``packed`` end to end in one row: ``on_capture`` then
    gets ``[1, N, D]``), every hook handed to ``on_capture``; through the compiled ``body`` (padded to its bucket
    shape, the dummy rows cut off before ``on_capture``) when given. ``read`` (eager ``hf`` body only): the
    tokens the deepest layer runs at (``read_rows``)."""
    dev = handle.device
    if packed:
        return run_packed(handle, plan.points, seqs, on_capture, read)
    if body is None:
        ids_BT, mask_BT = pad_right(seqs, _pad_id(handle.tokenizer), pin=dev.type == "cuda")
    else:
        ids_BT, mask_BT = body.pad(seqs, _pad_id(handle.tokenizer), plan.config.batch_size, plan.config.token_budget,
                                   pin=dev.type == "cuda")
        on_capture = rows_only(len(seqs), on_capture) if len(ids_BT) > len(seqs) else on_capture
    ids_BT = ids_BT.to(dev, non_blocking=True)
    if body is not None:
        with body.active():
            capture_hf(handle, ids_BT, mask_BT.to(dev, non_blocking=True), plan.points, on_capture=on_capture)
    elif handle.backend == "hf":
        # Right-padded rows under a causal mask: no real position can see a pad (every pad lies after it), and
        # position ids count from 0 either way, so the body runs unmasked (HF then takes the fused causal
        # path, is_causal, instead of building and applying a [B, 1, T, T] padding mask); the pads' own states
        # are never read (spans end at each row's length). Every row equals its own unpadded forward:
        # tests/activations/engine/test_engine.py (tiny Llama, tiny Gemma-3 with an 8-token sliding window).
        # Measured on CPU (gemma-3-270m, 256 unique rows, 5.3% padding, 6 interleaved rounds in one process):
        # 1.001x the masked forward, i.e. no gain there; kept because it is exact and lets a GPU's SDPA take
        # its causal flash kernel, which a materialised padding mask rules out (not measured: no GPU here).
        # The mask is not even copied to the device (tests/activations/engine/test_launches.py counts it).
        capture_hf(handle, ids_BT, None, plan.points, on_capture=on_capture, read_rows=read)
    else:
        for name, acts_BTD in capture(handle, ids_BT, mask_BT.to(dev, non_blocking=True), plan.points).items():
            on_capture(name, acts_BTD)


def run_packed(handle: ModelHandle, points: list[HookPoint], seqs: list[list[int]],
               on_capture: Callable[[str, torch.Tensor], None], read: Tensor | None = None) -> None:
    """One forward pass over ``seqs`` end to end in one row (``activations/models/packed.py``), every hook of
    ``points`` handed to ``on_capture`` as ``[1, N, D]``: the projections, norms and MLPs run on real tokens
    only, the attention on each row alone; the deepest layer at the row positions ``read`` only, when given.
    ``launches.run_bare`` runs the same function without hook work.

    Measured (CPU, Gemma-3-270M fp32, 2 threads, the 256 unique lm-survival-instinct rows of
    ``scripts/bench_extract.py --rows``, 17 batches with 5.3% padding): the packed rows' last hidden states are
    the padded batch's bit for bit, and the bare body over them ran 1.03x the padded batches (best of 4
    interleaved rounds in one process, 23.01 vs 23.82 s), as fast as 128-token windows of the same tokens
    with no padding at all (22.91 s). Packing the rows into bins of 2,048 real tokens instead (13-33 rows a
    forward) did not gain (22.85 s), 4,096 lost (28.4 s: the elementwise ops' tensors outgrow the cache)."""
    ids_1N, pos_1N, packing = packed_ids(seqs, handle.device)
    body = handle.hf_model.get_decoder()
    with packed_forward(body.config):
        capture_hf(handle, ids_1N, None, points, on_capture=on_capture, read_rows=read, position_ids=pos_1N,
                   packing=packing)
    if max(p.depth for p in points) >= 0:  # an embedding-only forward stops before any attention
        check_used(packing, handle.hf_model, "set layout: padded")
