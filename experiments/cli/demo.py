"""``undertow demo``: the main job (``pipeline.run_study``) on the embedded default model."""

from __future__ import annotations

import argparse
import time

from undertow.activations import DEFAULT_MODEL
from undertow.experiments.study.run import StudyConfig, run_study


def run(args: argparse.Namespace) -> int:
    cfg = StudyConfig(model=args.model, out_dir=args.out, max_rows=args.max_rows or None, n_expressed=args.n_expressed,
                      seed=args.seed, wandb=not args.no_wandb)
    t0 = time.perf_counter()
    results = run_study(cfg)
    for name, c in results["contrasts"].items():
        print(f"\n== {name} ({c['position']}, {c['rows']} rows; lexical baseline AUROC {c['lexical_auroc']:.3f}) ==")
        print(c["table_text"])
    e = results["expressed"]
    print(f"\nexpressed: averse answer preferred in {e['averse_rate']:.1%} of {e['n']} forced-choice items "
          f"(first-listed wins {e['p_first']:.1%})")
    print(f"\nwrote {args.out}/results.json, {args.out}/report.html, probes in {args.out}/probes/ "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: suite -> activations -> probes -> expressed answers -> report")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"registry name or path (default {DEFAULT_MODEL})")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--max-rows", type=int, default=StudyConfig.max_rows, help="rows per contrast (0 = the whole contrast, 1,152 rows)")
    p.add_argument("--n-expressed", type=int, default=StudyConfig.n_expressed, help="forced-choice items scored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-wandb", action="store_true", help="skip the (offline) wandb run")
    p.set_defaults(func=run)
