"""``undertow study``: the probe study (``study.run.run_study``) on the embedded default model.

Every ``StudyConfig`` field is a flag (``--max-rows 0`` keeps whole contrasts); an optional CONFIG
YAML supplies the defaults. ``undertow demo`` is the same command under its old name, kept for one release
(it says so on stderr): ``make demo`` runs the suppression experiment (``undertow run``), and two different
things called "demo" misled readers.
"""

from __future__ import annotations

import argparse
import sys
import time

from undertow.experiments.cli.common import add_row_options, config_command
from undertow.experiments.study.run import StudyConfig, run_study


def run(cfg: StudyConfig, args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    result = run_study(cfg, args.rows)
    for name, c in result.contrasts.items():
        print(f"\n== {name} ({c.position}, {c.rows} rows; lexical baseline AUROC {c.lexical_auroc:.3f}) ==")
        print(c.sweep.format_table())
        print("\n".join(c.sweep.summary_lines()))
    if result.expressed is not None:
        e = result.expressed.summary
        print(f"\nexpressed: averse answer preferred in {e.averse_rate:.1%} of {e.n} forced-choice items "
              f"(first-listed wins {e.p_first:.1%})")
    print(f"\nwrote {cfg.out_dir}/results.json, {cfg.out_dir}/report.html, probes in {cfg.out_dir}/probes/ "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def run_deprecated(cfg: StudyConfig, args: argparse.Namespace) -> int:
    print("undertow: `undertow demo` is now `undertow study` (same flags); the old name goes in the next release",
          file=sys.stderr)
    return run(cfg, args)


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    config_command(sub, "study", StudyConfig, run, config_arg="optional", extra=add_row_options,
                   help="the probe study: suite -> activations -> probes -> expressed answers -> report")
    config_command(sub, "demo", StudyConfig, run_deprecated, config_arg="optional", extra=add_row_options,
                   help="deprecated name of `undertow study` (removed in the next release)")
