"""The ``undertow`` command line: one ``main``, one error prefix; each command group is a module of this package."""

from __future__ import annotations

import argparse
import logging
import sys

from undertow.core.errors import UndertowError
from undertow.experiments.cli import extract as extract_cli
from undertow.experiments.cli import interview as interview_cli
from undertow.experiments.cli import models as models_cli
from undertow.experiments.cli import probe as probe_cli
from undertow.experiments.cli import prompts as prompts_cli
from undertow.experiments.cli import report as report_cli
from undertow.experiments.cli import run as run_cli
from undertow.experiments.cli import sae as sae_cli
from undertow.experiments.cli import score as score_cli
from undertow.experiments.cli import store as store_cli
from undertow.experiments.cli import study as study_cli

COMMAND_MODULES = [models_cli, prompts_cli, extract_cli, probe_cli, store_cli, study_cli, report_cli, sae_cli, run_cli, score_cli,
                   interview_cli]


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
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "takes_argv", False):
        args.argv = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
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
    except KeyboardInterrupt:
        # stores, adapters and caches are written atomically: what finished is kept, the rest is redone
        print("undertow: interrupted; completed work is kept: rerun the same command (with --resume for "
              "extract) to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
