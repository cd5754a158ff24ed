"""``undertow probe sweep|train|eval|list``: probes on stores and on new data from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from undertow.experiments.prompts.contrasts import contrast_spec
from undertow.probes import Probe, ProbeError, sweep
from undertow.probes.metrics import auroc, bootstrap_auroc, bootstrap_ci, cluster_bootstrap_counts
from undertow.probes.pretrained import list_pretrained, load_pretrained


def _open_store(path: str):
    from undertow.activations.store import ActivationStore

    return ActivationStore(path)


def contrast_view(store, contrast: str) -> tuple[dict, dict]:
    """(acts_by_hook, rows) of the store's rows that belong to ``contrast``, labelled by it.

    A store extracted from a contrast view keeps its rows; one extracted from the whole suite is
    relabelled from the metadata every row carries (format, referent, event, response_stance...).
    """
    spec = contrast_spec(contrast)
    rows = store.rows
    n = len(rows["id"])
    records = [{k: rows[k][i] for k in rows} for i in range(n)]
    if "contrast" in rows and set(rows["contrast"]) == {contrast}:
        labels = [r["label"] for r in records]
    else:
        try:
            labels = [spec.label(r) for r in records]
        except KeyError as e:
            raise ProbeError(f"store rows lack the {e} column that contrast {contrast!r} is defined on; extract "
                             f"the contrast view (`undertow prompts build`) instead") from None
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    if not keep:
        raise ProbeError(f"no row of this store belongs to contrast {contrast!r}")
    idx = torch.tensor(keep)
    acts = {h: torch.as_tensor(store[h][idx]) for h in store.hooks}
    meta = {k: [rows[k][i] for i in keep] for k in ("template_id", "split", "theme")}
    meta["label"] = [labels[i] for i in keep]
    return acts, meta


def _sweep(args: argparse.Namespace):
    store = _open_store(args.store)
    acts, meta = contrast_view(store, args.contrast)
    embed = "resid_pre.0" if "resid_pre.0" in acts else None
    result = sweep(acts, labels=meta["label"], groups=meta["template_id"], splits=meta["split"],
                   embed_hook=embed, seed=args.seed)
    result.model_fingerprint = store.model_fingerprint
    result.position = store.positions[0] if len(store.positions) == 1 else None
    return store, result


def run_sweep(args: argparse.Namespace) -> int:
    store, result = _sweep(args)
    print(result.format_table())
    out = Path(args.json or Path(args.store) / f"sweep-{args.contrast}.json")
    out.write_text(json.dumps(result.to_dict(), indent=1, default=str))
    op = result.operating_point
    print(f"\noperating point (chosen on val): {op.hook} / {op.probe_type}; table written to {out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    store, result = _sweep(args)
    probe = result.probe(hook=args.hook, probe_type=args.type)
    probe.extra.update(contrast=args.contrast, model=store.manifest.get("config", {}).get("model"))
    out = probe.save(args.out)
    m = probe.metrics
    print(f"saved {probe.hook} / {probe.probe_type} probe to {out}: test AUROC {m['test_auroc']:.3f} "
          f"[{m['test_auroc_lo']:.3f}, {m['test_auroc_hi']:.3f}]")
    return 0


def resolve_probe(name_or_dir: str) -> Probe:
    """A probe directory, or a pretrained name ``model/contrast``."""
    path = Path(name_or_dir)
    if (path / "probe.json").exists():
        return Probe.load(path)
    if name_or_dir.count("/") == 1 and not path.exists():
        return load_pretrained(*name_or_dir.split("/"))
    raise ProbeError(f"{name_or_dir!r} is neither a probe directory (with probe.json) nor a pretrained name; "
                     f"pretrained: {', '.join(list_pretrained())}")


def probe_scores(probe: Probe, rows, model: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Extract ``rows`` at the probe's hook and position with the engine, and score them."""
    from undertow.activations import load_model
    from undertow.activations.config import ExtractConfig
    from undertow.activations.engine import extract

    model = model or probe.extra.get("model")
    if not model:
        raise ProbeError("the probe does not record its model; pass --model NAME_OR_PATH")
    handle = load_model(model)
    if probe.model_fingerprint and probe.model_fingerprint != handle.fingerprint:
        raise ProbeError(f"probe was trained on {probe.model_fingerprint} but {model} is {handle.fingerprint}; "
                         "use that model or a probe trained on this one")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtractConfig(model=model, hooks=[probe.hook], positions=[probe.position or "last_prompt_token"],
                            dtype="float32", out_dir=str(Path(tmp) / "store"), batch_size=batch_size)
        store = extract(handle, rows, cfg)
        return probe.score(torch.as_tensor(store[probe.hook][:])).numpy()


def evaluate_scores(scores: np.ndarray, labels: np.ndarray, groups: list, threshold: float,
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """AUROC with a cluster-bootstrap 95% CI, TPR/FPR at the probe's calibrated threshold, n."""
    if len(set(labels.tolist())) != 2:
        raise ProbeError(f"labels must contain both 0 and 1, got {sorted(set(labels.tolist()))}")
    s, y = torch.tensor(scores, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    codes = torch.tensor(np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1])
    counts, _ = cluster_bootstrap_counts(codes, n_boot, torch.Generator().manual_seed(seed))
    lo, hi = bootstrap_ci(bootstrap_auroc(s[None], y, codes, counts)[0])
    pred = scores > threshold
    return {"auroc": float(auroc(s, y)), "auroc_ci": [float(lo), float(hi)], "n": int(len(y)),
            "n_positive": int(y.sum()), "tpr_at_threshold": float(pred[labels == 1].mean()),
            "fpr_at_threshold": float(pred[labels == 0].mean()), "threshold": threshold}


def run_eval(args: argparse.Namespace) -> int:
    from undertow.experiments.prompts.io import load_jsonl_dataset

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


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="train, sweep and evaluate linear probes")
    ps = p.add_subparsers(dest="probe_command", required=True)
    for name, fn, text in (("sweep", run_sweep, "every layer x probe type on a store"),
                           ("train", run_train, "sweep, then save the operating-point probe")):
        q = ps.add_parser(name, help=text)
        q.add_argument("store", help="activation store directory (undertow extract)")
        q.add_argument("--contrast", required=True, help="contrast name (self_cessation, stance, ...)")
        q.add_argument("--seed", type=int, default=0)
        if name == "sweep":
            q.add_argument("--json", help="where to write the table (default STORE/sweep-CONTRAST.json)")
        else:
            q.add_argument("--out", required=True, help="probe directory to write")
            q.add_argument("--hook", help="override the operating point's hook")
            q.add_argument("--type", help="override the operating point's probe type")
        q.set_defaults(func=fn)
    q = ps.add_parser("eval", help="score a probe on labelled prompts (JSONL: prompt or messages, label)")
    q.add_argument("probe", help="probe directory or pretrained name like gemma-3-270m/self_cessation")
    q.add_argument("--data", required=True, help="JSONL file with prompt|messages and label (0/1)")
    q.add_argument("--model", help="model to load (default: the one the probe records)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_eval)
    ps.add_parser("list", help="list the pretrained probes").set_defaults(func=run_list)


__all__ = ["add_subparsers", "contrast_view", "evaluate_scores", "probe_scores", "resolve_probe"]
