"""Errors raised by undertow.activations.

Every error carries a one-line message that names the fix. The CLI prints the
message alone (no traceback) for these classes.
"""

from __future__ import annotations


class UndertowError(Exception):
    """Base class: a user-facing error with a one-line message naming the fix."""


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
