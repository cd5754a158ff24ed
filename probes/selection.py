"""Add evaluation-set columns and a control-calibrated threshold to a sweep table, then choose the operating point.

Called by ``sweep`` when it is given ``evaluations`` and/or ``calibration``
(``external.py`` has the per-set metrics). The choice never reads a test
column: it ranks rows by ``external.selection_key`` (in-template val metric
combined with each evaluation set's *val* AUROC), over ``candidate_hooks`` when
given (a layer prior), and records the rule.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

from .errors import ProbeError, ProbeWarning
from .external import (
    SELECT_RULES,
    CalibrationSet,
    EvalSet,
    calibrated_threshold,
    external_columns,
    score_weights,
    selection_key,
)
from .result import OperatingPoint, ProbeWeights, flags_of

__all__ = ["add_external", "choose"]


def _source_hooks(source) -> list[str]:
    return list(source.hooks)


def add_external(rows: list[dict], weights: dict[tuple[str, str], ProbeWeights], test_acts: dict[str, torch.Tensor],
                 y_test: torch.Tensor, evaluations: Sequence[EvalSet], calibration: CalibrationSet | None,
                 target_fpr: float, n_boot: int, level: float, seed: int) -> None:
    """Fill every row's evaluation columns in place (and, with ``calibration``, its threshold and test TPR/FPR)."""
    hooks = {r["hook"] for r in rows}
    for s in [*evaluations, *([calibration] if calibration else [])]:
        missing = sorted(hooks - set(_source_hooks(s.source)))
        if missing:
            raise ProbeError(f"{type(s).__name__} {s.name!r} lacks hooks {missing[:4]}; extract it with the same hooks")
    for r in rows:
        w = weights[(r["hook"], r["probe_type"])]
        if calibration is not None:
            _calibrate_row(r, w, calibration, test_acts.get(r["hook"]), y_test, target_fpr)
        for ev in evaluations:
            s = score_weights(_dense(ev.source, r["hook"]), w)
            r.update(external_columns(s, ev, r["threshold"], n_boot, level, seed))


def _dense(source, hook: str) -> torch.Tensor:
    obj = source[hook]
    return obj if isinstance(obj, torch.Tensor) else torch.as_tensor(obj[torch.arange(len(obj)).numpy()])


def _calibrate_row(r: dict, w: ProbeWeights, cal: CalibrationSet, test_acts, y_test, target_fpr: float) -> None:
    neg = score_weights(_dense(cal.source, r["hook"]), w)
    r["threshold_in_template"] = r["threshold"]
    r["threshold"] = thr = calibrated_threshold(neg, target_fpr)
    r[f"{cal.name}_fpr"] = float((neg > thr).double().mean())
    if test_acts is not None and len(y_test):
        s = score_weights(test_acts, w)
        pos, negt = y_test == 1, y_test == 0
        r["test_tpr"] = float((s[pos] > thr).double().mean()) if pos.any() else math.nan
        r["test_fpr"] = float((s[negt] > thr).double().mean()) if negt.any() else math.nan


def choose(rows: list[dict], base_key: str, names: Sequence[str], rule: str, candidate_hooks: Sequence[str] | None,
           target_fpr: float, threshold_source: str) -> OperatingPoint | None:
    """Best non-embedding row by ``rule`` (``SELECT_RULES``) among ``candidate_hooks`` (None = all)."""
    if rule not in SELECT_RULES:
        raise ProbeError(f"select_rule={rule!r} must be one of {SELECT_RULES}")
    keep = set(candidate_hooks) if candidate_hooks is not None else None
    scored = [(selection_key(r, names, rule, base_key), r) for r in rows
              if not r["is_embed"] and (keep is None or r["hook"] in keep)]
    scored = [(v, r) for v, r in scored if not math.isnan(v)]
    if not scored:
        return None
    value, best = max(scored, key=lambda t: t[0])  # max keeps the first of ties
    keys = [*([] if rule == "eval" else [base_key]), *(f"{n}_val_auroc" for n in names)]
    desc = base_key if rule == "val" or not names else f"{rule}({', '.join(keys)})"
    if keep is not None:
        desc += f" over {len(keep)} candidate hooks"
    return OperatingPoint(hook=best["hook"], probe_type=best["probe_type"], threshold=best["threshold"],
                          target_fpr=target_fpr, threshold_source=threshold_source, selected_by=desc, value=value)


def warn_flags(op: OperatingPoint | None, rows: list[dict], names: Sequence[str],
               lexical: dict[str, float | None]) -> list[str]:
    """The operating point's flags, each also raised as a :class:`ProbeWarning`."""
    if op is None:
        return []
    row = next(r for r in rows if (r["hook"], r["probe_type"]) == (op.hook, op.probe_type))
    flags = flags_of(row, names, lexical)
    for f in flags:
        warnings.warn(f"operating point {op.hook}/{op.probe_type}: {f}", ProbeWarning, stacklevel=3)
    return flags
