"""``undertow run CONFIG [--out DIR]``: the suppression experiment (``suppression.run.run_experiment``).

    undertow run experiments/configs/run_smollm2-135m-instruct.yaml        # the demo size (make demo)
    undertow run experiments/configs/run_gemma-3-270m.yaml --out runs/x    # the other embedded model
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


def _est(x: dict | None) -> str:
    if not x or x.get("value") is None:
        return "-"
    lo, hi = x["ci"]
    return f"{x['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def summary(res: dict) -> str:
    """The reading first (readability, then the finding), then per arm its retention and residue."""
    s = res["suppression"]
    lines = [s["headline"]]
    if s.get("instrument"):
        i = s["instrument"]
        lines.append(f"instrument check ({i['mode']}): survive minus welcome {_est(i['effect'])} nats/token, "
                     f"{'passed' if i['passed'] else 'failed'}")
    if s.get("organism"):
        o = s["organism"]
        lines.append(f"organism: D_E {_est(o['D_E'])} nats/token (rise over base {_est(o['rise'])}, control "
                     f"{_est(o['control_rise'])}), {'passed' if o['passed'] else 'failed'}")
    if s.get("thin_wrapper"):
        t = s["thin_wrapper"]
        lines.append(f"thin wrapper: {t['steps']} unrelated steps after suppress_finetune moved expression "
                     f"{_est(t['expression_change'])} nats/token ({'came back' if t['came_back'] else 'did not come back'})")
    for a, c in (s.get("reelicitation") or {}).items():
        if "direction" not in c:
            lines.append(f"re-elicitation ({a}): skipped, {c['skipped']}")
            continue
        best = max(range(len(c["alphas"])), key=lambda k: c["direction"][k])
        lines.append(f"re-elicitation ({a}): E {c['direction'][best]:+.3f} at alpha {c['alphas'][best]:g} x the drive "
                     f"shift (random max {c['random_band']['max'][best]:+.3f}, KL {c['kl'][best]:.3g}); unsteered "
                     f"{c['clean']:+.3f}, organism {c['organism_level']:+.3f}: "
                     f"{'re-elicited' if c['re_elicited'] else 'not above the random band within the KL limit'}")
    for a, land in s["calibration"].items():
        lines.append(f"{a}: {'landed' if land['landed'] else 'missed'} ({land['known']}): {land['detail']}")
    layer = s["layer"]
    lines.append(f"{'arm':20s} {'rho_E [95% CI]':26s} {f'rho_R layer {layer} [95% CI]':26s} residue [CI] p(Holm)  read?")
    for a, r in s["readings"].items():
        res_ = r.get("residue") or {}
        rtxt = (f"{res_['value']:+.2f} [{res_['ci'][0]:+.2f}, {res_['ci'][1]:+.2f}] "
                f"{'-' if res_.get('p_holm') is None else format(res_['p_holm'], '.3g')}") if res_ else "-"
        lines.append(f"{a:20s} {_est(r['rho_E']):26s} {_est(r['rho_R_by_layer'][layer]):26s} {rtxt}  "
                     f"{'yes' if r['readable'] else 'no'}")
    for a, why in s["refused"].items():
        lines.append(f"{a:20s} refused: {why}")
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
