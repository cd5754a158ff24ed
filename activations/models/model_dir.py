"""Check a local HF model directory before transformers reads it: config.json, safetensors headers, no pickles.

A ``pytorch_model.bin`` (or ``.pt``/``.pth``/``.ckpt``) is a pickle: loading
it can run code, and only torch's ``weights_only`` default stands between a
crafted file and the machine. undertow loads safetensors only
(``use_safetensors=True``) unless the caller opts in (``allow_pickle``), and
refuses a pickle-only directory with one line naming both fixes. Every
safetensors file's header is checked (``validate.safetensors_header``), so a
crafted header is one clear error, not a Rust panic.
"""

from __future__ import annotations

from pathlib import Path

from undertow.core.validate import load_json, safetensors_header

from ..errors import ModelLoadError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_FIX = "re-download or re-save the model (model.save_pretrained(dir) writes safetensors)"


def check_model_dir(path: Path, allow_pickle: bool = False) -> None:
    """``ModelLoadError`` unless ``path`` has a JSON-object config.json and readable weights it may load."""
    config = load_json(path / "config.json", ModelLoadError, _FIX)
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}/config.json must be a JSON object, got {type(config).__name__}; {_FIX}")
    index = path / "model.safetensors.index.json"
    if index.exists() and not isinstance(load_json(index, ModelLoadError, _FIX), dict):
        raise ModelLoadError(f"{index} must be a JSON object; {_FIX}")
    weights = sorted(path.glob("*.safetensors"))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if not weights and pickles and not allow_pickle:
        raise ModelLoadError(
            f"{path} has only pickle weights ({pickles[0].name}), which can run code when loaded: convert them to "
            "safetensors on a machine you trust (model.save_pretrained(dir, safe_serialization=True)), or opt in "
            "with UNDERTOW_ALLOW_PICKLE=1 (load_model(..., allow_pickle=True)) if you trust the file")
    if not weights and not pickles:
        raise ModelLoadError(f"{path} has config.json but no *.safetensors weights; {_FIX}")
    for w in weights:
        safetensors_header(w, ModelLoadError, _FIX)
