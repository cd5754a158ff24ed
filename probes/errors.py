"""The one exception type `undertow.probes` raises for bad inputs.

Every message is one line that says what is wrong *and* how to fix it, e.g.
``ProbeError: hook 'resid_post.7' has 3 rows with NaN/inf (rows [4, 9, 17]);
fix the extraction or pass drop_nan=True to drop those rows from every hook``.
It subclasses ``ValueError`` so callers that already catch ``ValueError`` keep
working, and the project-wide ``UndertowError`` so the CLI prints it as one line.
"""

from __future__ import annotations

from undertow.core.errors import UndertowError

__all__ = ["ProbeError", "ProbeWarning"]


class ProbeError(UndertowError, ValueError):
    """Bad input to a probe fit, sweep, metric or artifact load; the message names the fix."""


class ProbeWarning(UserWarning):
    """Something worth knowing that does not stop the run (e.g. a fold with one class)."""
