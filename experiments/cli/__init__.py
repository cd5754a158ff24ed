"""The ``undertow`` command line: one ``main``, one module per command group, no library logic."""

from undertow.experiments.cli.app import main

__all__ = ["main"]
