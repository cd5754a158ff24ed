import pytest
import torch
from probes_testutil import sweep_once

from undertow.probes import make_synthetic


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The probes tests use small tensors, where 2 intra-op threads gain nothing; on a 2-core box shared with
    other jobs, OpenMP oversubscription made the same sweep 3-15x slower (0.6 s -> 9.6 s measured), so
    pin 1 thread while each test here runs and restore it after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def store():
    """Small store: 1,200 rows, embed + 5 layers x 32 dims, signal peaking at resid_post.2, 150 control rows."""
    return make_synthetic(1200, 5, 32, n_templates=60, n_themes=3, peak=2.0, n_control=150, rank=4, seed=1)


@pytest.fixture(scope="session")
def small_sweep(store):
    return sweep_once(store)
