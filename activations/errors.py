"""Errors raised by undertow.activations: model loading, hooks, devices, positions, rows and the store.

Every error carries a one-line message that names the fix (``undertow.core.errors.UndertowError``); the
CLI prints the message alone (no traceback) for these classes.
"""

from __future__ import annotations

from undertow.core.errors import UndertowError

__all__ = [
    "DatasetError", "DeviceError", "HookError", "ModelLoadError", "ModelNotFoundError", "OfflineError",
    "PositionError", "StoreError", "StoreWriteError",
]


class ModelNotFoundError(UndertowError):
    """An unknown model name, a missing local path, or an uninstalled model package."""


class ModelLoadError(UndertowError):
    """A model file that exists but cannot be read (corrupt or truncated weights)."""


class OfflineError(UndertowError):
    """A hub id was requested while the Hugging Face hub is unreachable."""


class HookError(UndertowError):
    """A hook name that does not exist, or a layer index out of range."""


class DeviceError(UndertowError):
    """A device or dtype the machine cannot run."""


class PositionError(UndertowError):
    """A position spec that does not parse, or that falls outside a row's tokens."""


class DatasetError(UndertowError):
    """An empty dataset, or a row without the text fields extraction needs."""


class StoreError(UndertowError):
    """A store that cannot be opened, resumed into or overwritten as asked."""


class StoreWriteError(StoreError):
    """A write that failed (unwritable directory, disk full); the store stays resumable."""
