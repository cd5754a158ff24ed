"""gather_pool + probe projection in one pass: probes score during extraction at no extra read.

    acts_BTD, spans (starts_BP, ends_BP), probe directions w_DK (K <= 64), bias b_K
      -> everything ``gather_pool`` returns (``Pooled``: out_BPD, count_P, mean_PD, m2_PD, nonfinite_BP)
      -> scores_BPK = pooled_BPD @ w_DK + b_K   (fp32, from the *un-rounded* fp32 pooled vectors)

An empty span pools to 0, so its scores are ``b_K`` (mask with ``ends > starts``); a row with a
non-finite pooled value has non-finite scores (NaN/inf propagate through the dot product).

Triton (``gather_pool_project_triton``): ``gather_pool``'s kernel keeps a whole d_model vector per row in
registers, which leaves no room for a [d_model, K] weight tile; this one instead takes a tile of
``BLOCK_R`` rows and walks d_model in ``BLOCK_D`` chunks: per chunk it pools the span tokens
([BLOCK_R, BLOCK_D] fp32), stores the downcast output, counts non-finite values, accumulates
``tl.dot(pooled, w_chunk)`` into [BLOCK_R, BLOCK_K] scores (tensor cores, TF32 inputs, fp32 accumulate:
~1e-3 relative vs fp32; the interpreter computes it in fp32) and writes the chunk's two-pass moments
of the block's valid rows as a Welford partial. Whether a row is all-finite is known only after the last
chunk, so a block that holds a non-finite row recomputes its partials without it (a second read of
that block only; none in a healthy run). ``gather_pool``'s merge kernel folds the partials (Chan).

Trade-offs, on paper (no GPU lent in the session that wrote this; AOT counts in
``tests/kernels/test_gather_pool_project.py``): the weights are re-read from L2 by every program,
D x K x 4 bytes (1 MiB at d_model 4096, K 64), so ``BLOCK_R`` = 64 rows per program keeps that traffic
(rows / 64 MiB: 1 GiB for 64k rows) under the HBM traffic of the pooled rows themselves (64k x 4096 x
2 B read + 2 B written = 1 GiB); 16 rows per program would make it 4 GiB of L2 reads, L2-bound.
The dot at K 64 is 34 GFLOP for 64k rows: 0.07 ms of TF32 tensor-core time on an H100 against 0.32 ms
of HBM traffic, so the kernel stays memory-bound; IEEE fp32 (CUDA cores, 67 TFLOP/s) would take 0.5 ms
and make it compute-bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .gather_pool import _IMPLS as _POOL_IMPLS
from .gather_pool import _TRITON_TYPES, Pooled, _pick_impl, gather_pool_ref, triton

MAX_K = 64
"""Most probe directions one call projects onto (the [BLOCK_R, K] score tile lives in registers)."""


def gather_pool_project_ref(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype,
                            w_DK: Tensor, b_K: Tensor, max_span: int | None = None) -> tuple[Pooled, Tensor]:
    """Pure-torch reference: ``gather_pool_ref`` in fp32, its pooled vectors projected, then downcast."""
    _check(acts_BTD, w_DK, b_K)
    pooled = gather_pool_ref(acts_BTD, starts_BP, ends_BP, torch.float32, max_span)
    scores_BPK = pooled.out_BPD @ w_DK.float().to(acts_BTD.device) + b_K.float().to(acts_BTD.device)
    return pooled._replace(out_BPD=pooled.out_BPD.to(out_dtype)), scores_BPK


def _check(acts_BTD: Tensor, w_DK: Tensor, b_K: Tensor) -> None:
    D, K = w_DK.shape
    if acts_BTD.shape[-1] != D:
        raise ValueError(f"acts have d_model {acts_BTD.shape[-1]} but the probe directions have {D}")
    if not 1 <= K <= MAX_K or b_K.shape != (K,):
        raise ValueError(f"need 1 <= K <= {MAX_K} probe directions with a [K] bias; got w {tuple(w_DK.shape)}, "
                         f"b {tuple(b_K.shape)} (split larger probe sets into several calls)")


if triton is not None:
    import triton.language as tl

    @triton.jit
    def _pool_chunk(acts_ptr, row_off, start, length, longest, offs_d, in_d, stride_at, stride_ad,
                    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, SINGLE: tl.constexpr):
        """fp32 mean of each row's span over one d_model chunk: [BLOCK_R, BLOCK_D] (0 for empty spans).
        ``SINGLE`` (every span at most one token, known on the host): one load, no token loop, so the
        chunk loop's software pipeliner can keep several chunks' loads in flight."""
        base = acts_ptr + row_off[:, None] + offs_d[None, :] * stride_ad
        if SINGLE:
            ptrs = base + start.to(tl.int64)[:, None] * stride_at
            pooled = tl.load(ptrs, mask=(length > 0)[:, None] & in_d[None, :], other=0.0).to(tl.float32)
        else:
            acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
            for t in range(0, longest):
                ptrs = base + (start + t).to(tl.int64)[:, None] * stride_at
                acc += tl.load(ptrs, mask=(t < length)[:, None] & in_d[None, :], other=0.0).to(tl.float32)
            pooled = acc / tl.maximum(length, 1).to(tl.float32)[:, None]
        return pooled

    @triton.jit
    def _block_spans(starts_ptr, ends_ptr, B, P, p, j, BLOCK_R: tl.constexpr):
        """(rows, rows < B, span starts, span lengths) of program (p, j)'s block."""
        rows = j * BLOCK_R + tl.arange(0, BLOCK_R)
        in_r = rows < B
        start = tl.load(starts_ptr + rows * P + p, mask=in_r, other=0)
        return rows, in_r, start, tl.load(ends_ptr + rows * P + p, mask=in_r, other=0) - start

    @triton.jit
    def _chunk_partial(pooled, keep, n_keep, part_mean_ptr, part_m2_ptr, part, D, offs_d, in_d):
        """Two-pass mean and M2 over the kept rows of the block, for one d_model chunk."""
        x = tl.where(keep[:, None], pooled, 0.0)
        mean = tl.sum(x, axis=0) / tl.maximum(n_keep, 1.0)
        dev = tl.where(keep[:, None], pooled - mean[None, :], 0.0)
        tl.store(part_mean_ptr + part * D + offs_d, mean, mask=in_d)
        tl.store(part_m2_ptr + part * D + offs_d, tl.sum(dev * dev, axis=0), mask=in_d)

    @triton.jit
    def _gather_pool_project_kernel(acts_ptr, starts_ptr, ends_ptr, w_ptr, bias_ptr, out_ptr, nonfinite_ptr,
                                    scores_ptr, part_n_ptr, part_mean_ptr, part_m2_ptr, B, P, D, K, NB,
                                    stride_ab, stride_at, stride_ad, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                                    BLOCK_K: tl.constexpr, SINGLE: tl.constexpr):
        """Program (p, j): slot p of rows [j*BLOCK_R, (j+1)*BLOCK_R), d_model walked in BLOCK_D chunks."""
        p = tl.program_id(0)
        j = tl.program_id(1)
        rows, in_r, start, length = _block_spans(starts_ptr, ends_ptr, B, P, p, j, BLOCK_R)
        valid = in_r & (length > 0)
        longest = tl.max(length, axis=0)
        n_valid = tl.sum(valid.to(tl.float32), axis=0)
        row_off = rows.to(tl.int64) * stride_ab
        slot = rows.to(tl.int64) * P + p
        part = p * NB + j
        offs_k = tl.arange(0, BLOCK_K)
        in_k = offs_k < K
        scores = tl.zeros([BLOCK_R, BLOCK_K], dtype=tl.float32)
        bad = tl.zeros([BLOCK_R], dtype=tl.int32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            in_d = offs_d < D
            pooled = _pool_chunk(acts_ptr, row_off, start, length, longest, offs_d, in_d, stride_at, stride_ad,
                                 BLOCK_R, BLOCK_D, SINGLE)
            finite = (pooled == pooled) & (tl.abs(pooled) < float("inf"))
            bad += tl.sum(tl.where(in_d[None, :] & ~finite, 1, 0), axis=1)
            tl.store(out_ptr + slot[:, None] * D + offs_d[None, :], pooled.to(out_ptr.dtype.element_ty),
                     mask=in_r[:, None] & in_d[None, :])
            w = tl.load(w_ptr + offs_d[:, None] * K + offs_k[None, :], mask=in_d[:, None] & in_k[None, :], other=0.0)
            scores = tl.dot(pooled, w, scores, input_precision="tf32")
            _chunk_partial(pooled, valid, n_valid, part_mean_ptr, part_m2_ptr, part, D, offs_d, in_d)
        tl.store(nonfinite_ptr + slot, bad.to(tl.int64), mask=in_r)
        bias = tl.load(bias_ptr + offs_k, mask=in_k, other=0.0)
        tl.store(scores_ptr + slot[:, None] * K + offs_k[None, :], scores + bias[None, :],
                 mask=in_r[:, None] & in_k[None, :])
        tl.store(part_n_ptr + part, n_valid)

    @triton.jit
    def _refit_partials_kernel(acts_ptr, starts_ptr, ends_ptr, nonfinite_ptr, part_n_ptr, part_mean_ptr,
                               part_m2_ptr, B, P, D, NB, stride_ab, stride_at, stride_ad, BLOCK_R: tl.constexpr,
                               BLOCK_D: tl.constexpr, SINGLE: tl.constexpr):
        """Program (p, j): if a row of the block holds a non-finite value (known only after the first
        kernel's last chunk), its partials again without that row; otherwise return at once (two small
        loads). A kernel of its own: inside the first one this loop cost ~50 registers and spilled."""
        p = tl.program_id(0)
        j = tl.program_id(1)
        rows, in_r, start, length = _block_spans(starts_ptr, ends_ptr, B, P, p, j, BLOCK_R)
        bad = tl.load(nonfinite_ptr + rows.to(tl.int64) * P + p, mask=in_r, other=0)
        valid = in_r & (length > 0)
        keep = valid & (bad == 0)
        n_keep = tl.sum(keep.to(tl.float32), axis=0)
        part = p * NB + j
        if n_keep < tl.sum(valid.to(tl.float32), axis=0):
            tl.store(part_n_ptr + part, n_keep)
            row_off = rows.to(tl.int64) * stride_ab
            longest = tl.max(length, axis=0)
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                in_d = offs_d < D
                pooled = _pool_chunk(acts_ptr, row_off, start, length, longest, offs_d, in_d, stride_at, stride_ad,
                                     BLOCK_R, BLOCK_D, SINGLE)
                _chunk_partial(pooled, keep, n_keep, part_mean_ptr, part_m2_ptr, part, D, offs_d, in_d)

BLOCK_R, BLOCK_D, NUM_WARPS = 64, 32, 8
"""Rows per program (amortises the L2 re-read of the weights, see the module doc), d_model chunk, warps."""


def _block_k(K: int) -> int:
    return max(16, triton.next_power_of_2(K))  # tl.dot needs every tile dimension >= 16


def gather_pool_project_triton(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype,
                               w_DK: Tensor, b_K: Tensor, max_span: int | None = None) -> tuple[Pooled, Tensor]:
    """Fused Triton version of ``gather_pool_project_ref``: three launches per call (pool+project, the
    non-finite refit that returns at once in a healthy run, merge).

    ``max_span`` (host-side bound on span lengths; None: computed, a device sync) picks the single-token
    variant at 1. CPU tensors run under Triton's interpreter (tests)."""
    from .gather_pool import _kernels

    if triton is None:
        raise RuntimeError("triton is not installed: use UNDERTOW_GATHER_POOL=ref or install triton (Linux)")
    _check(acts_BTD, w_DK, b_K)
    B, T, D = acts_BTD.shape
    P, K = starts_BP.shape[1], w_DK.shape[1]
    dev = acts_BTD.device
    out_BPD = torch.empty((B, P, D), dtype=out_dtype, device=dev)
    nonfinite_BP = torch.zeros((B, P), dtype=torch.int64, device=dev)
    scores_BPK = torch.empty((B, P, K), dtype=torch.float32, device=dev)
    count_P = torch.zeros(P, dtype=torch.int64, device=dev)
    mean_PD = torch.zeros((P, D), dtype=torch.float32, device=dev)
    m2_PD = torch.zeros((P, D), dtype=torch.float32, device=dev)
    if B == 0 or P == 0:
        return Pooled(out_BPD, count_P, mean_PD, m2_PD, nonfinite_BP), scores_BPK
    _, merge_kernel = _kernels(dev)
    NB = math.ceil(B / BLOCK_R)
    part_n = torch.empty((P, NB), dtype=torch.float32, device=dev)
    part_mean = torch.empty((P, NB, D), dtype=torch.float32, device=dev)
    part_m2 = torch.empty((P, NB, D), dtype=torch.float32, device=dev)
    starts_BP, ends_BP = starts_BP.contiguous(), ends_BP.contiguous()
    if max_span is None:
        max_span = int((ends_BP - starts_BP).max())  # a device sync: the engine passes it from the host
    single = max_span <= 1
    w = w_DK.to(device=dev, dtype=torch.float32).contiguous()
    b = b_K.to(device=dev, dtype=torch.float32).contiguous()
    _gather_pool_project_kernel[(P, NB)](
        acts_BTD, starts_BP, ends_BP, w, b, out_BPD, nonfinite_BP, scores_BPK, part_n,
        part_mean, part_m2, B, P, D, K, NB, *acts_BTD.stride(), BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D,
        BLOCK_K=_block_k(K), SINGLE=single, num_warps=NUM_WARPS)
    _refit_partials_kernel[(P, NB)](acts_BTD, starts_BP, ends_BP, nonfinite_BP, part_n, part_mean, part_m2, B, P, D,
                                    NB, *acts_BTD.stride(), BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D, SINGLE=single,
                                    num_warps=4)
    merge_block = min(triton.next_power_of_2(D), 1024)
    merge_kernel[(P, triton.cdiv(D, merge_block))](part_n, part_mean, part_m2, count_P, mean_PD, m2_PD, D, NB,
                                                   BLOCK_D=merge_block)
    return Pooled(out_BPD, count_P, mean_PD, m2_PD, nonfinite_BP), scores_BPK


def aot_compile(arch: int, acts_dtype: torch.dtype, out_dtype: torch.dtype, K: int = MAX_K, single: bool = True) -> dict:
    """Both kernels compiled ahead of time for ``sm_{arch}`` with the launcher's constants:
    ``{name: {"compiled", "n_regs", "stack_bytes", "local_bytes", "shared_bytes"}}`` (``kernels/aot.py``).
    d_model is walked at run time, so one compile serves every width."""
    from .aot import compile_for

    acts, ints = _TRITON_TYPES[acts_dtype], ("B", "P", "D", "K", "NB", "stride_ab", "stride_at", "stride_ad")
    ptr = {"acts_ptr": acts, "starts_ptr": "i64", "ends_ptr": "i64", "w_ptr": "fp32", "bias_ptr": "fp32",
           "out_ptr": _TRITON_TYPES[out_dtype], "nonfinite_ptr": "i64", "scores_ptr": "fp32", "part_n_ptr": "fp32",
           "part_mean_ptr": "fp32", "part_m2_ptr": "fp32"}
    main = {**{k: "*" + v for k, v in ptr.items()}, **dict.fromkeys(ints, "i32")}
    refit = {k: main[k] for k in ("acts_ptr", "starts_ptr", "ends_ptr", "nonfinite_ptr", "part_n_ptr", "part_mean_ptr",
                                  "part_m2_ptr", "B", "P", "D", "NB", "stride_ab", "stride_at", "stride_ad")}
    blocks = {"BLOCK_R": BLOCK_R, "BLOCK_D": BLOCK_D, "SINGLE": single}
    return {"pool_project": compile_for(_gather_pool_project_kernel, main, {**blocks, "BLOCK_K": _block_k(K)}, arch,
                                        NUM_WARPS),
            "refit_partials": compile_for(_refit_partials_kernel, refit, blocks, arch, 4)}


_IMPLS = {"ref": gather_pool_project_ref,
          **({"triton": gather_pool_project_triton} if "triton" in _POOL_IMPLS else {})}


def gather_pool_project(acts_BTD: Tensor, starts_BP: Tensor, ends_BP: Tensor, out_dtype: torch.dtype, w_DK: Tensor,
                        b_K: Tensor, max_span: int | None = None) -> tuple[Pooled, Tensor]:
    """Dispatcher: Triton on CUDA, the reference elsewhere; ``UNDERTOW_GATHER_POOL=ref|triton|auto`` forces
    a choice (the same switch as ``gather_pool``)."""
    return _IMPLS[_pick_impl(acts_BTD.device)](acts_BTD, starts_BP, ends_BP, out_dtype, w_DK, b_K, max_span)
