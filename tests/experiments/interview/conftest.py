"""Fixtures every interview test shares."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread per module, restored after: on a busy 2-core box every two-thread op waited for the
    other core (a [4, 49152] softmax took 16 ms with 2 threads, 1.5 ms with 1; test_generate ran 2 min vs ~30 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
