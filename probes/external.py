"""Score a sweep's probes on data they were never fitted on: evaluation sets and a calibration set.

Issue 10: the in-template test AUROC alone overstated the probes (the shipped
``smollm2-135m-instruct/self_cessation`` probe scored below chance on
independently written prompts). A sweep given ``evaluations`` (e.g. the
independent set, the model-written evals) adds, per (hook, probe type):

- ``<name>_auroc`` [``_lo``, ``_hi``]: AUROC on the set's ``test`` rows (all rows when
  it has no split), with a cluster-bootstrap CI over its groups;
- ``<name>_val_auroc``: AUROC on its ``val`` rows, which may help choose the
  operating point (``select_rule``); the test rows never do;
- ``<name>_flag``: ``below_chance`` (AUROC < 0.5), ``below_lexical`` (AUROC below the
  set's lexical line: a bag-of-words model fitted on the probe's own training rows and scored
  on the same test rows, issue 25) or "".

A ``calibration`` set (ordinary chat, negatives only) replaces the threshold:
``threshold`` is set at ``target_fpr`` on its scores, and ``test_tpr`` /
``test_fpr`` and ``<name>_tpr`` / ``<name>_fpr`` are read at it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from .errors import ProbeError
from .metrics import (
    auroc,
    bootstrap_auroc,
    bootstrap_ci,
    cluster_bootstrap_counts,
    threshold_at_fpr,
    unreadable,
)
from .result import ProbeWeights
from .store import ActivationSource, TensorStore

__all__ = ["EvalSet", "CalibrationSet", "eval_set", "calibration_set", "score_weights", "external_columns",
           "require_calibration", "check_labels"]

SelectRule = Literal["val", "mean", "min", "eval"]
"""The config field type of a selection rule (``StudyConfig.select_rule``)."""
SELECT_RULES: tuple[str, ...] = get_args(SelectRule)
"""How the operating point is chosen when evaluation sets have ``val`` rows:
``val`` the in-template val metric alone (the old rule), ``mean`` its mean with each
set's val AUROC, ``min`` the smallest of them, ``eval`` the evaluation sets' val AUROCs alone."""


@dataclass
class EvalSet:
    """An evaluation set's activations and labels (scored, never fitted on)."""

    name: str
    """Column prefix in the sweep table, e.g. ``independent``, ``mwe``."""
    source: Any = field(repr=False)
    """``{hook: [N, D]}`` or an activation source with those hooks."""
    labels: np.ndarray
    """int [N] in {0, 1}, both classes present."""
    groups: np.ndarray
    """[N] cluster id per row (scenario / item): the bootstrap resamples clusters."""
    splits: np.ndarray
    """str [N]: ``val`` (may choose the operating point) or ``test`` (only scored)."""
    lexical_auroc: float | None = None
    """The lexical line on this set: AUROC on its test rows of a bag-of-words model fitted on the text of the
    rows the probe is fitted on (``experiments.prompts.audit.lexical_line``; not a CV inside the set, which no
    probe is fitted on). An AUROC below it is flagged."""

    def __post_init__(self) -> None:
        check_labels(self.name, self.labels)
        n = len(self.labels)
        if len(self.groups) != n or len(self.splits) != n:
            raise ProbeError(f"evaluation set {self.name!r}: labels, groups and splits differ in length "
                             f"({n}, {len(self.groups)}, {len(self.splits)})")
        bad = sorted(set(self.splits.tolist()) - {"val", "test"})
        if bad:
            raise ProbeError(f"evaluation set {self.name!r}: splits must be 'val' or 'test', got {bad}")
        if not (self.splits == "test").any():
            raise ProbeError(f"evaluation set {self.name!r} has no 'test' rows; its AUROC is read on them")
        check_labels(f"{self.name} (test rows)", self.labels[self.splits == "test"])

    def unreadable(self) -> str | None:
        """Why its test-row AUROC is not reported (fewer than ``metrics.MIN_PER_CLASS`` of a class), or None."""
        y = self.labels[self.splits == "test"]
        return unreadable(int((y == 1).sum()), int((y == 0).sum()), f"the {self.name} set's test rows")


