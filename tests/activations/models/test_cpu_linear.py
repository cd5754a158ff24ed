"""Linear layers through oneDNN (``activations/models/cpu_linear.py``): which layers, values, hooks, restore."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from undertow.activations.models.cpu_linear import (
    bound_onednn_caches,
    cpu_vendor,
    onednn_available,
    onednn_faster_here,
    onednn_linears,
    onednn_linears_of,
)

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN linear")


class Quantised(nn.Linear):
    """A subclass (as bitsandbytes' layers are): its own forward, never routed."""


def model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 64, bias=False), Quantised(64, 8))
    replaced = nn.Linear(8, 8)
    replaced.forward = replaced.forward  # an instance-level forward of unknown origin: left alone
    m.append(replaced)
    return m


def test_routes_plain_cpu_float32_linears_only_and_restores_them():
    m = model()
    assert onednn_linears_of(m) == [(m[0], "forward"), (m[2], "forward")]
    before = m[4].forward
    with onednn_linears(m) as n:
        assert n == 2 and "forward" in m[0].__dict__ and "forward" not in m[3].__dict__
    assert "forward" not in m[0].__dict__ and "forward" not in m[2].__dict__ and m[4].forward == before
    with onednn_linears(m, on=False) as n:
        assert n == 0 and "forward" not in m[0].__dict__
    assert onednn_linears_of(m.to(torch.bfloat16)) == []


def test_under_accelerate_hooks_the_computation_they_call_is_routed():
    from accelerate.hooks import ModelHook, add_hook_to_module

    lin, x = nn.Linear(16, 8), torch.randn(4, 16)
    calls = []

    class Count(ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            calls.append(1)
            return args, kwargs

    add_hook_to_module(lin, Count())
    own = lin._old_forward
    assert onednn_linears_of(lin) == [(lin, "_old_forward")]
    with torch.inference_mode():
        want = lin(x)
        with onednn_linears(lin), torch.profiler.profile() as prof:
            got = lin(x)
    assert len(calls) == 2 and lin._old_forward == own and "forward" in lin.__dict__
    assert "mkldnn::_linear_pointwise" in {e.name for e in prof.events()}
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_values_within_float_rounding_and_hooks_still_run():
    m, x = model(), torch.randn(3, 17, 64)
    seen = []
    m[2].register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    with torch.inference_mode():
        want = m(x)
        with onednn_linears(m):
            got = m(x)
            calls = torch.profiler.profile()
            with calls:
                m[0](x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert seen == [(3, 17, 64)] * 2
    assert {e.name for e in calls.events()} >= {"mkldnn::_linear_pointwise"}


def test_gradients_take_the_default_path():
    """The oneDNN op has no autograd formula: with gradients on, a routed layer runs aten::linear."""
    m, x = model(), torch.randn(2, 64, requires_grad=True)
    with onednn_linears(m):
        y = m[0](x)
    y.sum().backward()
    assert y.grad_fn is not None and x.grad is not None
    torch.testing.assert_close(x.grad, m[0].weight.sum(0).expand(2, -1))


GROWTH = """
import torch
import undertow.activations.models  # bounds oneDNN's caches unless the environment sets them

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

torch.set_num_threads(1)
w = torch.randn(1024, 256)
with torch.inference_mode():
    torch.ops.mkldnn._linear_pointwise(torch.randn(8, 256), w, None, "none", [], "")
    before = resident_mb()
    for rows in range(16, 1216, 4):  # 300 row counts, as packed batches give
        torch.ops.mkldnn._linear_pointwise(torch.randn(rows, 256), w, None, "none", [], "")
print(resident_mb() - before)
"""


def growth_mb(**env: str) -> float:
    clean = {k: v for k, v in os.environ.items() if "CACHE_CAPACITY" not in k}
    out = subprocess.run([sys.executable, "-c", GROWTH], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=300)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
def test_importing_undertow_bounds_onednns_shape_caches_and_the_environment_wins():
    """Each new row count cost ~0.5 MB in oneDNN's caches (300 counts: +176 MB measured); bounded, +22 MB."""
    bounded = growth_mb()
    unbounded = growth_mb(DNNL_PRIMITIVE_CACHE_CAPACITY="1024", LRU_CACHE_CAPACITY="1024")  # oneDNN's defaults
    assert unbounded > 80 and bounded < unbounded / 3, (bounded, unbounded)
    with pytest.raises(ValueError, match="at least one entry"):
        bound_onednn_caches(0)


def test_onednn_is_preferred_on_amd_processors_only(tmp_path, monkeypatch):
    from undertow.activations.models import cpu_linear

    for vendor in ("AuthenticAMD", "GenuineIntel"):
        (tmp_path / vendor).write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: 25\n")
        assert cpu_vendor(str(tmp_path / vendor)) == vendor
        monkeypatch.setattr(cpu_linear, "cpu_vendor", lambda v=vendor: v)
        assert onednn_faster_here() == (vendor == "AuthenticAMD")
    assert cpu_vendor(str(tmp_path / "absent")) is None
