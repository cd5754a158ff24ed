from __future__ import annotations

import pytest
import torch

from undertow.kernels.probe_project import probe_project, probe_project_ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_probe_project_matches_float64(dtype):
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(37, 64, generator=g).to(dtype)
    w, b = torch.randn(64, 3, generator=g), torch.randn(3, generator=g)
    expected = acts.double() @ w.double() + b.double()
    out = probe_project(acts, w, b)
    assert out.dtype == torch.float32 and out.shape == (37, 3)
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out, probe_project_ref(acts, w, b))


def test_probe_project_rejects_mismatched_width():
    with pytest.raises(ValueError, match="d_model 64"):
        probe_project(torch.zeros(2, 64), torch.zeros(32, 1), torch.zeros(1))
