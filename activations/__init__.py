"""undertow.activations: model registry and offline loading, hook engine, activation store."""

from .capture import capture, capture_hf, capture_nnsight, capture_transformer_lens
from .errors import DeviceError, HookError, ModelLoadError, ModelNotFoundError, OfflineError, UndertowError
from .handle import ModelHandle, load_model
from .hooks import SITES, HookPoint, parse_hooks
from .registry import DEFAULT_MODEL, EMBEDDED, ModelSpec

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED", "SITES", "DeviceError", "HookError", "HookPoint", "ModelHandle",
    "ModelLoadError", "ModelNotFoundError", "ModelSpec", "OfflineError", "UndertowError", "capture",
    "capture_hf", "capture_nnsight", "capture_transformer_lens", "load_model", "parse_hooks",
]
