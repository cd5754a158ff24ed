"""The fused gather_pool + probe projection against its pure-torch reference (interpreter on CPU, compiled on
CUDA) and compiled ahead of time for sm_80 / sm_90 without spills."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from kernels_testutil import DEVICE, TOL  # skips the module without the interpreter

from undertow.kernels.gather_pool_project import (
    gather_pool_project,
    gather_pool_project_ref,
    gather_pool_project_triton,
)

# scores: the interpreter's dot is fp32, CUDA's TF32 (10-bit mantissa inputs)
SCORE_TOL = dict(rtol=1e-4, atol=1e-4) if DEVICE == "cpu" else dict(rtol=3e-3, atol=3e-3)


def _case(B, T, D, P, K, max_len, acts_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(B, T, D, generator=gen).to(acts_dtype)
    starts = torch.randint(0, T, (B, P), generator=gen)
    ends = torch.minimum(starts + torch.randint(0, max_len + 1, (B, P), generator=gen), torch.full_like(starts, T))
    w = torch.randn(D, K, generator=gen) / D ** 0.5
    b = torch.randn(K, generator=gen)
    return acts, starts, ends, w, b


def _assert_same(got, want, out_dtype):
    (gp, gs), (wp, ws) = got, want
    gp = type(gp)(*(t.cpu() for t in gp))
    torch.testing.assert_close(gp.out_BPD.float(), wp.out_BPD.float(), equal_nan=True, **TOL[out_dtype])
    assert gp.out_BPD.dtype == out_dtype
    assert torch.equal(gp.nonfinite_BP, wp.nonfinite_BP) and torch.equal(gp.count_P, wp.count_P)
    torch.testing.assert_close(gp.mean_PD, wp.mean_PD, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gp.m2_PD, wp.m2_PD, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gs.cpu(), ws, equal_nan=True, **SCORE_TOL)


@pytest.mark.parametrize("acts_dtype,out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.float16),
                                                  (torch.bfloat16, torch.bfloat16)])
@pytest.mark.parametrize("K", [1, 5, 64])
def test_matches_reference(acts_dtype, out_dtype, K):
    # 70 rows: two row blocks of 64; d_model 150: three d chunks of 64, a masked tail
    acts, starts, ends, w, b = _case(70, 13, 150, 3, K, 6, acts_dtype, seed=K)
    acts[2, :, 7] = float("nan")  # row 2: non-finite wherever its spans are non-empty
    acts[66, :, 140] = float("inf")  # in the second row block, last d chunk
    want = gather_pool_project_ref(acts, starts, ends, out_dtype, w, b)
    got = gather_pool_project_triton(acts.to(DEVICE), starts.to(DEVICE), ends.to(DEVICE), out_dtype, w, b)
    _assert_same(got, want, out_dtype)
    assert want[0].nonfinite_BP.sum() > 0 and (ends == starts).any()  # both cases covered
    assert torch.isnan(want[1][2]).any() and torch.isfinite(want[1][3]).all()  # only the bad row's scores


def test_healthy_block_strided_input_and_empty_spans_score_the_bias():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(9, 11, 2 * 72, generator=gen)
    acts = base[..., ::2]  # stride 2 along d_model
    starts = torch.randint(0, 11, (9, 2), generator=gen)
    ends = starts + 1
    ends[4, 1] = starts[4, 1]  # an empty span
    w, b = torch.randn(72, 16, generator=gen), torch.randn(16, generator=gen)
    want = gather_pool_project_ref(acts, starts, ends, torch.bfloat16, w, b)
    got = gather_pool_project_triton(acts.to(DEVICE), starts.to(DEVICE), ends.to(DEVICE), torch.bfloat16, w, b)
    _assert_same(got, want, torch.bfloat16)
    torch.testing.assert_close(got[1][4, 1].cpu(), b, **SCORE_TOL)


def test_bad_probe_shapes_are_refused():
    acts = torch.zeros(2, 3, 8)
    idx = torch.zeros(2, 1, dtype=torch.long)
    for w, b, match in ((torch.zeros(8, 65), torch.zeros(65), "K <= 64"), (torch.zeros(7, 2), torch.zeros(2), "d_model")):
        with pytest.raises(ValueError, match=match):
            gather_pool_project(acts, idx, idx + 1, torch.float32, w, b)


def test_dispatcher_uses_the_reference_on_cpu(monkeypatch):
    monkeypatch.delenv("UNDERTOW_GATHER_POOL", raising=False)
    acts, starts, ends, w, b = _case(5, 7, 16, 2, 3, 3, torch.float32, seed=0)
    got = gather_pool_project(acts, starts, ends, torch.float32, w, b)
    want = gather_pool_project_ref(acts, starts, ends, torch.float32, w, b)
    assert torch.equal(got[1], want[1])


AOT = """
import json, torch
from undertow.kernels.gather_pool_project import aot_compile
out = []
for arch in (80, 90):
    for acts, store in ((torch.bfloat16, torch.bfloat16), (torch.float32, torch.float16)):
        for K, single in ((16, True), (64, True), (64, False)):
            for name, k in aot_compile(arch, acts, store, K, single).items():
                out.append(dict(arch=arch, kernel=name, acts=str(acts)[6:], K=K, single=single, regs=k["n_regs"],
                                stack=k["stack_bytes"], local=k["local_bytes"], smem=k["compiled"].metadata.shared,
                                cubin=len(k["compiled"].asm["cubin"])))
print(json.dumps(out))
"""


def test_aot_compiles_for_sm80_and_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a compiler, not the interpreter
    run = subprocess.run([sys.executable, "-c", AOT], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    print("\nAOT gather_pool_project:", json.dumps(results))
    assert len(results) == 24
    for r in results:
        assert r["cubin"] > 0 and r["local"] == 0 and r["stack"] == 0, f"register spill: {r}"
        assert r["regs"] <= 255, r


@pytest.mark.gpu
def test_compiled_kernel_on_cuda_at_d4096():
    acts, starts, ends, w, b = _case(4096, 64, 4096, 2, 64, 16, torch.bfloat16, seed=1)
    want = gather_pool_project_ref(acts.cuda(), starts.cuda(), ends.cuda(), torch.bfloat16, w, b)
    want = (type(want[0])(*(t.cpu() for t in want[0])), want[1].cpu())
    got = gather_pool_project_triton(acts.cuda(), starts.cuda(), ends.cuda(), torch.bfloat16, w, b)
    _assert_same(got, want, torch.bfloat16)
