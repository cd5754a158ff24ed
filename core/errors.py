"""The error base every undertow package raises from, and the config error of the typed config mechanism.

Every error carries a one-line message that names the fix. The CLI prints the message alone (no
traceback) for ``UndertowError`` and its subclasses; each package derives its own errors from it
(``activations.errors``, ``probes.errors``, ``sae.errors``, ``experiments.*.errors``).
"""

from __future__ import annotations

__all__ = ["ConfigError", "UndertowError"]


class UndertowError(Exception):
    """Base class: a user-facing error with a one-line message naming the fix."""


class ConfigError(UndertowError):
    """A config field with a bad value, or a YAML file that does not parse into its config."""
