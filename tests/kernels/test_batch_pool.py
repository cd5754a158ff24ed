"""BatchPool (every hook of a batch together) gives the same bits as one gather_pool call per hook."""

from __future__ import annotations

import importlib

import pytest
import torch

from undertow.kernels.batch_pool import BatchPool
from undertow.kernels.gather_pool import gather_pool_ref, span_index

gp = importlib.import_module("undertow.kernels.gather_pool")
bp = importlib.import_module("undertow.kernels.batch_pool")


def batch(B, T, D, P, max_len, H, acts_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    acts = [(torch.randn(B, T, D, generator=gen) * (1 + 10 * h)).to(acts_dtype) for h in range(H)]
    acts[0][B - 1, 2, 3] = float("nan")  # non-finite values in some hooks' slots only
    acts[-1][0, :, 1] = float("inf")
    starts = torch.randint(0, T, (B, P), generator=gen)
    lens = torch.randint(0, max_len + 1, (B, P), generator=gen)
    ends = torch.minimum(starts + lens, torch.full_like(starts, T))
    ends[0, 0] = starts[0, 0] + 1 if starts[0, 0] < T else T  # row 0 reads an inf in the last hook
    return acts, starts, ends, int((ends - starts).max())


def assert_bitwise(got, want_per_hook):
    for h, want in enumerate(want_per_hook):
        for name, g, w in zip(want._fields, (t[h] for t in got), want, strict=True):
            assert g.dtype == w.dtype and torch.equal(g.nan_to_num(), w.nan_to_num()), (h, name)
            assert torch.equal(g.isnan(), w.isnan()), (h, name)


@pytest.mark.parametrize("max_len", [1, 6])  # the single-token gather and the span mean
@pytest.mark.parametrize("acts_dtype,out_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                  (torch.float32, torch.float16)])
@pytest.mark.parametrize("B,H", [(1, 1), (7, 3), (33, 18)])
def test_reference_matches_one_call_per_hook_bit_for_bit(B, H, acts_dtype, out_dtype, max_len):
    acts, starts, ends, max_span = batch(B, 13, 40, 3, max_len, H, acts_dtype, seed=B + H)
    pool = BatchPool([f"h{h}" for h in reversed(range(H))], starts, ends, max_span, out_dtype, torch.device("cpu"))
    for h in range(H):  # added in forward order, listed in another: the leading axis follows the list
        pool.add(f"h{h}", acts[h])
    got = pool.finish()
    assert_bitwise(got, [gather_pool_ref(acts[h], starts, ends, out_dtype, max_span) for h in reversed(range(H))])
    assert got.nonfinite_BP.sum() > 0


def test_span_index_is_reusable_across_hooks():
    acts, starts, ends, max_span = batch(5, 11, 16, 2, 4, 2, torch.float32, seed=3)
    ix = span_index(starts, ends, max_span, 11)
    for a in acts:
        assert_bitwise(tuple(t[None] for t in gather_pool_ref(a, starts, ends, torch.float32, index=ix)),
                       [gather_pool_ref(a, starts, ends, torch.float32, max_span)])


def test_finish_before_every_hook_is_an_error():
    acts, starts, ends, max_span = batch(3, 8, 16, 1, 1, 2, torch.float32, seed=1)
    pool = BatchPool(["a", "b"], starts, ends, max_span, torch.float32, torch.device("cpu"))
    pool.add("a", acts[0])
    with pytest.raises(RuntimeError, match="missing b"):
        pool.finish()


@pytest.mark.parametrize("rows", [1, 4])  # 4 rows per program: several partials per slot merged
def test_triton_matches_one_triton_call_per_hook_bit_for_bit(rows, monkeypatch):
    from kernels_testutil import DEVICE  # skips without the interpreter or a GPU

    monkeypatch.setenv("UNDERTOW_GATHER_POOL", "triton")
    for module in (gp, bp):
        monkeypatch.setattr(module, "_rows_per_program", lambda B, P: rows)
    acts, starts, ends, max_span = batch(9, 10, 40, 3, 5, 3, torch.bfloat16, seed=rows)
    acts = [a.to(DEVICE) for a in acts]
    starts, ends = starts.to(DEVICE), ends.to(DEVICE)
    pool = BatchPool(["x", "y", "z"], starts, ends, max_span, torch.bfloat16, torch.device(DEVICE))
    assert pool.impl == "triton"
    for name, a in zip("zxy", (acts[2], acts[0], acts[1]), strict=True):
        pool.add(name, a)
    assert_bitwise(pool.finish(), [gp.gather_pool_triton(a, starts, ends, torch.bfloat16) for a in acts])
