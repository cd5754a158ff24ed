"""``load_model``: one small handle type over every backend."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch

from ..errors import DeviceError
from .backends import BACKENDS, to_nnsight, to_transformer_lens
from .hooks import HookPoint, all_hook_names, decoder_layers, parse_hooks
from .placement import check_device_map, map_main_device
from .sources import load_hf

ModelDtype = Literal["float32", "bfloat16", "float16"]
"""Dtype a model runs in: the config field type (``ExtractConfig.model_dtype``, ``RunConfig.model_dtype``);
the dry-run plans and ``resolve_dtype`` know these three."""
MODEL_DTYPES: tuple[str, ...] = get_args(ModelDtype)
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass
class ModelHandle:
    """A loaded model on one backend, with uniform hook names (see ``hooks.py``)."""

    name: str
    """What the user asked for (registry name or path)."""
    backend: str
    """``hf``, ``transformer_lens`` or ``nnsight``."""
    model: Any
    """The backend object: PreTrainedModel, HookedTransformer or nnsight LanguageModel."""
    hf_model: torch.nn.Module
    """The underlying HF model (shared by the nnsight wrapper; the source of TL's weights)."""
    tokenizer: Any
    n_layers: int
    d_model: int
    fingerprint: str
    """``sha256:<16 hex>`` over config + weights; identical across backends."""
    source: str
    """Where the weights came from."""
    device: torch.device
    dtype: torch.dtype
    extra: dict = field(default_factory=dict)

    def hook_names(self) -> list[str]:
        return all_hook_names(self.n_layers)

    def hooks(self, patterns: str | list[str]) -> list[HookPoint]:
        """Expand hook names/patterns (``resid_post.*``, ``mlp_out.4-6``) for this model."""
        return parse_hooks(patterns, self.n_layers)

    @property
    def layers(self) -> torch.nn.ModuleList:
        return decoder_layers(self.hf_model)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """Validate a dtype for a device; unsupported pairs raise ``DeviceError`` naming the fix."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise DeviceError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16")
        dtype = _DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise DeviceError(f"dtype {dtype} is not supported for models: use float32, bfloat16 or float16")
    if device.type == "cpu" and dtype == torch.float16:
        raise DeviceError("float16 is not supported on CPU (no fast fp16 kernels, inexact reductions): use float32 or bfloat16")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"bfloat16 is not supported on {torch.cuda.get_device_name(device)}: use float16 or float32")
    return dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        device = os.environ.get("UNDERTOW_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {device!r} is not a device: use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device} requested but CUDA is not available here: use device='cpu'")
    return device


def load_model(
    name_or_path: str | os.PathLike,
    backend: str = "hf",
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = None,
    allow_pickle: bool | None = None,
    device_map: dict | None = None,
) -> ModelHandle:
    """Load a registry model, local checkpoint or hub id on one backend.

    >>> h = load_model("gemma-3-270m", backend="transformer_lens")
    >>> h.n_layers, h.d_model, h.hooks("resid_post.*")[:2]

    ``allow_pickle``: also load ``pytorch_model.bin`` weights (pickles; None reads ``UNDERTOW_ALLOW_PICKLE``).
    ``device_map``: ``{module: device}`` splitting the model over several devices (``placement.py``;
    checked before anything loads); ``device`` is then the first module's.
    """
    if backend not in BACKENDS:
        raise DeviceError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if device_map is not None:
        device_map = check_device_map(device_map, backend=backend)
        device = map_main_device(device_map)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    loaded = load_hf(name_or_path, dtype, allow_pickle, device_map=device_map)
    hf_model = (loaded.hf_model if device_map else loaded.hf_model.to(device)).eval()
    cfg = hf_model.config
    model: Any = hf_model
    if backend == "transformer_lens":
        model = to_transformer_lens(hf_model, loaded.tokenizer, dtype, device)
    elif backend == "nnsight":
        model = to_nnsight(hf_model, loaded.tokenizer)
    return ModelHandle(
        name=str(name_or_path), backend=backend, model=model, hf_model=hf_model, tokenizer=loaded.tokenizer,
        n_layers=cfg.num_hidden_layers, d_model=cfg.hidden_size, fingerprint=loaded.fingerprint,
        source=loaded.source, device=device, dtype=dtype, extra={"device_map": device_map} if device_map else {},
    )


def base_model(hf_model: torch.nn.Module) -> torch.nn.Module:
    """The HF ``PreTrainedModel`` under a peft wrapper (LoRA layers are injected into its modules in
    place, so hooks on it see the adapted model); ``hf_model`` itself when it is not wrapped."""
    get = getattr(hf_model, "get_base_model", None)
    return get() if callable(get) else hf_model
