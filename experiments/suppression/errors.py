"""Errors of the suppression experiment: one line each, naming the fix (the CLI prints the message alone)."""

from __future__ import annotations

from undertow.core.errors import UndertowError


class ExperimentError(UndertowError):
    """A suppression-experiment config or input that cannot run as given."""
