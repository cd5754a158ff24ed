"""Ahead-of-time compilation of Triton kernels for a CUDA architecture, on a machine without a GPU.

``triton.compile`` with a ``GPUTarget`` runs the whole pipeline (ttir -> ttgir
-> llir -> ptx -> cubin) with the ptxas the wheel ships, so CI on a CPU box
checks that every kernel compiles for sm_80 and sm_90 and does not spill.
Register and spill counts come from the cubin through the wheel's
``cuobjdump -res-usage``: a loaded CUDA kernel reports them too, but loading
needs a GPU, and the bundled ``ptxas -v`` (8.8) refuses the PTX 9.4 that
Triton 3.9 emits for sm_90a. Import triton without ``TRITON_INTERPRET``
(the interpreter replaces ``triton.jit`` functions): tests call this in a
subprocess.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path


def compile_for(kernel, signature: dict[str, str], constexprs: dict[str, int], arch: int, num_warps: int) -> dict:
    """Compile ``kernel`` (a ``triton.jit`` function) for ``sm_{arch}``.

    ``signature`` maps runtime arguments to Triton types (``*bf16``, ``i32``...); ``constexprs`` gives the
    compile-time ones. Returns ``{"compiled", "n_regs", "stack_bytes", "local_bytes", "shared_bytes"}``;
    spilled registers show as stack and local bytes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)
    source = ASTSource(fn, {**signature, **{k: "constexpr" for k in constexprs}}, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    return {"compiled": compiled, **cubin_usage(compiled.asm["cubin"])}


def cubin_usage(cubin: bytes) -> dict[str, int]:
    """Registers, stack, local and shared bytes of the (single) function in ``cubin``."""
    import triton

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        out = subprocess.run([str(cuobjdump), "-res-usage", str(path)], capture_output=True, text=True,
                             check=True).stdout
    usage = dict(re.findall(r"(REG|STACK|LOCAL|SHARED):(\d+)", out))
    return {"n_regs": int(usage["REG"]), "stack_bytes": int(usage["STACK"]), "local_bytes": int(usage["LOCAL"]),
            "shared_bytes": int(usage["SHARED"])}
