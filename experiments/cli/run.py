"""``undertow run CONFIG [--out DIR]``: the suppression experiment (``suppression.run.run_experiment``).

    undertow run experiments/configs/run_gemma-3-270m.yaml                 # the demo size (make demo)
    undertow run experiments/configs/run_gemma-3-270m.yaml --out runs/x    # another run directory
    undertow run CONFIG --items.test_sets 6 --lora.steps 200               # any config field, as a flag
    undertow run CONFIG --cluster experiments/configs/clusters/X.yaml      # the model split over a node's GPUs
    undertow run CONFIG --dry-run [--gpu H100|H200|A100-80GB|cpu | --cluster FILE] [--json]   # the plan, no weights;
                                                                     # default: this machine (cpu without a GPU)

A killed run resumes when started again with the same config and directory: each stage (stores,
adapters, scores, probes) is cached there and only the unfinished one is redone.
"""

from __future__ import annotations

import argparse
import time

from undertow.experiments.cli.common import config_command
from undertow.experiments.report import build_report
from undertow.experiments.suppression.config import RunConfig


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help="run directory (overrides out_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--cluster", default=None, metavar="FILE",
                   help="a cluster file (experiments/configs/clusters/*.yaml) with nodes 1, ranks_per_node 1: the "
                        "model split over its gpus_per_rank devices (device_map layers|auto); with --dry-run, the plan for it")
    p.add_argument("--dry-run", action="store_true", help="plan only: items, tokens per stage, fine-tunes, adapter "
                   "bytes, time and memory per GPU (config + tokenizer, no weights; suppression.plan)")
    p.add_argument("--gpu", default=None, help="with --dry-run and no --cluster: GPU model of the estimate "
                   "(H100, H200, A100-80GB, A100-40GB, L40S) or cpu; default: this machine (cpu without a GPU)")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON instead of text")


def _fmt(x: dict | None) -> str:
    if not x:
        return "-"
    lo, hi = x["ci"]
    return f"{x['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def summary(res: dict) -> str:
    lines = [f"{'arm':28s} {'expressed S_E [95% CI]':28s} {'represented S_R [95% CI]':28s} residue [CI] p"]
    for name, a in res["arms"].items():
        r = a.get("residue")
        rtxt = f"{r['value']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}] p={r['p']:.3g}" if r else ""
        lines.append(f"{name:28s} {_fmt(a['expressed']):28s} {_fmt(a['represented']):28s} {rtxt}")
    chk = res.get("instilled_check")
    if chk:
        lines.append(f"instilled organism expressed the drive: {chk['passed']} (expression rise "
                     f"{_fmt(chk['expressed_rise'])}, represented rise {_fmt(chk['represented_rise'])})")
    return "\n".join(lines)


def run(cfg: RunConfig, args: argparse.Namespace) -> int:
    from undertow.experiments.suppression.run import run_experiment

    if args.out:
        cfg = cfg.replace(out_dir=args.out)
    t0 = time.perf_counter()
    cluster = None
    if args.cluster:
        from undertow.activations.cluster.dryrun import load_cluster

        cluster = load_cluster(args.cluster)
    if args.dry_run:
        from undertow.activations.cluster.dryrun import default_gpu
        from undertow.experiments.suppression.plan import plan_run

        plan = plan_run(cfg, args.gpu or default_gpu(), cluster)
        print(plan.to_json() if args.json else plan.text())
        return 0
    res = run_experiment(cfg, progress=not args.no_progress, cluster=cluster)
    report = build_report(cfg.out_dir)
    print(summary(res))
    print(f"wrote {cfg.out_dir}/results.json, timings.json and {report.name} ({time.perf_counter() - t0:.0f} s)")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    config_command(sub, "run", RunConfig, run, extra=_extra,
                   help="the suppression experiment: organism, arms, expressed vs represented, residue")
