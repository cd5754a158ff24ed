"""``undertow report RUN_DIR``: (re)build report.html from the run's results.json alone."""

from __future__ import annotations

import argparse

from undertow.experiments.report import build_report


def run(args: argparse.Namespace) -> int:
    path = build_report(args.run_dir)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild RUN_DIR/report.html from RUN_DIR/results.json (nothing is rerun)")
    p.add_argument("run_dir", help="a run directory holding results.json (e.g. runs/demo)")
    p.set_defaults(func=run)
