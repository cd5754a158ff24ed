"""What a sweep returns: the per-(hook, probe type) table, the operating point and the fitted weights."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .artifact import Probe, _json_safe
from .config import SweepConfig
from .errors import ProbeError

__all__ = ["COLUMNS", "EXTERNAL_COLUMNS", "OperatingPoint", "ProbeWeights", "SweepResult"]

COLUMNS: dict[str, str] = {
    "hook": "hook name",
    "probe_type": "diff_means | lda | logistic",
    "is_embed": "True for the embedding-layer baseline hook",
    "cv_auroc_mean": "mean AUROC over grouped CV folds inside train",
    "cv_auroc_std": "std of the per-fold AUROCs",
    "cv_auroc_oof": "AUROC of the pooled out-of-fold scores",
    "val_auroc": "AUROC of the full-train probe on val (chooses the operating point)",
    "val_auprc": "average precision on val",
    "test_auroc": "AUROC on test (reported, never used to choose; NaN, like every test column, when the test split "
                  "has fewer than metrics.MIN_PER_CLASS rows of a class: SweepResult.unreadable says why)",
    "test_auroc_lo": "lower bound of the template-cluster bootstrap CI of test AUROC",
    "test_auroc_hi": "upper bound of that CI",
    "test_auprc": "average precision on test",
    "threshold": "score threshold at target_fpr (calibrated on control rows, else val negatives)",
    "test_tpr": "test TPR at that threshold",
    "test_fpr": "test FPR at that threshold",
    "p_value": "permutation p-value of test AUROC (cluster-respecting label permutations)",
    "p_holm": "Holm-Bonferroni adjusted p over the hooks of this probe type (embed hook excluded)",
    "p_bh": "Benjamini-Hochberg adjusted p over the same family",
    "shuffled_auroc": "test AUROC of the same probe refitted on shuffled train labels",
    "selectivity": "test_auroc - shuffled_auroc",
    "random_auroc_mean": "mean sign-free test AUROC of random directions",
    "random_auroc_max": "max sign-free test AUROC of random directions",
    "delta_vs_embed": "test_auroc - the embedding hook's test_auroc (same probe type)",
    "delta_vs_lexical": "test_auroc - the lexical baseline AUROC",
    "converged": "True if every fit of the layer (folds, final, shuffles) converged (always for closed forms)",
    "n_iter": "solver iterations of the layer batch",
    "shrinkage": "LDA covariance shrinkage of the final fit",
}

EXTERNAL_COLUMNS: dict[str, str] = {
    "threshold_in_template": "the template-calibrated threshold, kept when a calibration set replaced it",
    "<set>_auroc": "AUROC on an evaluation set's test rows (issue 10: 'independent', 'mwe'), never used to choose; "
                   "NaN with its CI, rates and an empty flag below metrics.MIN_PER_CLASS rows of a class",
    "<set>_auroc_lo": "lower bound of its cluster-bootstrap CI (clusters = the set's groups)",
    "<set>_auroc_hi": "upper bound of that CI",
    "<set>_val_auroc": "AUROC on the set's val rows (may take part in choosing the operating point)",
    "<set>_tpr": "TPR on the set's test positives at the threshold",
    "<set>_fpr": "FPR on the set's test negatives (or on the calibration set) at the threshold",
    "<set>_flag": "'below_chance' (AUROC < 0.5), 'below_lexical' (below the set's lexical baseline) or ''",
}


def against_line(value: float | None, lo: float | None, lexical: float | None) -> str:
    """An AUROC beside its lexical line, in words (``""`` without a line or a value): below it, above it (the CI's
    low end clears it) or, when the CI holds the line, not readable as beating the words."""
    if lexical is None or value is None or math.isnan(value):
        return ""
    if value < lexical:
        return f" (below its lexical line {lexical:.3f})"
    if lo is not None and not math.isnan(lo) and lo > lexical:
        return f" (above its lexical line {lexical:.3f})"
    return f" (lexical line {lexical:.3f} inside the CI: not readable as beating the words)"


def flags_of(row: dict, names: Sequence[str], lexical: dict[str, float | None]) -> list[str]:
    """One readable line per evaluation set whose AUROC is below chance or its lexical baseline."""
    out = []
    for n in names:
        f = row.get(f"{n}_flag", "")
        if f == "below_chance":
            out.append(f"{n} AUROC {row[f'{n}_auroc']:.3f} is below chance (0.5)")
        elif f == "below_lexical":
            out.append(f"{n} AUROC {row[f'{n}_auroc']:.3f} is below its lexical baseline {lexical[n]:.3f}")
    return out

@dataclass
class OperatingPoint:
    """The (hook, probe type, threshold) chosen on validation data only."""

    hook: str
    probe_type: str
    threshold: float
    target_fpr: float
    threshold_source: str
    """'control' (control rows), 'val' (val negatives) or 'oof' (out-of-fold train negatives)."""
    selected_by: str
    """Metric that chose it: 'val_auroc', 'val_auprc' or (no val split) 'cv_auroc_oof'."""
    value: float


@dataclass
class ProbeWeights:
    """Full-train fit of one (hook, probe type), in standardised coordinates (CPU, float32)."""

    weight: Tensor
    bias: float
    mean: Tensor
    std: Tensor


@dataclass
class SweepResult:
    table: list[dict]
    """One row per (hook, probe type); columns described in COLUMNS."""
    operating_point: OperatingPoint | None
    hooks: list[str]
    probe_types: list[str]
    config: SweepConfig
    n_rows: dict[str, int]
    lexical_auroc: float | None
    weights: dict[tuple[str, str], ProbeWeights] = field(repr=False)
    data_hash: dict[str, str] = field(repr=False)
    """Training-data hash per hook (train activations + labels)."""
    model_fingerprint: str | None = None
    dataset_hash: str | None = None
    """The store's dataset hash, when it has one (copied into saved probes' ``extra``)."""
    position: str | None = None
    """Token position of the activations when the store says (a view's position or its only one)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage; kept out of ``to_dict`` so two identical sweeps write identical JSON."""
    flags: list[str] = field(default_factory=list)
    """The operating point's loud flags (evaluation AUROC below chance or below its lexical baseline)."""
    evaluations: dict[str, float | None] = field(default_factory=dict)
    """Evaluation-set name -> its lexical baseline AUROC (None when not given)."""
    calibration: dict | None = None
    """``{"set", "sha256", "target_fpr"}`` of the calibration set that set the thresholds, or None."""
    unreadable: dict[str, dict] = field(default_factory=dict)
    """``"test"`` (the in-template test split) or an evaluation set's name -> ``{"n_pos", "n_neg", "reason"}``
    when it has fewer than ``metrics.MIN_PER_CLASS`` rows of a class: its AUROC columns are NaN (JSON null)."""

    def auroc_text(self, row: dict, name: str = "test") -> str:
        """``0.640 [0.584, 0.710]`` for the in-template test split (``name='test'``) or an evaluation set, or
        why it is not readable."""
        if name in self.unreadable:
            return self.unreadable[name]["reason"]
        key = f"{name}_auroc"
        return f"{_fmt(row.get(key))} [{_fmt(row.get(key + '_lo'))}, {_fmt(row.get(key + '_hi'))}]"

    def row(self, hook: str, probe_type: str) -> dict:
        for r in self.table:
            if r["hook"] == hook and r["probe_type"] == probe_type:
                return r
        raise ProbeError(f"no result for hook {hook!r} and probe type {probe_type!r}; "
                         f"hooks are {self.hooks}, types {self.probe_types}")

    def column(self, name: str, probe_type: str) -> list[float]:
        """One column over hooks (sweep order) for one probe type."""
        return [r[name] for h in self.hooks for r in self.table if r["hook"] == h and r["probe_type"] == probe_type]

    def probe(self, hook: str | None = None, probe_type: str | None = None, *, position: str | None = None,
              model_fingerprint: str | None = None) -> Probe:
        """The full-train probe of (hook, type), the operating point by default, as a saveable :class:`Probe`."""
        op = self.operating_point
        if hook is None or probe_type is None:
            if op is None:
                raise ProbeError("this sweep has no operating point; pass hook= and probe_type= explicitly")
            hook, probe_type = hook or op.hook, probe_type or op.probe_type
        r = self.row(hook, probe_type)
        w = self.weights[(hook, probe_type)]
        is_op = op is not None and (op.hook, op.probe_type) == (hook, probe_type)
        metrics = {k: v for k, v in r.items() if k not in ("hook", "probe_type")}
        extra = {"operating_point": is_op, "target_fpr": self.config.target_fpr, "dataset_hash": self.dataset_hash,
                 "flags": flags_of(r, list(self.evaluations), self.evaluations),
                 "evaluation_lexical_auroc": dict(self.evaluations), "lexical_auroc": self.lexical_auroc,
                 "calibration": self.calibration,
                 "selection_rule": op.selected_by if op is not None else None,
                 **({"unreadable": dict(self.unreadable)} if self.unreadable else {})}
        return Probe(weight=w.weight, bias=w.bias, mean=w.mean, std=w.std, hook=hook, probe_type=probe_type,
                     threshold=r["threshold"], model_fingerprint=model_fingerprint or self.model_fingerprint,
                     position=position or self.position, training_data_hash=self.data_hash.get(hook), metrics=metrics,
                     config=self.config.to_dict(), extra=extra)

    def to_dataframe(self):
        """The table as a pandas DataFrame (pandas is imported only here)."""
        import pandas as pd

        return pd.DataFrame(self.table)

    def to_dict(self) -> dict:
        """JSON-safe summary (no weights) for results.json / wandb."""
        op = self.operating_point
        return _json_safe({"table": self.table, "operating_point": None if op is None else op.__dict__,
                           "hooks": self.hooks, "probe_types": self.probe_types, "config": self.config.to_dict(),
                           "n_rows": self.n_rows, "lexical_auroc": self.lexical_auroc,
                           "model_fingerprint": self.model_fingerprint, "dataset_hash": self.dataset_hash,
                           "position": self.position, "flags": self.flags,
                           "evaluations": self.evaluations, "calibration": self.calibration,
                           "unreadable": self.unreadable})

    def summary_lines(self) -> list[str]:
        """The operating point in words: how it was chosen, its AUROCs with CIs (in-template test, then each
        evaluation set), its threshold and TPRs, and its flags, one line each."""
        op = self.operating_point
        if op is None:
            return ["no operating point (no usable validation split)"]
        r = self.row(op.hook, op.probe_type)
        lines = {"test": self.lexical_auroc, **self.evaluations}
        aurocs = [f"{'in-template test' if n == 'test' else n} {self.auroc_text(r, n)}"
                  + ("" if n in self.unreadable else against_line(r.get(f"{n}_auroc"), r.get(f"{n}_auroc_lo"), line))
                  for n, line in lines.items()]
        tprs = "".join(f", {n} TPR {_fmt(r.get(n + '_tpr'))}" for n in self.evaluations)
        return [f"operating point (chosen on val: {op.selected_by}): {op.hook} / {op.probe_type}",
                "  AUROC " + "; ".join(aurocs),
                f"  threshold {op.threshold:.4g} at {op.target_fpr:.0%} FPR on {op.threshold_source} "
                f"(test TPR {_fmt(r.get('test_tpr'))}{tprs})",
                *(f"  !! FLAG: {f}" for f in self.flags)]

    def format_table(self, probe_type: str | None = None, columns=("cv_auroc_mean", "val_auroc", "test_auroc",
                     "test_auroc_lo", "test_auroc_hi", "test_tpr", "p_holm", "selectivity", "random_auroc_max")) -> str:
        """Plain-text layer table (one line per hook and type), operating point marked with '*'."""
        op = self.operating_point
        for name in self.evaluations:
            columns = (*columns, f"{name}_auroc", f"{name}_auroc_lo", f"{name}_flag")
        head = f"{'hook':<18} {'type':<10} " + " ".join(f"{c[:13]:>13}" for c in columns)
        lines = [head, "-" * len(head)]
        for r in self.table:
            if probe_type is not None and r["probe_type"] != probe_type:
                continue
            mark = "*" if op is not None and (r["hook"], r["probe_type"]) == (op.hook, op.probe_type) else " "
            vals = " ".join(f"{_fmt(r.get(c)):>13}" for c in columns)
            lines.append(f"{mark}{r['hook']:<17} {r['probe_type']:<10} {vals}")
        lines += [f"{n}_auroc: {u['reason']}" for n, u in self.unreadable.items()]
        lines += [f"!! FLAG (operating point): {f}" for f in self.flags]
        return "\n".join(lines)


def _fmt(v) -> str:
    if v == "":
        return "-"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    return str(v)


def weights_from_fit(w_D: Tensor, b: Tensor, mean_D: Tensor, std_D: Tensor) -> ProbeWeights:
    f32 = dict(device="cpu", dtype=torch.float32)
    return ProbeWeights(w_D.detach().to(**f32), float(b), mean_D.detach().to(**f32), std_D.detach().to(**f32))