@dataclass
class CalibrationSet:
    """Ordinary-chat negatives whose scores set the threshold at the target FPR."""

    name: str
    """E.g. ``control_chat``."""
    source: Any = field(repr=False)
    """``{hook: [N, D]}`` or an activation source."""
    source_hash: str
    """sha256 of the set's file, recorded in ``probe.json``."""

    def __post_init__(self) -> None:
        if not self.source_hash:
            raise ProbeError(f"calibration set {self.name!r} has no source_hash; pass the file's sha256 "
                             "(undertow.experiments.prompts.independent.control_hash())")


def check_labels(name: str, labels: np.ndarray) -> None:
    """One-line :class:`ProbeError` unless ``labels`` are 0/1 with both classes present."""
    values = sorted(set(np.asarray(labels).tolist()))
    if not set(values) <= {0, 1}:
        raise ProbeError(f"evaluation set {name!r}: labels must be 0 or 1, got values {values[:6]}")
    if len(values) < 2:
        only = values[0] if values else "-"
        raise ProbeError(f"evaluation set {name!r} has one class only (label {only} in all {len(labels)} rows); "
                         "AUROC needs both classes: add rows of the other class or drop the set")


def _rows_source(source: Any) -> tuple[Any, Mapping[str, Any]]:
    if isinstance(source, Mapping):
        return TensorStore(source), {}
    if not isinstance(source, ActivationSource):
        raise ProbeError(f"cannot score a {type(source).__name__}; pass a store or {{hook: Tensor[N, D]}}")
    return source, source.rows or {}


def eval_set(name: str, source: Any, labels=None, groups=None, splits=None,
             lexical_auroc: float | None = None) -> EvalSet:
    """An :class:`EvalSet` from a store (columns ``label``, ``template_id``, ``split``) or explicit arrays;
    rows without a split (or with one other than val) count as ``test``."""
    src, rows = _rows_source(source)
    y = np.asarray(labels if labels is not None else rows.get("label"))
    if y.ndim != 1 or y.dtype == object:
        raise ProbeError(f"evaluation set {name!r}: no labels; pass labels= or a store with a 'label' column")
    g = np.asarray(groups if groups is not None else rows.get("template_id", np.arange(len(y))))
    sp = splits if splits is not None else rows.get("split")
    sp = np.array(["val" if s == "val" else "test" for s in sp] if sp is not None else ["test"] * len(y))
    return EvalSet(name, src, y.astype(np.int64) if np.isin(y, (0, 1)).all() else y, g, sp, lexical_auroc)


def calibration_set(name: str, source: Any, source_hash: str) -> CalibrationSet:
    """A :class:`CalibrationSet`; a store's labels, if any, must all be 0 (negatives)."""
    src, rows = _rows_source(source)
    labels = rows.get("label")
    if labels is not None and any(int(v) != 0 for v in labels):
        raise ProbeError(f"calibration set {name!r} holds positives; it must be ordinary negatives only")
    return CalibrationSet(name, src, source_hash)


def score_weights(acts_ND: Tensor, w: ProbeWeights) -> Tensor:
    """Scores of one full-train probe, ``((h - mean) / std) . weight + bias`` (float64 for ranking)."""
    x = acts_ND.to(torch.float64)
    return ((x - w.mean.double()) / w.std.double()) @ w.weight.double() + w.bias


def _acts(source, hook: str) -> Tensor:
    obj = source[hook]
    return obj if isinstance(obj, Tensor) else torch.as_tensor(np.asarray(obj[np.arange(len(obj))]))


def _ci(scores: Tensor, labels: np.ndarray, groups: np.ndarray, n_boot: int, level: float,
        seed: int) -> tuple[float, float]:
    if not n_boot:
        return math.nan, math.nan
    g = torch.Generator().manual_seed(seed + 7919)
    _, codes = np.unique(groups, return_inverse=True)
    counts, cluster = cluster_bootstrap_counts(torch.as_tensor(codes), n_boot, g)
    boot = bootstrap_auroc(scores[None], torch.as_tensor(labels, dtype=torch.float64), cluster, counts.double())
    lo, hi = bootstrap_ci(boot[0], level)
    return float(lo), float(hi)


