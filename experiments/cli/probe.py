"""``undertow probe sweep|train|evals|eval|list``: probes on stores and on new data from the command line.

``sweep`` and ``train`` take every ``SweepConfig`` field as a flag (``--n-folds``, ``--probe-types``...).
Scored away from the templates (issue 10)::

    undertow probe evals runs/acts/stance --contrast stance --out runs/evals/stance [--mwe-source DIR]
    undertow probe sweep runs/acts/stance --contrast stance --evals runs/evals/stance
    # or explicitly: --eval runs/evals/stance/independent --eval mwe=DIR --calibration runs/evals/stance/control_chat

``evals`` extracts the independent set, the model-written evals' answers (``stance``, with
``--mwe-source``) and the control chat set with the store's model, hooks and position; the sweep then
reports each set's AUROC with its CI, sets thresholds at ``--target-fpr`` on the control chat set and
flags an operating point below chance or below the lexical baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from undertow.experiments.cli.common import RowParser, add_row_options, config_command
from undertow.probes import SweepConfig, sweep
from undertow.probes.external import SELECT_RULES
from undertow.probes.external import flag as flag_of
from undertow.probes.pretrained import list_pretrained, load_pretrained, resolve_probe
from undertow.probes.result import against_line
from undertow.probes.scoring import auroc_text, evaluate_scores


def _sweep(cfg: SweepConfig, args: argparse.Namespace):
    from undertow.activations.store.reader import ActivationStore
    from undertow.experiments.study.data import contrast_view

    store = ActivationStore(args.store)
    evaluations, calibration = _external(args, store)  # bad evaluation inputs fail before the activations load
    acts, meta = contrast_view(store, args.contrast)
    if cfg.embed_hook is None and "resid_pre.0" in acts:
        cfg = cfg.replace(embed_hook="resid_pre.0")
    result = sweep(acts, labels=meta["label"], groups=meta["template_id"], splits=meta["split"], config=cfg,
                   evaluations=evaluations, calibration=calibration, select_rule=args.select_rule)
    result.model_fingerprint = store.model_fingerprint
    result.position = store.positions[0] if len(store.positions) == 1 else None
    return store, result


def _external(args: argparse.Namespace, store):
    """The ``--eval`` / ``--calibration`` / ``--evals`` stores as EvalSets and a CalibrationSet."""
    from undertow.experiments.study.evals import (
        evaluation_specs,
        open_calibration,
        open_evaluation,
        parse_eval_spec,
    )

    specs, cal = list(args.eval or []), args.calibration
    if args.evals:
        more, found = evaluation_specs(args.evals)
        specs += more
        cal = cal or found
    position = store.positions[0] if len(store.positions) == 1 else None
    fp = store.model_fingerprint
    evaluations = []
    for spec in specs:
        name, path = parse_eval_spec(spec)
        evaluations.append(open_evaluation(path, args.contrast, fp, position, name=name))
    return evaluations, None if cal is None else open_calibration(cal, fp, position)


def run_sweep(cfg: SweepConfig, args: argparse.Namespace) -> int:
    from undertow.activations.store.preflight import check_writable
    from undertow.core.fileio import atomic_write

    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable(out, "the sweep table")
    store, result = _sweep(cfg, args)
    print(result.format_table())
    if out is not None:
        atomic_write(out, (json.dumps(result.to_dict(), indent=1, sort_keys=True, default=str) + "\n").encode())
    print("\n" + "\n".join(result.summary_lines()))
    if out is not None:
        print(f"table written to {out}")
    return 0


def run_train(cfg: SweepConfig, args: argparse.Namespace) -> int:
    from undertow.activations.store.preflight import check_writable

    check_writable(Path(args.out) / "probe.json", "the probe")
    store, result = _sweep(cfg, args)
    probe = result.probe(hook=args.hook, probe_type=args.type)
    probe.extra.update(contrast=args.contrast, model=store.manifest.get("config", {}).get("model"))
    out = probe.save(args.out)
    row = result.row(probe.hook, probe.probe_type)
    print(f"saved {probe.hook} / {probe.probe_type} probe to {out}: AUROC in-template test {result.auroc_text(row)}"
          + "".join(f"; {n} {result.auroc_text(row, n)}" for n in result.evaluations))
    for f in probe.extra["flags"]:
        print(f"  !! FLAG: {f}")
    return 0


def run_evals(args: argparse.Namespace) -> int:
    from undertow.core.progress import Bar
    from undertow.experiments.study.evals import extract_like

    stores = extract_like(args.store, args.contrast, args.out, model=args.model, mwe_source=args.mwe_source,
                          max_rows=args.max_rows, max_control_rows=args.max_control_rows, seed=args.seed,
                          progress=None if args.no_progress else lambda: Bar(enabled=True), options=args.rows)
    for name, st in stores.items():
        print(f"{name}: {len(st)} rows at {st.path}")
    print(f"next: undertow probe sweep {args.store} --contrast {args.contrast} --evals {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from undertow.experiments.prompts.io import load_jsonl_dataset
    from undertow.experiments.study.evals import calibrate_probe, check_probe_calibration
    from undertow.experiments.study.score import probe_scores
    from undertow.probes.external import check_labels

    probe = resolve_probe(args.probe)
    if args.calibration is not None:  # verified and used (threshold set on it), before the model loads
        threshold, threshold_note = calibrate_probe(probe, args.calibration)
    else:
        threshold, threshold_note = probe.threshold, check_probe_calibration(probe)
    rows = load_jsonl_dataset(args.data)
    labels = np.array(rows["label"])
    check_labels(args.data, labels)
    groups = rows["template_id"] if "template_id" in rows.column_names else list(range(len(rows)))
    scores = probe_scores(probe, rows, args.model, options=args.rows)
    res = evaluate_scores(scores, labels, groups, threshold, where=args.data)
    res.update(probe=args.probe, hook=probe.hook, position=probe.position, probe_type=probe.probe_type,
               threshold_source=threshold_note)
    if args.json:
        json.dump(res, sys.stdout)
        print()
    else:
        rates = (f"TPR {res['tpr_at_threshold']:.3f} at threshold {threshold:.4g} (FPR here "
                 f"{res['fpr_at_threshold']:.3f}; {threshold_note})" if res["reason"] is None else threshold_note)
        print(f"{args.probe} on {args.data}: {auroc_text(res)}, {rates}, n={res['n']} "
              f"({res['n_pos']} positive, {res['n_neg']} negative)")
    return 0


def _num(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def _recorded_auroc(probe, name: str) -> str:
    """``0.569 [0.520, 0.612]`` of the AUROC ``probe.json`` records for ``test`` or an evaluation set, then its flag
    ("!! below its lexical line 0.540", "!! below chance") or, where the set has a lexical line and no flag,
    whether the CI clears it; or why the figure is not readable."""
    m, extra = probe.metrics, probe.extra or {}
    if name in (extra.get("unreadable") or {}):
        return extra["unreadable"][name]["reason"]
    lo, hi = m.get(name + "_auroc_lo"), m.get(name + "_auroc_hi")
    ci = f"{_num(m.get(name + '_auroc'))} [{_num(lo)}, {_num(hi)}]"
    if name == "test":  # the in-template test set's line (``extra.lexical_auroc``; older probes have none)
        lexical = extra.get("lexical_auroc")
        value = m.get("test_auroc")
        recorded = flag_of(value, lexical) if isinstance(value, float) and value == value else ""
    else:
        lexical = (extra.get("evaluation_lexical_auroc") or {}).get(name)
        recorded = m.get(name + "_flag") or ""
    flag = {"below_chance": "below chance", "below_lexical": f"below its lexical line {_num(lexical)}"}.get(recorded)
    return f"{ci} !! {flag}" if flag else ci + against_line(m.get(name + "_auroc"), lo, lexical)


def run_list(args: argparse.Namespace) -> int:
    """Each shipped probe with the AUROCs its probe.json records and, beside each, its flag (as the README's table)."""
    for name in list_pretrained():
        p = load_pretrained(*name.split("/"))
        sets = list((p.extra or {}).get("evaluation_lexical_auroc") or {})
        aurocs = "; ".join(f"{n} {_recorded_auroc(p, n)}" for n in sets)
        print(f"{name:40s} {p.hook:14s} {p.position or '-':18s} {p.probe_type:10s} "
              f"AUROC in-template test {_recorded_auroc(p, 'test')}" + (f"; {aurocs}" if aurocs else ""))
    return 0


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="activation store directory (undertow extract)")
    p.add_argument("--contrast", required=True, help="contrast name (self_cessation, stance, ...)")


