"""Errors raised by undertow.sae: one line each, naming the fix (the CLI prints the message alone)."""

from __future__ import annotations

from undertow.core.errors import ConfigError, UndertowError


class SAEError(UndertowError):
    """A bad SAE input: a store that does not fit the SAE, a foreign model, a broken checkpoint, a bad config."""


class CheckpointError(SAEError):
    """A checkpoint that is missing, truncated, tampered with or holds a pickle that is not plain tensors."""


class SAEConfigError(SAEError, ConfigError):
    """A bad ``SAEConfig`` value (``k`` > ``d_sae``, an unknown architecture...); carries the file:line prefix."""
