"""Per-hook gather/pool of token positions, downcast, and per-slot moments.

This is the step of extraction that runs once per hook per batch, on the
device, while the forward pass is still going (``capture_hf``'s callback):

    acts_BTD (model dtype, right-padded batch)
      -> out_BPD  (store dtype; slot p of row b pools tokens [start, end))
      -> count_P, mean_PD, m2_PD  (fp32 moments of the *un-rounded* pooled values,
                                   over rows whose slot is valid and finite)
      -> nonfinite_BP             (non-finite values per row and valid slot)

Position spec: every position kind the engine offers is a set of token spans
per row, so the one signature covers them all:

- ``last_prompt_token``, ``token:<marker>``: one span of length 1;
- ``last_k:N``: N spans of length 1 (P = N);
- ``mean_response`` / ``mean_prompt``: one span of the response / prompt;
- ``all_tokens``: P = T spans of length 1, empty (start == end) past a row's end.

An empty span is "no value": its output is 0 and it is left out of the moments.
The engine calls this once per hook per batch with every row position of the
config as slots (e.g. P = 1 + 1 for last_prompt_token + mean_response), and
once more for ``all_tokens``.

Layout (the Triton kernel follows it): ``starts_BP``/``ends_BP`` int64 on the device of
``acts_BTD``; ``out_BPD`` contiguous in ``out_dtype``; moments in fp32.

Trade-offs in the reference:

- ``max_span`` (a host-side upper bound on ``ends - starts``, which the engine
  knows because it computes spans on the host) picks the code path without a
  device sync: 1 gathers one token per slot; more gathers the span's tokens
  into ``[B, P, max_span, D]``, masks and sums in fp32. Cost and memory scale
  with B*P*max_span*D, not B*T*D: a response mean touches only response
  tokens (a long ``mean_prompt`` span widens every slot of the call: transient
  B*P*T*D fp32). Measured on H100 (Gemma-3-270M shape, bf16, 32k-token batches), the
  first version (a W_BPT matrix times ``acts.float()``) spent 18 % of all GPU
  time casting whole activations to fp32, and let a NaN outside a span leak
  into it (0 * NaN); the masked gather does neither.
- Moments are two-pass within the call (mean, then squared deviations); the
  caller merges calls with Chan's formula (``undertow.activations.store.stats``).
- ~20 small kernels per call: launch-bound on a GPU with a small model, which
  is what the fused Triton kernel below is for (two launches per call).

Triton (``gather_pool_triton``, picked on CUDA): one program per (slot, block
of rows) holds a whole d_model vector in registers, so the all-finite test and
a Welford partial need no second pass; a second kernel merges the partials.
AOT for sm_80/sm_90 (``aot_compile``, cuobjdump): no spills up to d_model 4096
(72-80 registers at 640, 172-186 at 4096 with 8 warps); at 8192 even 16 warps
spill a little (8-40 stack bytes). Measured on an H100, Gemma-3-270M shape, bf16,
4,096 stance rows, every layer: engine 0.60x of the bare packed forward with
this kernel vs 0.56x with the reference; the rest of the gap is HF's eager
forward itself (29k kernel launches, 1.29 s of host time for 0.62 s of GPU
time per run, torch.profiler), not the caching path.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
from torch import Tensor


class Pooled(NamedTuple):
    """Output of one gather/pool step."""

    out_BPD: Tensor
    """Pooled activations in the store dtype; empty spans hold 0."""
    count_P: Tensor
    """int64: rows whose slot p is non-empty and all-finite (the moments' sample size)."""
    mean_PD: Tensor
    """fp32 mean of those rows' pooled vectors, per slot."""
    m2_PD: Tensor
    """fp32 sum of squared deviations from ``mean_PD`` (Welford's M2), per slot."""
    nonfinite_BP: Tensor
    """int64: non-finite values in the pooled vector of row b, slot p (0 for empty spans)."""


class SpanIndex(NamedTuple):
    """What the reference derives from the spans alone: built once per batch (``span_index``) and shared by
    every hook of it, so each hook's pooling is a gather and a masked sum, not ~14 small ops."""

    lengths_BP: Tensor
    valid_BP: Tensor
    """Non-empty slots."""
    max_span: int
    idx_BN1: Tensor
    """Gather index clamped into ``[0, T)``: one token per slot (``max_span <= 1``, N = P) or ``max_span``
    tokens per slot (N = P * max_span)."""
    inside_BN1: Tensor | None
    """Which gathered tokens lie inside their span (``max_span > 1``)."""
    denom_BP1: Tensor | None
    """int64 span lengths (at least 1), the mean's divisor, promoted to fp32 by the division (``max_span > 1``)."""


def span_index(starts_BP: Tensor, ends_BP: Tensor, max_span: int | None, T: int) -> SpanIndex:
    """The ``SpanIndex`` of spans ``[starts_BP, ends_BP)`` into sequences of ``T`` tokens (on their device).
    ``max_span`` None: computed (a device sync on CUDA)."""
    lengths_BP = ends_BP - starts_BP
    valid_BP = lengths_BP > 0
    if max_span is None:
        max_span = int(lengths_BP.max()) if lengths_BP.numel() else 1
    if max_span <= 1:
        return SpanIndex(lengths_BP, valid_BP, max_span, starts_BP.clamp(0, T - 1)[..., None], None, None)
    B, P = starts_BP.shape
    offs_L = torch.arange(max_span, device=starts_BP.device)
    inside_BPL = offs_L < lengths_BP[..., None]
    idx_BPL = (starts_BP[..., None] + offs_L).clamp(0, T - 1)
    return SpanIndex(lengths_BP, valid_BP, max_span, idx_BPL.view(B, P * max_span, 1),
                     inside_BPL.view(B, P * max_span, 1), lengths_BP.clamp(min=1)[..., None])


def pool_slots(acts_BTD: Tensor, ix: SpanIndex) -> Tensor:
    """fp32 pooled vector of every slot (0 for empty spans): a gather of one token per slot, or a masked gather
    of at most ``max_span`` tokens per slot and their mean."""
    B, _, D = acts_BTD.shape
    P = ix.valid_BP.shape[1]
    tokens_BND = torch.gather(acts_BTD, 1, ix.idx_BN1.expand(B, -1, D))
    if ix.max_span <= 1:
        return torch.where(ix.valid_BP[..., None], tokens_BND.float(), 0.0)
    tokens_BPLD = torch.where(ix.inside_BN1, tokens_BND.float(), 0.0).view(B, P, ix.max_span, D)
    return tokens_BPLD.sum(2) / ix.denom_BP1


def _nonfinite(pooled_BPD: Tensor, valid_BP: Tensor) -> tuple[Tensor, Tensor]:
    """(non-finite values per slot, slots kept for the moments: non-empty and all-finite); any leading dims.

    ``x - x != 0`` is ``~isfinite(x)`` (IEEE: +0 for every finite x, NaN for inf and NaN) in two kernels
    where ``isfinite`` takes four; five launches in all, was eight."""
    nonfinite_BP = ((pooled_BPD - pooled_BPD) != 0).sum(dim=-1)
    return nonfinite_BP, valid_BP & (nonfinite_BP == 0)


def _moments(pooled_BPD: Tensor, keep_BP: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Two-pass (count_P, mean_PD, m2_PD) of the kept slots over the row axis (-3); any leading dims (one per
    hook: ``batch_pool.py``). Summing dim 1 of ``[H, B, P, D]`` gave the same bits as dim 0 of each ``[B, P, D]``
    on this CPU (B 1-256, P 1-5, D 7-1000, H 1-18; 1 and 2 threads)."""
    count_P = keep_BP.sum(dim=-2)
    x_BPD = torch.where(keep_BP[..., None], pooled_BPD, 0.0)
    mean_PD = x_BPD.sum(dim=-3) / count_P.clamp(min=1)[..., None]  # int64 promoted to fp32 in the kernel
    dev_BPD = torch.where(keep_BP[..., None], x_BPD - mean_PD.unsqueeze(-3), 0.0)
    return count_P, mean_PD, (dev_BPD * dev_BPD).sum(dim=-3)


def finish_ref(pooled_BPD: Tensor, valid_BP: Tensor, out_dtype: torch.dtype) -> Pooled:
    """Non-finite counts, moments and the downcast of pooled fp32 slots (any leading dims)."""
    nonfinite_BP, keep_BP = _nonfinite(pooled_BPD, valid_BP)
    count_P, mean_PD, m2_PD = _moments(pooled_BPD, keep_BP)
    return Pooled(pooled_BPD.to(out_dtype), count_P, mean_PD, m2_PD, nonfinite_BP)


def gather_pool_ref(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype,
                    max_span: int | None = None, index: SpanIndex | None = None) -> Pooled:
    """Pure-torch reference: pool ``acts_BTD[b, starts_BP[b,p]:ends_BP[b,p]]`` per slot.

    ``max_span`` bounds ``ends - starts`` (None: computed, a device sync on CUDA); ``index``: the batch's
    ``span_index`` of these spans, when the caller built it once for all its hooks.
    """
    ix = index if index is not None else span_index(starts_BP, ends_BP, max_span, acts_BTD.shape[1])
    return finish_ref(pool_slots(acts_BTD, ix), ix.valid_BP, out_dtype)


try:  # Linux wheels only; elsewhere the reference is the one implementation
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on platforms without triton
    triton = None


if triton is not None:

    @triton.jit
    def _chan_merge(n, mean, m2, n_j, mean_j, m2_j):
        """Fold a partial (n_j, mean_j, M2_j) into (n, mean, M2); one row is the partial (1, x, 0) (Welford)."""
        total = n + n_j
        delta = mean_j - mean
        return total, mean + delta * (n_j / total), m2 + m2_j + delta * delta * (n * n_j / total)

    @triton.jit
    def _gather_pool_kernel(acts_ptr, starts_ptr, ends_ptr, out_ptr, nonfinite_ptr, part_n_ptr, part_mean_ptr,
                            part_m2_ptr, B, P, D, NB, stride_ab, stride_at, stride_ad,
                            ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
        """Program (p, j): slot p of rows [j*ROWS, (j+1)*ROWS). Pools each row's span in fp32 (whole d_model
        in registers, so the all-finite test of a vector needs no second pass), stores it downcast, counts
        non-finite values, and folds kept rows into a per-program Welford partial (n, mean, M2)."""
        p = tl.program_id(0)
        j = tl.program_id(1)
        offs_d = tl.arange(0, BLOCK_D)
        in_d = offs_d < D
        n = 0.0
        mean = tl.zeros([BLOCK_D], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_D], dtype=tl.float32)
        for i in range(ROWS):
            b = j * ROWS + i
            if b < B:
                start = tl.load(starts_ptr + b * P + p)
                end = tl.load(ends_ptr + b * P + p)
                acc = tl.zeros([BLOCK_D], dtype=tl.float32)
                row_ptr = acts_ptr + b.to(tl.int64) * stride_ab + offs_d * stride_ad
                for t in range(start, end):
                    acc += tl.load(row_ptr + t * stride_at, mask=in_d, other=0.0).to(tl.float32)
                length = end - start
                pooled = acc / tl.maximum(length, 1).to(tl.float32)
                finite = (pooled == pooled) & (tl.abs(pooled) < float("inf"))
                n_bad = tl.sum(tl.where(in_d & ~finite, 1, 0), axis=0)
                slot = b.to(tl.int64) * P + p
                tl.store(out_ptr + slot * D + offs_d, pooled.to(out_ptr.dtype.element_ty), mask=in_d)
                tl.store(nonfinite_ptr + slot, n_bad.to(tl.int64))
                if (length > 0) & (n_bad == 0):
                    n, mean, m2 = _chan_merge(n, mean, m2, 1.0, pooled, 0.0)
        part = p * NB + j
        tl.store(part_n_ptr + part, n)
        tl.store(part_mean_ptr + part * D + offs_d, mean, mask=in_d)
        tl.store(part_m2_ptr + part * D + offs_d, m2, mask=in_d)

    @triton.jit
    def _merge_moments_kernel(part_n_ptr, part_mean_ptr, part_m2_ptr, count_ptr, mean_ptr, m2_ptr, D, NB,
                              BLOCK_D: tl.constexpr):
        """Program (p, k): Chan's merge of slot p's NB partials over d_model block k."""
        p = tl.program_id(0)
        k = tl.program_id(1)
        offs_d = k * BLOCK_D + tl.arange(0, BLOCK_D)
        in_d = offs_d < D
        n = 0.0
        mean = tl.zeros([BLOCK_D], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_D], dtype=tl.float32)
        for j in range(NB):
            part = p * NB + j
            n_j = tl.load(part_n_ptr + part)
            if n_j > 0:
                mean_j = tl.load(part_mean_ptr + part * D + offs_d, mask=in_d, other=0.0)
                m2_j = tl.load(part_m2_ptr + part * D + offs_d, mask=in_d, other=0.0)
                n, mean, m2 = _chan_merge(n, mean, m2, n_j, mean_j, m2_j)
        tl.store(mean_ptr + p * D + offs_d, mean, mask=in_d)
        tl.store(m2_ptr + p * D + offs_d, m2, mask=in_d)
        if k == 0:
            tl.store(count_ptr + p, n.to(tl.int64))


def _rows_per_program(B: int, P: int) -> int:
    """Rows per program: enough programs to fill ~4 waves of an H100's 132 SMs, at most 16 rows each
    (a power of two, so only five variants ever compile)."""
    rows = 1
    while rows < 16 and math.ceil(B / (rows * 2)) * P >= 4 * 132:
        rows *= 2
    return rows


def _pool_warps(block_d: int) -> int:
    """Warps for the pool kernel: 512 d_model elements per warp keeps the three fp32 vectors a thread holds
    (sum, Welford mean and M2) in registers: at d_model 8192, 8 warps used all 255 registers and spilled
    on sm_90; 16 warps fit (AOT, cuobjdump)."""
    return max(4, min(16, block_d // 512))


def _kernels(device: torch.device):
    """The kernels for tensors on ``device``: compiled on CUDA; on the CPU only under Triton's interpreter."""
    if device.type != "cuda" and not triton.knobs.runtime.interpret:
        raise RuntimeError("gather_pool_triton got CPU tensors: run it on CUDA, or set TRITON_INTERPRET=1 before "
                           "triton is first imported (tests do), or use UNDERTOW_GATHER_POOL=ref")
    return _gather_pool_kernel, _merge_moments_kernel


_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def aot_compile(arch: int, acts_dtype: torch.dtype, out_dtype: torch.dtype, d_model: int, rows: int = 16):
    """Both kernels compiled ahead of time for ``sm_{arch}`` with the launcher's block sizes and warps:
    ``{name: {"compiled", "n_regs", "stack_bytes", "local_bytes", "shared_bytes"}}`` (``kernels/aot.py``)."""
    from .aot import compile_for

    block_d = triton.next_power_of_2(d_model)
    ptr = {"acts_ptr": _TRITON_TYPES[acts_dtype], "starts_ptr": "i64", "ends_ptr": "i64",
           "out_ptr": _TRITON_TYPES[out_dtype], "nonfinite_ptr": "i64", "part_n_ptr": "fp32",
           "part_mean_ptr": "fp32", "part_m2_ptr": "fp32"}
    ints = {n: "i32" for n in ("B", "P", "D", "NB", "stride_ab", "stride_at", "stride_ad")}
    pool_sig = {**{k: "*" + v for k, v in ptr.items()}, **ints}
    merge_sig = {"part_n_ptr": "*fp32", "part_mean_ptr": "*fp32", "part_m2_ptr": "*fp32", "count_ptr": "*i64",
                 "mean_ptr": "*fp32", "m2_ptr": "*fp32", "D": "i32", "NB": "i32"}
    return {"gather_pool": compile_for(_gather_pool_kernel, pool_sig, {"ROWS": rows, "BLOCK_D": block_d}, arch,
                                       _pool_warps(block_d)),
            "merge_moments": compile_for(_merge_moments_kernel, merge_sig, {"BLOCK_D": min(block_d, 1024)}, arch, 4)}


def alloc_pooled(lead: tuple[int, ...], B: int, P: int, D: int, out_dtype: torch.dtype, device: torch.device,
                 make=torch.empty) -> Pooled:
    """Output buffers of ``Pooled`` shapes with leading dims ``lead`` (``(H,)``: one per hook)."""
    return Pooled(make((*lead, B, P, D), dtype=out_dtype, device=device),
                  make((*lead, P), dtype=torch.int64, device=device),
                  make((*lead, P, D), dtype=torch.float32, device=device),
                  make((*lead, P, D), dtype=torch.float32, device=device),
                  make((*lead, B, P), dtype=torch.int64, device=device))


class Partials(NamedTuple):
    """Per-program Welford partials of S slots (``S = P``, or ``H * P`` for a whole batch of hooks)."""

    n_SN: Tensor
    mean_SND: Tensor
    m2_SND: Tensor


def partials(S: int, NB: int, D: int, device: torch.device) -> Partials:
    """Uninitialised partials: the pool kernel writes every one."""
    return Partials(torch.empty((S, NB), dtype=torch.float32, device=device),
                    torch.empty((S, NB, D), dtype=torch.float32, device=device),
                    torch.empty((S, NB, D), dtype=torch.float32, device=device))


def launch_pool(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_BPD: Tensor, nonfinite_BP: Tensor,
                parts: Partials, rows: int) -> None:
    """The pool kernel over all (slot, block of ``rows`` rows): writes every element of ``out_BPD`` and
    ``nonfinite_BP`` and every partial (contiguous outputs; ``starts``/``ends`` contiguous int64)."""
    B, _, D = acts_BTD.shape
    P, NB = starts_BP.shape[1], parts.n_SN.shape[1]
    pool_kernel, _ = _kernels(acts_BTD.device)
    block_d = triton.next_power_of_2(D)
    pool_kernel[(P, NB)](acts_BTD, starts_BP, ends_BP, out_BPD, nonfinite_BP, parts.n_SN, parts.mean_SND,
                         parts.m2_SND, B, P, D, NB, *acts_BTD.stride(), ROWS=rows, BLOCK_D=block_d,
                         num_warps=_pool_warps(block_d))


def launch_merge(parts: Partials, count_S: Tensor, mean_SD: Tensor, m2_SD: Tensor) -> None:
    """The merge kernel: Chan's merge of each slot's partials, in program order; writes every output."""
    S, NB = parts.n_SN.shape
    D = mean_SD.shape[-1]
    _, merge_kernel = _kernels(count_S.device)
    merge_block = min(triton.next_power_of_2(D), 1024)
    merge_kernel[(S, triton.cdiv(D, merge_block))](parts.n_SN, parts.mean_SND, parts.m2_SND, count_S, mean_SD, m2_SD,
                                                   D, NB, BLOCK_D=merge_block)


def gather_pool_triton(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype,
                       max_span: int | None = None, index: SpanIndex | None = None) -> Pooled:
    """Fused Triton version of ``gather_pool_ref``: two launches per call instead of ~32 small kernels.

    One pass over the span tokens (each d_model row read once, coalesced) writes the downcast output and
    the non-finite counts and folds kept rows into per-program Welford partials; a second tiny kernel
    merges the partials per slot (Chan). ``max_span`` and ``index`` are accepted for the signature and unused:
    spans are looped with runtime bounds. The outputs are allocated uninitialised (the kernels write every
    element): four fewer fill launches per call than zeroed buffers. CPU tensors run through Triton's
    interpreter (slow; for tests), where bf16 casts truncate instead of rounding: compare bf16 within one ulp.
    """
    if triton is None:
        raise RuntimeError("triton is not installed: use UNDERTOW_GATHER_POOL=ref or install triton (Linux)")
    B, T, D = acts_BTD.shape
    P = starts_BP.shape[1]
    dev = acts_BTD.device
    if B == 0 or P == 0 or D == 0:
        return alloc_pooled((), B, P, D, out_dtype, dev, torch.zeros)
    out = alloc_pooled((), B, P, D, out_dtype, dev)
    rows = _rows_per_program(B, P)
    parts = partials(P, math.ceil(B / rows), D, dev)
    launch_pool(acts_BTD, starts_BP.contiguous(), ends_BP.contiguous(), out.out_BPD, out.nonfinite_BP, parts, rows)
    launch_merge(parts, out.count_P, out.mean_PD, out.m2_PD)
    return out


_IMPLS = {"ref": gather_pool_ref, **({"triton": gather_pool_triton} if triton is not None else {})}
"""Implementations by name: the dispatcher picks ``triton`` on CUDA, ``ref`` elsewhere."""


def _pick_impl(device: torch.device) -> str:
    forced = os.environ.get("UNDERTOW_GATHER_POOL", "auto")
    if forced == "auto":
        return "triton" if device.type == "cuda" and "triton" in _IMPLS else "ref"
    if forced not in _IMPLS:
        raise ValueError(f"UNDERTOW_GATHER_POOL={forced!r}: available implementations are auto, {', '.join(_IMPLS)}")
    return forced


def index_for(starts_BP: Tensor, ends_BP: Tensor, max_span: int, T: int) -> SpanIndex | None:
    """``span_index`` when the dispatcher runs the reference on these spans' device (to reuse across hooks);
    None for the Triton kernel, which reads the spans directly."""
    return span_index(starts_BP, ends_BP, max_span, T) if _pick_impl(starts_BP.device) == "ref" else None


def gather_pool(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype,
                max_span: int | None = None, index: SpanIndex | None = None) -> Pooled:
    """Dispatcher: Triton on CUDA when registered, else the reference (``index``: its ``span_index``, reused).

    ``UNDERTOW_GATHER_POOL=ref|triton|auto`` forces a choice. The engine pools its row positions through
    ``batch_pool.BatchPool`` (all hooks of a batch) and ``all_tokens`` through this, one call per hook.
    """
    return _IMPLS[_pick_impl(acts_BTD.device)](acts_BTD, starts_BP, ends_BP, out_dtype, max_span, index)