def _eval_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("--eval", action="append", metavar="[NAME=]STORE",
                   help="an evaluation store (repeatable), extracted with the same model, hooks and position "
                   "(undertow probe evals): its AUROC [CI] per layer x type; never fitted on. NAME defaults to "
                   "'independent' / 'mwe' for those sets, else the directory name")
    p.add_argument("--calibration", metavar="STORE", help="a store of ordinary-chat negatives (e.g. control_chat "
                   "from undertow probe evals): every threshold is set at --target-fpr on its scores")
    p.add_argument("--evals", metavar="DIR", help="every store `undertow probe evals --out DIR` wrote: control_chat "
                   "as --calibration, the others as --eval")
    p.add_argument("--select-rule", default="mean", choices=SELECT_RULES,
                   help="how the operating point is chosen: 'val' in-template val only; 'mean'/'min' of it and each "
                   "evaluation set's val-half AUROC; 'eval' the val halves alone (test rows never choose)")


def _sweep_args(p: argparse.ArgumentParser) -> None:
    _eval_args(p)
    p.add_argument("--out", "--json", dest="out", help="JSON file to write the table to (none by default; "
                   "nothing is written into the store)")


def _train_args(p: argparse.ArgumentParser) -> None:
    _eval_args(p)
    p.add_argument("--out", required=True, help="probe directory to write")
    p.add_argument("--hook", help="override the operating point's hook")
    p.add_argument("--type", help="override the operating point's probe type")


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="train, sweep and evaluate linear probes")
    ps = p.add_subparsers(dest="probe_command", required=True, parser_class=RowParser)
    config_command(ps, "sweep", SweepConfig, run_sweep, config_arg=None, extra=_sweep_args,
                   prog="undertow probe sweep", help="every layer x probe type on a store")
    config_command(ps, "train", SweepConfig, run_train, config_arg=None, extra=_train_args,
                   prog="undertow probe train", help="sweep, then save the operating-point probe")
    e = ps.add_parser("evals", help="extract the evaluation sets (independent, mwe, control_chat) like a store")
    _store_args(e)
    e.add_argument("--out", required=True, help="directory for one store per set (resumable)")
    e.add_argument("--model", help="model to load (default: the one the store records; its fingerprint must match)")
    e.add_argument("--mwe-source", help="model-written-evals directory (stance only; default: skip them)")
    e.add_argument("--max-rows", type=int, help="seeded subset of whole scenarios per evaluation set (default: all)")
    e.add_argument("--max-control-rows", type=int, help="seeded subset of the control chat set (default: all 299)")
    e.add_argument("--seed", type=int, default=0, help="seeds the subsets")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_row_options(e)
    e.set_defaults(func=run_evals)
    q = ps.add_parser("eval", help="score a probe on labelled prompts (JSONL: prompt or messages, label)")
    q.add_argument("probe", help="probe directory or pretrained name like gemma-3-270m/self_cessation")
    q.add_argument("--data", required=True, help="JSONL file with prompt|messages and label (0/1)")
    q.add_argument("--model", help="model to load (default: the one the probe records)")
    q.add_argument("--calibration", metavar="STORE", help="a store of ordinary-chat negatives at the probe's hook and "
                   "position (e.g. control_chat from undertow probe evals): verified, then the threshold is set at the "
                   "probe's target FPR on it and reported; a probe that records a calibration set must record this one")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    add_row_options(q)
    q.set_defaults(func=run_eval)
    ps.add_parser("list", help="list the pretrained probes").set_defaults(func=run_list)
