"""gather_pool_ref against a per-row loop, both code paths, moments, non-finite handling, dispatch."""

from __future__ import annotations

import pytest
import torch

from undertow.kernels import gather_pool, gather_pool_ref
from undertow.kernels.gather_pool import _pick_impl


def loop_ref(acts_BTD, starts_BP, ends_BP):
    B, P = starts_BP.shape
    out = torch.zeros(B, P, acts_BTD.shape[-1], dtype=torch.float64)
    for b in range(B):
        for p in range(P):
            s, e = int(starts_BP[b, p]), int(ends_BP[b, p])
            if e > s:
                out[b, p] = acts_BTD[b, s:e].double().mean(0)
    return out


def random_spans(B, T, P, max_len, gen):
    starts = torch.randint(0, T, (B, P), generator=gen)
    lens = torch.randint(0, max_len + 1, (B, P), generator=gen)
    return starts, torch.minimum(starts + lens, torch.full_like(starts, T))


@pytest.mark.parametrize("max_span", [1, 9, None])
@pytest.mark.parametrize("out_dtype,tol", [(torch.float32, 1e-6), (torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
def test_matches_loop(max_span, out_dtype, tol):
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(5, 17, 24, generator=gen)
    starts, ends = random_spans(5, 17, 6, max_span or 12, gen)
    got = gather_pool_ref(acts, starts, ends, out_dtype, max_span)
    want = loop_ref(acts, starts, ends)
    assert got.out_BPD.dtype == out_dtype and got.out_BPD.shape == (5, 6, 24)
    torch.testing.assert_close(got.out_BPD.double(), want, rtol=tol, atol=tol)
    valid = ends > starts
    assert torch.equal(got.count_P, valid.sum(0))
    for p in range(6):
        x = want[valid[:, p], p]
        if len(x):
            torch.testing.assert_close(got.mean_PD[p].double(), x.mean(0), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(got.m2_PD[p].double(), ((x - x.mean(0)) ** 2).sum(0), rtol=1e-4, atol=1e-5)


def test_gather_and_mean_paths_agree_on_single_tokens():
    acts = torch.randn(3, 9, 8)
    starts = torch.tensor([[0, 4], [8, 2], [1, 1]])
    ends = starts + torch.tensor([[1, 1], [1, 0], [1, 1]])
    a = gather_pool_ref(acts, starts, ends, torch.float32, 1)
    b = gather_pool_ref(acts, starts, ends, torch.float32, 5)
    torch.testing.assert_close(a.out_BPD, b.out_BPD)
    assert a.out_BPD[1, 1].abs().sum() == 0  # empty span -> 0


def test_nan_outside_a_span_does_not_leak():
    acts = torch.randn(2, 10, 4)
    acts[0, 0] = float("nan")  # outside row 0's span [3, 7)
    got = gather_pool_ref(acts, torch.tensor([[3], [0]]), torch.tensor([[7], [10]]), torch.float32, 10)
    torch.testing.assert_close(got.out_BPD[0, 0], acts[0, 3:7].mean(0))
    assert got.nonfinite_BP.tolist() == [[0], [0]]


def test_nonfinite_counted_and_excluded_from_moments():
    acts = torch.randn(4, 6, 5)
    acts[2, 3, 1] = float("nan")
    acts[3, 0, :] = float("inf")
    starts = torch.tensor([[3], [3], [3], [0]])
    got = gather_pool_ref(acts, starts, starts + 1, torch.float32, 1)
    assert got.nonfinite_BP[:, 0].tolist() == [0, 0, 1, 5]
    assert int(got.count_P[0]) == 2
    torch.testing.assert_close(got.mean_PD[0], acts[:2, 3].mean(0))
    assert torch.isnan(got.out_BPD[2, 0, 1])  # stored as is, not zeroed


def test_dispatcher_env_switch(monkeypatch):
    assert _pick_impl(torch.device("cpu")) == "ref"
    monkeypatch.setenv("UNDERTOW_GATHER_POOL", "bogus")
    with pytest.raises(ValueError, match="available implementations"):
        gather_pool(torch.zeros(1, 2, 3), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), torch.float32)
    monkeypatch.setenv("UNDERTOW_GATHER_POOL", "ref")
    out = gather_pool(torch.ones(1, 2, 3), torch.zeros(1, 1, dtype=torch.long), torch.full((1, 1), 2), torch.float32)
    assert out.out_BPD.tolist() == [[[1.0, 1.0, 1.0]]]