def external_columns(scores: Tensor, ev: EvalSet, threshold: float, n_boot: int, level: float,
                     seed: int) -> dict[str, float | str]:
    """Every ``<name>_*`` column of one probe on one evaluation set."""
    test = ev.splits == "test"
    val = ev.splits == "val"
    y = torch.as_tensor(ev.labels, dtype=torch.float64)
    out: dict[str, float | str] = {}
    has_val = val.any() and len(set(ev.labels[val].tolist())) == 2
    out[f"{ev.name}_val_auroc"] = float(auroc(scores[val], y[val])) if has_val else math.nan
    if ev.unreadable():  # too few test rows of a class: no AUROC, CI, rates or flag are read from them
        return {**out, **dict.fromkeys((f"{ev.name}_{k}" for k in ("auroc", "auroc_lo", "auroc_hi", "tpr", "fpr")),
                                       math.nan), f"{ev.name}_flag": ""}
    a = float(auroc(scores[test], y[test]))
    lo, hi = _ci(scores[test], ev.labels[test], ev.groups[test], n_boot, level, seed)
    out[f"{ev.name}_auroc"], out[f"{ev.name}_auroc_lo"], out[f"{ev.name}_auroc_hi"] = a, lo, hi
    pos, neg = test & (ev.labels == 1), test & (ev.labels == 0)
    out[f"{ev.name}_tpr"] = float((scores[pos] > threshold).double().mean()) if math.isfinite(threshold) else math.nan
    out[f"{ev.name}_fpr"] = float((scores[neg] > threshold).double().mean()) if math.isfinite(threshold) else math.nan
    out[f"{ev.name}_flag"] = flag(a, ev.lexical_auroc)
    return out


def flag(value: float, lexical: float | None) -> str:
    """``below_chance`` / ``below_lexical`` / "" for an evaluation AUROC."""
    if math.isnan(value) or value < 0.5:
        return "below_chance"
    if lexical is not None and value < lexical:
        return "below_lexical"
    return ""


def calibrated_threshold(scores: Tensor, target_fpr: float) -> float:
    """Threshold on calibration-set (negative) scores at ``target_fpr`` (``metrics.threshold_at_fpr``)."""
    return float(threshold_at_fpr(scores, target_fpr))


def selection_key(row: Mapping[str, Any], names: Sequence[str], rule: str, base_key: str) -> float:
    """The value ``rule`` ranks a table row by (NaN = not selectable): see ``SELECT_RULES``."""
    vals = [] if rule == "eval" and names else [row[base_key]]
    vals += [row[f"{n}_val_auroc"] for n in names] if rule != "val" else []
    vals = [v for v in vals if not math.isnan(v)]
    if not vals:
        return math.nan
    return float(np.mean(vals)) if rule == "mean" else float(min(vals))


def require_calibration(probe, expected_hash: str | None = None) -> dict:
    """The probe's calibration record (``probe.json`` ``extra.calibration``); a probe without one, or one
    calibrated on another control set than ``expected_hash``, raises a one-line :class:`ProbeError`."""
    cal = (probe.extra or {}).get("calibration")
    name = f"{probe.hook}/{probe.probe_type}"
    if not cal or not cal.get("sha256"):
        raise ProbeError(f"probe {name} has no calibration set (probe.json extra.calibration is missing), so its "
                         "threshold was not set on ordinary chat; retrain it with sweep(..., calibration=...)")
    if expected_hash is not None and cal["sha256"] != expected_hash:
        raise ProbeError(f"probe {name} was calibrated on control set {cal['sha256'][:19]}..., not "
                         f"{expected_hash[:19]}...; recalibrate it on this set or use the matching one")
    return cal
