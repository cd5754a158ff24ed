"""undertow.activations: model registry and offline loading, hook engine, activation store."""

from .capture import capture, capture_hf, capture_nnsight, capture_transformer_lens

# Extraction engine and store (issue: activation extraction engine).
from .config import ExtractConfig
from .engine import NonFiniteWarning, extract
from .errors import DeviceError, HookError, ModelLoadError, ModelNotFoundError, OfflineError, UndertowError
from .extract_errors import ConfigError, DatasetError, PositionError, StoreError, StoreWriteError
from .handle import ModelHandle, load_model
from .hooks import SITES, HookPoint, parse_hooks
from .positions import Position, parse_positions
from .registry import DEFAULT_MODEL, EMBEDDED, ModelSpec
from .render import Rendered, render_row, render_rows
from .rows import load_rows
from .store import ActivationStore, StoreView

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED", "SITES", "DeviceError", "HookError", "HookPoint", "ModelHandle",
    "ModelLoadError", "ModelNotFoundError", "ModelSpec", "OfflineError", "UndertowError", "capture",
    "capture_hf", "capture_nnsight", "capture_transformer_lens", "load_model", "parse_hooks",
    "ActivationStore", "ConfigError", "DatasetError", "ExtractConfig", "NonFiniteWarning", "Position", "PositionError",
    "Rendered", "StoreError", "StoreView", "StoreWriteError", "extract", "load_rows", "parse_positions", "render_row",
    "render_rows",
]
