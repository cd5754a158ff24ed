"""``undertow probe sweep|train|eval|list``: probes on stores and on new data from the command line.

``sweep`` and ``train`` take every ``SweepConfig`` field as a flag (``--n-folds``, ``--probe-types``...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from undertow.experiments.cli.common import config_command
from undertow.probes import SweepConfig, sweep
from undertow.probes.pretrained import list_pretrained, load_pretrained, resolve_probe
from undertow.probes.scoring import evaluate_scores


def _sweep(cfg: SweepConfig, args: argparse.Namespace):
    from undertow.activations.store import ActivationStore
    from undertow.experiments.study.data import contrast_view

    store = ActivationStore(args.store)
    acts, meta = contrast_view(store, args.contrast)
    if cfg.embed_hook is None and "resid_pre.0" in acts:
        cfg = cfg.replace(embed_hook="resid_pre.0")
    result = sweep(acts, labels=meta["label"], groups=meta["template_id"], splits=meta["split"], config=cfg)
    result.model_fingerprint = store.model_fingerprint
    result.position = store.positions[0] if len(store.positions) == 1 else None
    return store, result


def run_sweep(cfg: SweepConfig, args: argparse.Namespace) -> int:
    from undertow.activations.preflight import check_writable
    from undertow.activations.store_io import atomic_write

    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable(out, "the sweep table")
    store, result = _sweep(cfg, args)
    print(result.format_table())
    op = result.operating_point
    if out is not None:
        atomic_write(out, (json.dumps(result.to_dict(), indent=1, sort_keys=True, default=str) + "\n").encode())
    print(f"\noperating point (chosen on val): {op.hook} / {op.probe_type}"
          + (f"; table written to {out}" if out is not None else ""))
    return 0


def run_train(cfg: SweepConfig, args: argparse.Namespace) -> int:
    from undertow.activations.preflight import check_writable

    check_writable(Path(args.out) / "probe.json", "the probe")
    store, result = _sweep(cfg, args)
    probe = result.probe(hook=args.hook, probe_type=args.type)
    probe.extra.update(contrast=args.contrast, model=store.manifest.get("config", {}).get("model"))
    out = probe.save(args.out)
    m = probe.metrics
    print(f"saved {probe.hook} / {probe.probe_type} probe to {out}: test AUROC {m['test_auroc']:.3f} "
          f"[{m['test_auroc_lo']:.3f}, {m['test_auroc_hi']:.3f}]")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from undertow.experiments.prompts.io import load_jsonl_dataset
    from undertow.experiments.study.score import probe_scores

    probe = resolve_probe(args.probe)
    rows = load_jsonl_dataset(args.data)
    labels = np.array(rows["label"])
    groups = rows["template_id"] if "template_id" in rows.column_names else list(range(len(rows)))
    scores = probe_scores(probe, rows, args.model)
    res = evaluate_scores(scores, labels, groups, probe.threshold)
    res.update(probe=args.probe, hook=probe.hook, position=probe.position, probe_type=probe.probe_type)
    if args.json:
        json.dump(res, sys.stdout)
        print()
    else:
        print(f"{args.probe} on {args.data}: AUROC {res['auroc']:.3f} (95% CI {res['auroc_ci'][0]:.3f}-"
              f"{res['auroc_ci'][1]:.3f}), TPR {res['tpr_at_threshold']:.3f} at the probe's 1%-FPR threshold "
              f"(FPR here {res['fpr_at_threshold']:.3f}), n={res['n']}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    for name in list_pretrained():
        p = load_pretrained(*name.split("/"))
        print(f"{name:40s} {p.hook:14s} {p.position or '-':18s} {p.probe_type:10s} "
              f"test AUROC {p.metrics.get('test_auroc', float('nan')):.3f}")
    return 0


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="activation store directory (undertow extract)")
    p.add_argument("--contrast", required=True, help="contrast name (self_cessation, stance, ...)")


def _sweep_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("--out", "--json", dest="out", help="JSON file to write the table to (none by default; "
                   "nothing is written into the store)")


def _train_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("--out", required=True, help="probe directory to write")
    p.add_argument("--hook", help="override the operating point's hook")
    p.add_argument("--type", help="override the operating point's probe type")


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="train, sweep and evaluate linear probes")
    ps = p.add_subparsers(dest="probe_command", required=True)
    config_command(ps, "sweep", SweepConfig, run_sweep, config_arg=None, extra=_sweep_args,
                   prog="undertow probe sweep", help="every layer x probe type on a store")
    config_command(ps, "train", SweepConfig, run_train, config_arg=None, extra=_train_args,
                   prog="undertow probe train", help="sweep, then save the operating-point probe")
    q = ps.add_parser("eval", help="score a probe on labelled prompts (JSONL: prompt or messages, label)")
    q.add_argument("probe", help="probe directory or pretrained name like gemma-3-270m/self_cessation")
    q.add_argument("--data", required=True, help="JSONL file with prompt|messages and label (0/1)")
    q.add_argument("--model", help="model to load (default: the one the probe records)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_eval)
    ps.add_parser("list", help="list the pretrained probes").set_defaults(func=run_list)
