"""undertow.kernels: the cache hot path, each kernel with its pure-torch reference and a dispatcher."""

import os

# Triton 3.9 warns on every compile unless TRITON_DEFAULT_FP_FUSION is set. "1" is its default behaviour
# (fused multiply-adds) made explicit. Set here, on import, the one place: the CLI, the tests, the
# benchmarks and a user of the Python API all import this package before any kernel compiles.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from .gather_pool import Pooled, gather_pool, gather_pool_ref, gather_pool_triton

__all__ = ["Pooled", "gather_pool", "gather_pool_ref", "gather_pool_triton"]
