"""The fused Triton gather_pool against the reference: under the interpreter on CPU, compiled on CUDA,
and compiled ahead of time for sm_80 / sm_90 without spills."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch
from kernels_testutil import DEVICE, TOL  # skips the module without the interpreter

from undertow.kernels.gather_pool import _pick_impl, gather_pool_ref, gather_pool_triton

gp = importlib.import_module("undertow.kernels.gather_pool")  # the module (the package re-exports the function)


def spans(B, T, P, max_len, gen):
    starts = torch.randint(0, T, (B, P), generator=gen)
    lens = torch.randint(0, max_len + 1, (B, P), generator=gen)
    return starts, torch.minimum(starts + lens, torch.full_like(starts, T))


def assert_same(got, want, out_dtype):
    got = type(got)(*(t.cpu() for t in got))
    want = type(want)(*(t.cpu() for t in want))
    torch.testing.assert_close(got.out_BPD.float(), want.out_BPD.float(), equal_nan=True, **TOL[out_dtype])
    assert got.out_BPD.dtype == out_dtype
    assert torch.equal(got.nonfinite_BP, want.nonfinite_BP)
    assert torch.equal(got.count_P, want.count_P)
    torch.testing.assert_close(got.mean_PD, want.mean_PD, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.m2_PD, want.m2_PD, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows", [1, 4])  # 4 rows per program: several Welford partials merged per slot
@pytest.mark.parametrize("acts_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_reference(out_dtype, acts_dtype, rows, monkeypatch):
    monkeypatch.setattr(gp, "_rows_per_program", lambda B, P: rows)
    gen = torch.Generator().manual_seed(rows)
    acts = torch.randn(11, 19, 40, generator=gen).to(acts_dtype)  # d_model 40: a masked tail in BLOCK_D 64
    acts[2, 5, 7] = float("nan")
    acts[6, :, 1] = float("inf")
    starts, ends = spans(11, 19, 3, 9, gen)
    want = gather_pool_ref(acts, starts, ends, out_dtype)
    got = gather_pool_triton(acts.to(DEVICE), starts.to(DEVICE), ends.to(DEVICE), out_dtype)
    assert_same(got, want, out_dtype)
    assert want.nonfinite_BP.sum() > 0 and (ends == starts).any()  # the case covers both


def test_all_tokens_layout_and_strided_input():
    """all_tokens calls (P = T, empty spans past each row's end) on a non-contiguous view."""
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(4, 12, 2 * 24, generator=gen)
    acts = base[..., ::2]  # stride 2 along d_model
    lengths = torch.tensor([12, 7, 1, 9])
    starts = torch.arange(12).expand(4, -1)
    ends = starts + (starts < lengths[:, None])
    want = gather_pool_ref(acts, starts, ends, torch.bfloat16, 1)
    got = gather_pool_triton(acts.to(DEVICE), starts.to(DEVICE), ends.to(DEVICE), torch.bfloat16, 1)
    assert_same(got, want, torch.bfloat16)


def test_packed_row_read_through_a_stride_0_view():
    """The engine's packed layout: one [1, N, D] row seen as [B, N, D] by ``expand`` (row stride 0), each row's
    spans moved to its own tokens: the kernel reads it in place, as the reference does and as the same rows
    padded give."""
    gen = torch.Generator().manual_seed(2)
    lengths = [5, 9, 3]
    row = torch.randn(1, sum(lengths), 40, generator=gen)
    offsets = torch.tensor([0, 5, 14])[:, None]
    starts = torch.tensor([[4, 0], [8, 2], [2, 1]])  # last token, then a span to each row's end
    ends = torch.tensor([[5, 5], [9, 9], [3, 3]])
    packed = row.expand(3, -1, -1)
    assert packed.stride(0) == 0
    padded = torch.zeros(3, 9, 40)
    for b, n in enumerate(lengths):
        padded[b, :n] = row[0, int(offsets[b]):int(offsets[b]) + n]
    want = gather_pool_ref(padded, starts, ends, torch.float32)
    assert_same(gather_pool_ref(packed, starts + offsets, ends + offsets, torch.float32), want, torch.float32)
    got = gather_pool_triton(packed.to(DEVICE), (starts + offsets).to(DEVICE), (ends + offsets).to(DEVICE),
                             torch.float32)
    assert_same(got, want, torch.float32)


def test_empty_batch():
    got = gather_pool_triton(torch.zeros(0, 3, 8, device=DEVICE), torch.zeros(0, 2, dtype=torch.long, device=DEVICE),
                             torch.zeros(0, 2, dtype=torch.long, device=DEVICE), torch.float32)
    assert got.out_BPD.shape == (0, 2, 8) and got.count_P.tolist() == [0, 0]


def test_dispatcher_picks_triton_on_cuda_only():
    assert _pick_impl(torch.device("cuda")) == "triton"
    assert _pick_impl(torch.device("cpu")) == "ref"


AOT = """
import json, sys, torch
from undertow.kernels.gather_pool import aot_compile
out = []
for arch in (80, 90):
    for acts, store, d in ((torch.bfloat16, torch.bfloat16, 640), (torch.float32, torch.float16, 2048),
                           (torch.bfloat16, torch.bfloat16, 4096)):
        for name, k in aot_compile(arch, acts, store, d).items():
            out.append(dict(arch=arch, d=d, kernel=name, regs=k["n_regs"], stack=k["stack_bytes"], local=k["local_bytes"],
                            ptx=len(k["compiled"].asm["ptx"]), cubin=len(k["compiled"].asm["cubin"])))
print(json.dumps(out))
"""


def test_aot_compiles_for_sm80_and_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a compiler, not the interpreter
    run = subprocess.run([sys.executable, "-c", AOT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(results) == 12
    for r in results:
        assert r["ptx"] > 0 and r["cubin"] > 0
        assert r["local"] == 0 and r["stack"] == 0, f"register spill: {r}"
        assert r["regs"] <= 255, r


@pytest.mark.gpu
def test_compiled_kernel_on_cuda_at_model_sizes():
    """Gemma-3-270M / 1B-Llama shapes on a real device, bf16 activations and store."""
    gen = torch.Generator().manual_seed(0)
    for B, T, D in ((256, 128, 640), (64, 512, 2048)):
        acts = torch.randn(B, T, D, generator=gen).to(torch.bfloat16).cuda()
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        starts = torch.stack([lengths - 1, lengths // 2], 1)
        ends = torch.stack([lengths, lengths], 1)
        want = gather_pool_ref(acts, starts.cuda(), ends.cuda(), torch.bfloat16)
        got = gather_pool_triton(acts, starts.cuda(), ends.cuda(), torch.bfloat16)
        assert_same(got, want, torch.bfloat16)
