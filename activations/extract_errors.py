"""Errors raised by the extraction engine and the activation store.

Each carries a one-line message that names the fix (see ``errors.py``); they
live beside it rather than in it so the engine can grow without touching the
loader's module.
"""

from __future__ import annotations

from .errors import UndertowError


class ConfigError(UndertowError):
    """An ``ExtractConfig`` field with a bad value, or a YAML file that does not parse into one."""


class PositionError(UndertowError):
    """A position spec that does not parse, or that falls outside a row's tokens."""


class DatasetError(UndertowError):
    """An empty dataset, or a row without the text fields extraction needs."""


class StoreError(UndertowError):
    """A store that cannot be opened, resumed into or overwritten as asked."""


class StoreWriteError(StoreError):
    """A write that failed (unwritable directory, disk full); the store stays resumable."""
