"""``sweep``: every hook x probe type on a store in one call, with controls, CIs and an operating point.

Layers are processed in chunks (as many as fit ``max_chunk_bytes``) and,
within a chunk, fitted together: ``X[L, N, D]`` is read once per matmul for
all layers, folds and shuffled-label refits (see ``problems.py``). The
benchmark (``scripts/bench_probe_sweep.py``) records the end-to-end time.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .artifact import hash_training_data
from .baselines import resolve_lexical
from .config import SweepConfig
from .errors import ProbeError, ProbeWarning
from .evaluate import evaluate_fit, evaluate_random
from .external import CalibrationSet, EvalSet
from .fit import fit_types
from .metrics import benjamini_hochberg, holm
from .plan import SweepPlan, make_plan
from .problems import Prepared, standardisation
from .result import OperatingPoint, SweepResult, weights_from_fit
from .selection import add_external, choose, warn_flags
from .store import ProbeData, resolve_data

__all__ = ["sweep", "nonfinite_rows"]


def sweep(source, labels=None, groups=None, splits=None, *, config: SweepConfig | None = None,
          lexical_auroc=None, evaluations: Sequence[EvalSet] = (), calibration: CalibrationSet | None = None,
          select_rule: str = "mean", candidate_hooks: Sequence[str] | None = None, **overrides) -> SweepResult:
    """Fit and evaluate every (hook, probe type) of ``source``.

    ``source`` is an activation store (``hooks``, ``rows``, ``store[hook]``) or a dict
    ``{hook: Tensor[N, D]}`` with ``labels`` and ``groups`` (template ids) given explicitly;
    explicit ``labels``/``groups``/``splits`` override the store's columns. Keyword
    ``overrides`` set :class:`SweepConfig` fields (``probe_types=..., n_folds=5, embed_hook='embed'``).
    ``lexical_auroc`` is the caller's lexical baseline (a number or a callable returning one).

    Issue 10 (``external.py``, ``selection.py``): ``evaluations`` (:class:`EvalSet`, e.g. the independent
    set and the model-written evals) add ``<name>_auroc`` [CI], ``<name>_val_auroc`` and ``<name>_flag``
    columns; ``calibration`` (:class:`CalibrationSet`, ordinary chat) sets every threshold at
    ``target_fpr`` on its scores. The operating point is ranked by ``select_rule`` ('val': the
    in-template val metric alone; 'mean' / 'min' of it and each set's val AUROC) among
    ``candidate_hooks`` (None = all), and never by a test column.
    """
    cfg = SweepConfig.from_overrides(config, overrides)
    lexical = resolve_lexical(lexical_auroc)  # fail before the work, not after
    t0 = time.perf_counter()
    data = resolve_data(source, labels, groups, splits)
    hooks = _hooks(data, cfg)
    plan = make_plan(data, cfg, _rows_to_keep(data, hooks, cfg))
    device = _device(data, hooks[0], cfg)
    rows: list[dict] = []
    weights, hashes = {}, {}
    timings = {"load": 0.0, "fit": 0.0, "evaluate": 0.0}
    for chunk in _chunks(data, hooks, plan, cfg):
        _run_chunk(data, chunk, plan, cfg, device, rows, weights, hashes, timings)
    order = {(t, h): i for i, (t, h) in enumerate((t, h) for t in cfg.probe_types for h in hooks)}
    rows.sort(key=lambda r: order[(r["probe_type"], r["hook"])])  # by type, then hook: independent of chunking
    _finalise(rows, cfg, lexical)
    evaluations = list(evaluations)
    if evaluations or calibration is not None or candidate_hooks is not None or select_rule != "mean":
        op, flags = _external(data, plan, cfg, rows, weights, evaluations, calibration, select_rule, candidate_hooks)
    else:  # the pre-issue-10 path, unchanged
        op, flags = _select(rows, cfg, plan), []
    timings["total"] = time.perf_counter() - t0
    return SweepResult(table=rows, operating_point=op, hooks=hooks, flags=flags,
                       evaluations={e.name: e.lexical_auroc for e in evaluations},
                       calibration=None if calibration is None else {
                           "set": calibration.name, "sha256": calibration.source_hash,
                           "target_fpr": cfg.target_fpr},
                       probe_types=list(cfg.probe_types), config=cfg, n_rows=plan.n_rows(), lexical_auroc=lexical,
                       weights=weights, data_hash=hashes,
                       model_fingerprint=getattr(data.source, "model_fingerprint", None),
                       dataset_hash=getattr(data.source, "dataset_hash", None), position=_position(data.source),
                       timings=timings, unreadable=_unreadable(plan, evaluations))


def _unreadable(plan: SweepPlan, evaluations: Sequence[EvalSet]) -> dict[str, dict]:
    """``{"test" | set name: {"n_pos", "n_neg", "reason"}}`` for each test split whose AUROCs are withheld
    (fewer than ``metrics.MIN_PER_CLASS`` rows of a class)."""
    found = [("test", plan.test_unreadable(), plan.class_counts("test"))]
    for ev in evaluations:
        y = ev.labels[ev.splits == "test"]
        found.append((ev.name, ev.unreadable(), (int((y == 1).sum()), int((y == 0).sum()))))
    return {name: {"n_pos": n[0], "n_neg": n[1], "reason": why} for name, why, n in found if why}


def _position(source) -> str | None:
    """The token position the activations come from: a store view's ``position``, or a store's only one."""
    pos = getattr(source, "position", None)
    if isinstance(pos, str):
        return pos
    positions = getattr(source, "positions", None)
    return positions[0] if isinstance(positions, list | tuple) and len(positions) == 1 else None


def _hooks(data: ProbeData, cfg: SweepConfig) -> list[str]:
    hooks = list(cfg.hooks) if cfg.hooks is not None else list(data.hooks)
    missing = [h for h in hooks + ([cfg.embed_hook] if cfg.embed_hook else []) if h not in data.hooks]
    if missing:
        raise ProbeError(f"hooks {missing} are not in the store; available hooks: {list(data.hooks)[:12]}")
    if cfg.embed_hook and cfg.embed_hook not in hooks:
        hooks.insert(0, cfg.embed_hook)
    return hooks


def _device(data: ProbeData, hook: str, cfg: SweepConfig) -> torch.device:
    if cfg.device is not None:
        return torch.device(cfg.device)
    first = data.source[hook]
    return first.device if isinstance(first, Tensor) else torch.device("cpu")


def nonfinite_rows(acts_ND: Tensor) -> Tensor:
    """Row indices with any NaN/inf. A row sum flags candidates cheaply (NaN/inf propagate), then
    candidates are confirmed elementwise (a sum can overflow on huge but finite values)."""
    cand = torch.nonzero(~torch.isfinite(acts_ND.sum(1))).flatten()
    return cand[~torch.isfinite(acts_ND[cand]).all(1)] if cand.numel() else cand


def _rows_to_keep(data: ProbeData, hooks: list[str], cfg: SweepConfig) -> np.ndarray:
    if not cfg.drop_nan:
        return np.arange(data.n_rows)
    bad = np.zeros(data.n_rows, dtype=bool)
    for h in hooks:  # an extra read of every hook: the price of knowing the bad rows before fixing folds
        idx = nonfinite_rows(data.load(h)).cpu().numpy()
        if len(idx):
            warnings.warn(f"drop_nan: hook {h!r} has {len(idx)} rows with NaN/inf; dropping them from every hook",
                          ProbeWarning, stacklevel=3)
        bad[idx] = True
    return np.flatnonzero(~bad)


def _check_finite(acts: Tensor, hook: str, idx: Tensor) -> None:
    bad = nonfinite_rows(acts)
    if bad.numel():
        ids = idx[bad.cpu()].tolist()
        raise ProbeError(f"hook {hook!r} has {len(ids)} rows with NaN/inf (rows {ids[:8]}"
                         f"{'...' if len(ids) > 8 else ''}); fix the extraction, or drop those rows from every "
                         "hook with drop_nan=True (SweepConfig; `undertow probe sweep|train --drop-nan true`)")


def _chunks(data: ProbeData, hooks: list[str], plan: SweepPlan, cfg: SweepConfig) -> list[list[str]]:
    """Consecutive hooks with one d_model, as many per chunk as the memory budget allows."""
    n_tr, n_ev, K = len(plan.idx_train), len(plan.idx_eval), plan.problems.K
    item = torch.finfo(cfg.fit.dtype).bits // 8
    chunks: list[list[str]] = []
    last_d = None
    for h in hooks:
        d = data.d_model(h)
        # X and X**2 on train rows, eval rows, atom moments + Cholesky factors, [N, K] temporaries
        per_layer = item * (2 * n_tr * d + n_ev * d + (cfg.n_folds + 3) * d * d + 6 * n_tr * K)
        cap = max(1, cfg.max_chunk_bytes // per_layer)
        if chunks and d == last_d and len(chunks[-1]) < cap:
            chunks[-1].append(h)
        else:
            chunks.append([h])
        last_d = d
    return chunks


def _load_chunk(data: ProbeData, chunk: list[str], plan: SweepPlan, device, dtype, hashes: dict):
    """Standardised train/eval activations [L, N, D] (train-split stats) and those stats."""
    idx = torch.cat([plan.idx_train, plan.idx_eval])
    n_tr = len(plan.idx_train)
    X_tr = X_ev = mean = std = None
    for i, h in enumerate(chunk):
        acts = data.load(h, idx, device=device, dtype=dtype)
        _check_finite(acts, h, idx)
        if X_tr is None:
            L, D = len(chunk), acts.shape[1]
            X_tr = torch.empty(L, n_tr, D, dtype=dtype, device=device)
            X_ev = torch.empty(L, len(idx) - n_tr, D, dtype=dtype, device=device)
            mean, std = torch.empty(L, D, dtype=dtype, device=device), torch.empty(L, D, dtype=dtype, device=device)
        hashes[h] = hash_training_data(acts[:n_tr], plan.y_train)
        m, s = standardisation(acts[None, :n_tr])
        mean[i], std[i] = m[0], s[0]
        torch.sub(acts[:n_tr], m, out=X_tr[i]).div_(s)
        torch.sub(acts[n_tr:], m, out=X_ev[i]).div_(s)
    return X_tr, X_ev, mean, std


def hash_seed(hook: str) -> int:
    """A stable per-hook seed (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(hook.encode()).digest()[:4], "little")


def _run_chunk(data, chunk, plan, cfg, device, rows, weights, hashes, timings) -> None:
    t = time.perf_counter()
    X_tr, X_ev, mean, std = _load_chunk(data, chunk, plan, device, cfg.fit.dtype, hashes)
    t1 = time.perf_counter()
    fits = fit_types(Prepared(X_tr, plan.problems, std), cfg.probe_types, cfg.fit)
    t2 = time.perf_counter()
    rand = evaluate_random(X_ev, plan, cfg, seeds=[cfg.seed * 100_003 + hash_seed(h) for h in chunk])
    for ptype in cfg.probe_types:
        metrics, _ = evaluate_fit(fits[ptype], X_tr, X_ev, plan, cfg)
        metrics.update(rand)
        host = {k: v.detach().cpu().tolist() for k, v in metrics.items()}
        for i, h in enumerate(chunk):
            row = {"hook": h, "probe_type": ptype, "is_embed": h == cfg.embed_hook}
            row.update({k: float(v[i]) for k, v in host.items()})
            row["converged"], row["n_iter"] = bool(row["converged"]), int(row["n_iter"])
            rows.append(row)
            f = fits[ptype]
            weights[(h, ptype)] = weights_from_fit(f.w_LKD[i, plan.k_final], f.b_LK[i, plan.k_final], mean[i], std[i])
    for ptype, f in fits.items():
        bad = [h for h, ok in zip(chunk, f.converged_LK.all(1).tolist(), strict=True) if not ok]
        if bad:
            warnings.warn(f"{ptype} did not converge on hooks {bad} within max_iter={cfg.fit.max_iter}; raise "
                          "FitConfig.max_iter or l2 (see the 'converged' column)", ProbeWarning, stacklevel=3)
    t3 = time.perf_counter()
    timings["load"] += t1 - t
    timings["fit"] += t2 - t1
    timings["evaluate"] += t3 - t2


def _finalise(rows: list[dict], cfg: SweepConfig, lexical: float | None) -> None:
    """Multiple-comparison corrections per probe type across hooks, and the baseline deltas."""
    for ptype in cfg.probe_types:
        fam = [r for r in rows if r["probe_type"] == ptype and not r["is_embed"]]
        p = [r["p_value"] for r in fam]
        for r, ph, pb in zip(fam, holm(p), benjamini_hochberg(p), strict=True):
            r["p_holm"], r["p_bh"] = float(ph), float(pb)
        embed = [r for r in rows if r["probe_type"] == ptype and r["is_embed"]]
        for r in rows:
            if r["probe_type"] != ptype:
                continue
            r.setdefault("p_holm", math.nan)
            r.setdefault("p_bh", math.nan)
            r["delta_vs_embed"] = r["test_auroc"] - embed[0]["test_auroc"] if embed else math.nan
            r["delta_vs_lexical"] = r["test_auroc"] - lexical if lexical is not None else math.nan


def _external(data, plan, cfg, rows, weights, evaluations, calibration, rule, candidate_hooks):
    """Evaluation columns, calibrated thresholds and the rule-chosen operating point (``selection.py``)."""
    test_idx = plan.idx_eval[plan.test]
    scored = calibration is not None and not plan.test_unreadable()  # no test TPR/FPR from too few rows
    test_acts = {h: data.load(h, test_idx) for h in {r["hook"] for r in rows}} if scored else {}
    add_external(rows, weights, test_acts, plan.y_eval[plan.test], evaluations, calibration, cfg.target_fpr,
                 cfg.n_boot, cfg.ci_level, cfg.seed)
    key = f"val_{cfg.select_by}"
    if all(math.isnan(r[key]) for r in rows):
        key = "cv_auroc_oof"
    source = f"calibration:{calibration.name}" if calibration is not None else _threshold_source(plan)
    names = [e.name for e in evaluations]
    op = choose(rows, key, names, rule, candidate_hooks, cfg.target_fpr, source)
    return op, warn_flags(op, rows, names, {e.name: e.lexical_auroc for e in evaluations})


def _threshold_source(plan: SweepPlan) -> str:
    return "control" if plan.n_control else ("val" if plan.n_val and bool((plan.y_eval[plan.val] == 0).any())
                                              else "oof")


def _select(rows: list[dict], cfg: SweepConfig, plan: SweepPlan) -> OperatingPoint | None:
    """Best (hook, type) by the validation metric; never looks at test columns."""
    key = f"val_{cfg.select_by}"
    if all(math.isnan(r[key]) for r in rows):
        key = "cv_auroc_oof"  # no usable val split: out-of-fold CV scores are the validation data
    cands = [r for r in rows if not r["is_embed"] and not math.isnan(r[key])]
    if not cands:
        return None
    best = max(cands, key=lambda r: r[key])  # max keeps the first of ties (earliest hook, type order)
    return OperatingPoint(hook=best["hook"], probe_type=best["probe_type"], threshold=best["threshold"],
                          target_fpr=cfg.target_fpr, threshold_source=_threshold_source(plan), selected_by=key,
                          value=best[key])
