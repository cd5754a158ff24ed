"""The repo root on sys.path (`python -m` from a checkout) must not hide Hugging Face's `kernels` package.

transformers >= 5.25 depends on `kernels` and imports it on `import transformers`; with the checkout's
`kernels/` folder first on sys.path every model load failed (CI, stop 9: five subprocess tests).
"""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    # `-c` puts the working directory (the repo root) first on sys.path, as `python -m` and `torchrun -m` do
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_top_level_kernels_is_the_installed_package_when_there_is_one():
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("no third-party `kernels` distribution installed")
    run = _run("import kernels, transformers, undertow.kernels as u; print(kernels.__file__); print(u.__file__)")
    assert run.returncode == 0, run.stderr[-2000:]
    theirs, ours = run.stdout.split()
    assert Path(theirs).parent != ROOT / "kernels"
    assert Path(ours).parent == ROOT / "kernels"


def test_without_another_kernels_package_the_shadow_says_where_undertows_kernels_are():
    run = _run(
        "import sys; sys.path = [p for p in sys.path if 'site-packages' not in p]\n"
        "import kernels\n"
        "assert getattr(kernels, '__version__', 'N/A') == 'N/A'\n"
        "kernels.CUDAProperties\n"
    )
    assert run.returncode != 0
    assert "undertow.kernels" in run.stderr.splitlines()[-1]
