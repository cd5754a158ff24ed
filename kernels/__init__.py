"""undertow.kernels: the cache hot path, each kernel with its pure-torch reference and a dispatcher."""

from .gather_pool import Pooled, gather_pool, gather_pool_ref, gather_pool_triton

__all__ = ["Pooled", "gather_pool", "gather_pool_ref", "gather_pool_triton"]
