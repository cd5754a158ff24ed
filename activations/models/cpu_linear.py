"""A model's linear layers through oneDNN on the CPU, for inference.

PyTorch's CPU ``aten::linear`` on float32 calls MKL's sgemm. On AMD EPYC processors (the machines this project is
developed on) MKL runs far below what the same cores do through oneDNN, which PyTorch also ships (as
``torch.ops.mkldnn._linear_pointwise``, the op ``torch.compile``'s CPU backend emits for linear layers).
Measured (torch 2.13, AMD EPYC with AVX-512, 2 threads, float32, x ``[1336, k]`` times Gemma-3-270M's
weight shapes): 640->2048 17.2 vs 7.4 ms, 640->1024 8.2 vs 3.6, 640->256 2.0 vs 0.9, 1024->640 8.0 vs 3.6,
2048->640 16.3 vs 7.5 (MKL vs oneDNN, 2.2x each); the Gemma-3-270M body over the 256 unique lm-survival-instinct
rows ran 1.63-1.80x faster with every decoder linear through oneDNN, its last hidden states within 3.1e-6
relative (2-norm) of MKL's: float rounding of another summation order. On an Intel Xeon (2.80 GHz, AVX-512) MKL
is the faster: 640->2048 15.9-17.5 ms vs oneDNN's 19.2-20.5 (``onednn_faster_here``).

``onednn_linears(model)`` routes every plain ``nn.Linear`` of ``model`` (not a subclass: quantised layers keep
theirs; under accelerate's device-map hooks, the ``_old_forward`` they call; not one whose ``forward`` something
else replaced) through that op while the block runs, and only where no gradient is needed (the op has no autograd formula): under
``torch.inference_mode`` or ``no_grad``, as the extraction engine runs. Forward hooks on those layers still run.

oneDNN keeps each shape it has run in two caches (its own primitive cache and ideep's, 1,024 entries each), about
0.5 MB an entry (measured: a 256->1024 layer at 300 distinct row counts grew the resident set by 176 MB). Packed
batches give nearly every batch another row count, so through a long extraction the process crept: Gemma-3-270M,
all 18 layers, stance rows, peak RSS 1,825 MB at 512 rows vs 2,100 MB at 4,096 (1.15x). With both caches at 16
entries the same micro-benchmark grew 22 MB, and re-creating a primitive instead of finding it cost no measurable
time (60 batches of Gemma's seven projections, 4.3-5.0 s either way). Importing this module bounds both
(``bound_onednn_caches``) unless the environment already sets them; both are read once, when oneDNN makes its
first primitive, so the bound holds where undertow is imported before any oneDNN op ran.
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from undertow.core.provenance import cpuinfo_field

from ..errors import DeviceError

ONEDNN_CACHE_ENTRIES = 16
"""Entries kept in each of oneDNN's two shape caches (``bound_onednn_caches``): a packed batch runs about five
distinct linear shapes, so 16 keeps the current batch's and the next's."""
_CACHE_VARIABLES = (("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"), ("LRU_CACHE_CAPACITY",))
"""Environment variables of oneDNN's primitive cache (either spelling) and of ideep's cache, which PyTorch links."""


def bound_onednn_caches(entries: int = ONEDNN_CACHE_ENTRIES) -> None:
    """Bound oneDNN's two shape caches to ``entries`` each, where the environment does not set them (its setting
    wins). ``entries`` >= 1: ideep crashes with an empty cache."""
    if entries < 1:
        raise ValueError(f"entries={entries}: oneDNN's caches need at least one entry")
    for names in _CACHE_VARIABLES:
        if not any(n in os.environ for n in names):
            os.environ[names[0]] = str(entries)


bound_onednn_caches()

ONEDNN_DTYPES = (torch.float32,)
"""Model dtypes routed through oneDNN (bfloat16 already reaches it through ``aten::linear``)."""


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The processor's vendor as Linux names it (``vendor_id`` in ``cpuinfo``: ``AuthenticAMD``,
    ``GenuineIntel``); None where the file or the line is absent."""
    return cpuinfo_field("vendor_id", cpuinfo)


def onednn_faster_here() -> bool:
    """Whether oneDNN's linear beats MKL's sgemm on this processor: on AMD's. MKL takes its generic code paths on
    processors Intel did not make. Measured, x ``[1336, 640]`` times a ``[2048, 640]`` weight, float32, 2 threads:
    AMD EPYC (AVX-512) MKL 17.2 ms, oneDNN 7.4 ms; Intel Xeon at 2.80 GHz (AVX-512) MKL 15.9-17.5 ms, oneDNN
    19.2-20.5 ms."""
    return cpu_vendor() == "AuthenticAMD"


def onednn_available() -> bool:
    """Whether this torch build has oneDNN and its linear op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() or x.device.type != "cpu":
        return F.linear(x, self.weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


def _slot(m: nn.Linear) -> str | None:
    """The attribute that holds ``m``'s own computation: ``forward``, or ``_old_forward`` under accelerate's
    hooks (device maps, disk offload: its ``forward`` moves the weights in, then calls ``_old_forward``); None
    where something else replaced ``forward``."""
    if "forward" not in m.__dict__:
        return "forward"
    return "_old_forward" if "_old_forward" in m.__dict__ and hasattr(m, "_hf_hook") else None


def onednn_linears_of(model: nn.Module) -> list[tuple[nn.Linear, str]]:
    """(layer, attribute) of the linear layers ``onednn_linears`` routes: plain ``nn.Linear`` in a routed dtype
    whose weights are on the CPU (or offloaded, moved to the CPU by accelerate's hook at each call) and whose
    computation sits in its own ``forward`` or accelerate's ``_old_forward``."""
    return [(m, slot) for m in model.modules() if type(m) is nn.Linear and m.weight.dtype in ONEDNN_DTYPES
            and (slot := _slot(m)) is not None
            and (m.weight.device.type == "cpu" or (slot == "_old_forward" and m.weight.device.type == "meta"))]


@contextlib.contextmanager
def onednn_linears(model: nn.Module, on: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s plain CPU linear layers run through oneDNN when no gradient is needed (``on``;
    off: nothing changes); yields how many were routed. Their own computation comes back on exit, also on an
    error."""
    if not on:
        yield 0
        return
    if not onednn_available():
        raise DeviceError("this torch build has no oneDNN linear (torch.ops.mkldnn._linear_pointwise): use "
                          "cpu_linear: aten")
    routed = [(m, slot, m.__dict__.get(slot)) for m, slot in onednn_linears_of(model)]
    for m, slot, _ in routed:
        setattr(m, slot, types.MethodType(_forward, m))
    try:
        yield len(routed)
    finally:
        for m, slot, before in routed:
            if before is None:
                m.__dict__.pop(slot, None)
            else:
                setattr(m, slot, before)
