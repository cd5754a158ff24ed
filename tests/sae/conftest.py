"""Fixtures for the SAE tests: the tiny random Gemma-3 model and small all_tokens stores of it."""

from __future__ import annotations

import pytest
import torch
from sae_testutil import text_rows

from undertow.activations import ExtractConfig, extract, load_model


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one intra-op thread is faster on this shared 2-core box (see tests/probes/conftest.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny(tiny_gemma_dir):
    return load_model(str(tiny_gemma_dir))


@pytest.fixture(scope="session")
def make_store(tiny, tmp_path_factory):
    """``make_store(n_rows, hooks=("resid_post.1",), positions=("all_tokens",), seed=0)`` -> ActivationStore."""
    cache = {}

    def make(n_rows: int, hooks=("resid_post.1",), positions=("all_tokens",), seed: int = 0, dtype="float32"):
        key = (n_rows, tuple(hooks), tuple(positions), seed, dtype)
        if key not in cache:
            out = tmp_path_factory.mktemp("sae-store")
            cfg = ExtractConfig(model="tiny", hooks=list(hooks), positions=list(positions), dtype=dtype,
                                out_dir=str(out), shard_size=64, batch_size=32)
            cache[key] = extract(tiny, text_rows(n_rows, seed), cfg)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def store(make_store):
    return make_store(160)
