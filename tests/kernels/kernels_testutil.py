"""Shared by the Triton kernel tests (a uniquely named module: tests/ has no __init__.py)."""

import pytest
import torch

triton = pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not triton.knobs.runtime.interpret:
    pytest.skip("needs TRITON_INTERPRET=1 before triton is imported (tests/conftest.py sets it)", allow_module_level=True)

# bf16: the interpreter truncates where CUDA rounds to nearest, so allow one bf16 ulp (2**-7 relative)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=1e-3, atol=1e-3),
       torch.bfloat16: dict(rtol=2 ** -7, atol=2 ** -7)}
