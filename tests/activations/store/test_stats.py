"""Chan merges of Welford moments equal the moments of the concatenated data."""

from __future__ import annotations

import torch

from undertow.activations.store.stats import Moments


def moments_of(x):
    return Moments(torch.tensor(len(x)), x.mean(0), ((x - x.mean(0)) ** 2).sum(0))


def test_merge_and_from_slots_match_direct():
    gen = torch.Generator().manual_seed(1)
    parts = [torch.randn(n, 7, generator=gen) * 3 + 5 for n in (5, 1, 12, 3)]
    acc = Moments.zeros(7)
    for p in parts:
        acc = acc.merge(moments_of(p))
    everything = torch.cat(parts)
    torch.testing.assert_close(acc.mean_D, everything.mean(0))
    torch.testing.assert_close(acc.var_D, everything.var(0, unbiased=False), rtol=1e-5, atol=1e-5)
    slots = Moments.from_slots(torch.tensor([len(p) for p in parts]), torch.stack([p.mean(0) for p in parts]),
                               torch.stack([((p - p.mean(0)) ** 2).sum(0) for p in parts]))
    torch.testing.assert_close(slots.var_D, acc.var_D, rtol=1e-5, atol=1e-5)
    assert int(slots.count) == int(acc.count) == len(everything)


def test_zero_count_is_identity():
    m = moments_of(torch.randn(4, 3))
    for merged in (m.merge(Moments.zeros(3)), Moments.zeros(3).merge(m)):
        torch.testing.assert_close(merged.mean_D, m.mean_D)
        torch.testing.assert_close(merged.m2_D, m.m2_D)
