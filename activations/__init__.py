"""undertow.activations: open-weight models in, activations on disk out.

Four rooms, importing each other in one direction only (``models`` and ``store`` at the bottom,
``engine`` above both, ``cluster`` on top):

- ``models``: registry, offline loading, backends, hook names, device placement;
- ``engine``: rows -> rendered prompts -> hooked forward passes -> pooled activations;
- ``store``: the sharded on-disk store, its manifest, verified reads;
- ``cluster``: ranks, per-rank device maps, the dry-run planner.

The names below are the package's public API; ``ConfigError`` and ``UndertowError`` live in
``undertow.core.errors`` and are re-exported here for callers of the API.
"""

from undertow.core.errors import ConfigError, UndertowError

from .engine import (
    ExtractConfig,
    NonFiniteWarning,
    Position,
    Rendered,
    capture,
    capture_hf,
    capture_nnsight,
    capture_transformer_lens,
    extract,
    load_rows,
    parse_positions,
    render_row,
    render_rows,
)
from .errors import (
    DatasetError,
    DeviceError,
    HookError,
    ModelLoadError,
    ModelNotFoundError,
    OfflineError,
    PositionError,
    StoreError,
    StoreWriteError,
)
from .models import DEFAULT_MODEL, EMBEDDED, SITES, HookPoint, ModelHandle, ModelSpec, load_model, parse_hooks
from .store import ActivationStore, StoreView

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED", "SITES", "DeviceError", "HookError", "HookPoint", "ModelHandle",
    "ModelLoadError", "ModelNotFoundError", "ModelSpec", "OfflineError", "UndertowError", "capture",
    "capture_hf", "capture_nnsight", "capture_transformer_lens", "load_model", "parse_hooks",
    "ActivationStore", "ConfigError", "DatasetError", "ExtractConfig", "NonFiniteWarning", "Position", "PositionError",
    "Rendered", "StoreError", "StoreView", "StoreWriteError", "extract", "load_rows", "parse_positions", "render_row",
    "render_rows",
]
