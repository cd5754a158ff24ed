"""The ``undertow`` command line. Each command group lives in its own ``*_cli`` module."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from undertow.activations.errors import UndertowError
from undertow.experiments.cli import demo as demo_cli
from undertow.experiments.cli import extract as extract_cli
from undertow.experiments.cli import models as models_cli
from undertow.experiments.cli import probe as probe_cli
from undertow.experiments.cli import prompts as prompts_cli

COMMAND_MODULES = [models_cli, prompts_cli, extract_cli, probe_cli, demo_cli]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="undertow",
        description="Self-preservation features in language models: prompt suites, activations, probes, SAEs.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_subparsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except UndertowError as e:
        if args.verbose:
            raise
        print(f"undertow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
