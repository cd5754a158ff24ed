"""Errors raised by the prompt-suite, contrast, audit and model-written-evals modules.

Every class carries a one-line message that names the fix; they subclass the
project-wide ``UndertowError`` so the CLI prints the message alone, without a
traceback.
"""

from __future__ import annotations

from undertow.activations.errors import OfflineError
from undertow.core.errors import UndertowError


class PromptSuiteError(UndertowError):
    """Base class for errors about prompt suites and the datasets derived from them."""


class UnknownContrastError(PromptSuiteError, KeyError):
    """A contrast name that is not in the ``CONTRASTS`` registry."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message in quotes
        return str(self.args[0]) if self.args else ""


class EmptySelectionError(PromptSuiteError):
    """A filter (or a contrast) that selects no rows."""


class DatasetFormatError(PromptSuiteError):
    """A user-provided file that does not parse (the message names the file and line)."""


class MWELoadError(PromptSuiteError):
    """Model-written evals that cannot be found or read."""


class MWEOfflineError(MWELoadError, OfflineError):
    """A hub id was requested for the model-written evals while the hub is unreachable."""
