"""Errors raised by the interview-script loader.

One class, ``InterviewError``: a one-line message naming the file and line,
what is wrong and the fix. It subclasses the prompt suite's base error
(``PromptSuiteError``, itself an ``UndertowError``), so the CLI prints the
message alone, without a traceback.
"""

from __future__ import annotations

from undertow.experiments.prompts.errors import PromptSuiteError


class InterviewError(PromptSuiteError):
    """An interview-script file or selection that cannot be used (the message names the fix)."""
