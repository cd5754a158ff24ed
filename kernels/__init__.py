"""undertow.kernels: the cache hot path, each kernel with its pure-torch reference and a dispatcher."""

import os
import sys

if __name__ == "kernels":
    # Imported as the top-level name `kernels`, not `undertow.kernels`: the repo root is on sys.path
    # (`python -m ...`, `torchrun -m ...`, a notebook started here), so this folder shadows Hugging Face's
    # `kernels` package, which transformers >= 5.25 requires and imports on `import transformers`
    # (`from kernels import CUDAProperties` then failed: CI, stop 9). Hand the name to the installed package.
    import importlib.machinery
    import importlib.util

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _others = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec("kernels", _others)
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        sys.modules["kernels"] = _module  # the import statement returns what sys.modules holds after this runs
        _spec.loader.exec_module(_module)
    else:

        def __getattr__(name: str):
            raise AttributeError(
                f"`kernels` resolved to undertow's kernels/ folder ({_root} is on sys.path) and no other "
                f"`kernels` package is installed, so it has no {name!r}; undertow's kernels are `undertow.kernels`"
            )
else:
    # Triton 3.9 warns on every compile unless TRITON_DEFAULT_FP_FUSION is set. "1" is its default behaviour
    # (fused multiply-adds) made explicit. Set here, on import, the one place: the CLI, the tests, the
    # benchmarks and a user of the Python API all import this package before any kernel compiles.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

    from .gather_pool import Pooled, gather_pool, gather_pool_ref, gather_pool_triton

    __all__ = ["Pooled", "gather_pool", "gather_pool_ref", "gather_pool_triton"]
