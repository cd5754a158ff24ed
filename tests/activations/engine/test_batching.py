"""Bucketed batches: a partition, within budget, longest first, little padding; right padding."""

from __future__ import annotations

import random

import torch

from undertow.activations.engine.batching import bucket_batches, pad_right, padding_fraction


def test_partition_budget_and_order():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(300)]
    batches = bucket_batches(lengths, batch_size=16, token_budget=1024)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(300))
    for b in batches:
        assert len(b) <= 16
        assert len(b) * max(lengths[i] for i in b) <= 1024 or len(b) == 1
    assert lengths[batches[0][0]] == max(lengths)
    assert padding_fraction(lengths, batches) < 0.05
    assert batches == bucket_batches(lengths, 16, 1024)  # deterministic


def test_row_longer_than_budget_runs_alone():
    assert bucket_batches([50, 3, 3], batch_size=8, token_budget=10) == [[0], [1, 2]]


def test_pad_right():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
