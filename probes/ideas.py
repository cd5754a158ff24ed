"""Generalisation ideas of issue 10, each one sweep on the same data, compared on an evaluation set.

Every idea is a :class:`Idea` (which hooks / probe types / fit penalty / selection rule /
layer prior) run by :func:`run_idea` on the training store with the evaluation
sets and the calibration set; :func:`idea_row` reads the chosen operating
point's figures. Multi-layer read-outs are extra pseudo-hooks built by
:func:`with_multilayer` (mean, or concatenation, of consecutive ``resid_post``
layers). Nothing here looks at an evaluation set's test rows to choose: the
rule sees its val rows only, the table reports its test rows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from .config import FitConfig
from .errors import ProbeWarning
from .external import CalibrationSet, EvalSet
from .result import SweepResult, flags_of
from .selection import choose
from .store import TensorStore
from .sweep import sweep

__all__ = ["Idea", "run_idea", "rechoose", "fit_key", "idea_row", "with_multilayer", "middle_hooks", "layer_curve"]


@dataclass(frozen=True)
class Idea:
    """One way of training / choosing a probe."""

    name: str
    """Row label in the ideas table."""
    probe_types: tuple[str, ...] = ("diff_means", "lda", "logistic")
    """Probe types swept."""
    l2: float = 1e-3
    """Logistic L2 penalty (FitConfig.l2); the default is the shipped probes'."""
    select_rule: str = "mean"
    """'val' (in-template val only: the shipped rule) or 'mean' (with the evaluation sets' val halves)."""
    layer_window: tuple[float, float] | None = None
    """Candidate layers as a fraction of depth (e.g. (0.3, 0.7)); None = every layer."""
    multilayer: str | None = None
    """'mean' or 'concat': also offer read-outs over windows of consecutive layers (``with_multilayer``)."""
    hooks_only: tuple[str, ...] | None = field(default=None)
    """Choose only among these hook-name prefixes (e.g. ('mean:',) for multi-layer read-outs alone)."""
    train_on_val: bool = False
    """Fit on the suite's train + val templates (more templates in the mix); pair with ``select_rule='eval'``."""
    extra_train: str | None = None
    """Also fit on the rows of an extra store of reworded train rows (``suite_<contrast>_<extra_train>``,
    e.g. 'para': ``undertow.experiments.prompts.paraphrase``); their split is train, their templates the
    originals' (so grouped CV never splits a template from its rewordings)."""
    multilayer_window: tuple[float, float] | None = None
    """With ``multilayer``: build (and fit) only the multi-layer read-outs inside this depth window, and no
    single-layer hooks (what makes 3-layer concatenations affordable)."""


def _layer(hook: str) -> int | None:
    head, _, tail = hook.partition(".")
    return int(tail) if head == "resid_post" and tail.isdigit() else None


def middle_hooks(hooks: Sequence[str], window: tuple[float, float]) -> list[str]:
    """``resid_post.i`` hooks with (i + 1) / n_layers inside ``window``."""
    layers = [i for i in map(_layer, hooks) if i is not None]
    n = max(layers) + 1
    return [h for h in hooks if (i := _layer(h)) is not None and window[0] <= (i + 1) / n <= window[1]]


def with_multilayer(acts: Mapping[str, torch.Tensor], how: str, width: int = 3,
                    window: tuple[float, float] | None = None, keep: Sequence[str] | None = None
                    ) -> dict[str, torch.Tensor]:
    """``acts`` plus ``<how>:a-b`` read-outs over every window of ``width`` consecutive resid_post layers;
    ``window``: only read-outs whose layers all lie in this depth fraction ((i + 1) / n_layers), and of
    ``acts`` only the hooks in ``keep`` (e.g. the embedding the sweep needs as its baseline)."""
    layers = sorted(i for i in map(_layer, acts) if i is not None)
    n = max(layers) + 1
    out = dict(acts) if window is None else {h: acts[h] for h in (keep or ()) if h in acts}
    for a in range(0, len(layers) - width + 1):
        if window is not None and not (window[0] <= (layers[a] + 1) / n and (layers[a + width - 1] + 1) / n <= window[1]):
            continue
        block = [acts[f"resid_post.{i}"].float() for i in layers[a:a + width]]
        out[f"{how}:{layers[a]}-{layers[a + width - 1]}"] = (torch.stack(block).mean(0) if how == "mean"
                                                             else torch.cat(block, dim=1))
    return out


def _candidates(idea: Idea, hooks: Sequence[str]) -> list[str] | None:
    cands = list(hooks)
    if idea.layer_window is not None:
        window = set(middle_hooks(hooks, idea.layer_window))
        cands = [h for h in cands if h in window or (":" in h and _window_ok(h, idea.layer_window, hooks))]
    if idea.hooks_only is not None:
        cands = [h for h in cands if h.startswith(idea.hooks_only)]
    return None if cands == list(hooks) else cands


def _window_ok(hook: str, window: tuple[float, float], hooks: Sequence[str]) -> bool:
    layers = [i for i in map(_layer, hooks) if i is not None]
    if not layers:  # only multi-layer read-outs (``multilayer_window``): they were built inside their window
        return True
    n = max(layers) + 1
    a, b = (int(x) for x in hook.split(":")[1].split("-"))
    return window[0] <= (a + 1) / n and (b + 1) / n <= window[1]


def run_idea(idea: Idea, train: TensorStore, evaluations: Sequence[EvalSet], calibration: CalibrationSet | None,
             embed_hook: str = "resid_pre.0", n_boot: int = 500, seed: int = 0, lexical: float | None = None
             ) -> SweepResult:
    """One sweep for ``idea``; ``train`` holds the suite rows (train/val/test splits) and every hook the
    evaluation and calibration sources hold (multi-layer pseudo-hooks included)."""
    hooks = [h for h in train.hooks if h != embed_hook]
    if idea.train_on_val:
        rows = dict(train.rows)
        rows["split"] = [("train" if s == "val" else s) for s in rows["split"]]
        train = TensorStore({h: train[h] for h in train.hooks}, rows, train.model_fingerprint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        return sweep(train, embed_hook=embed_hook, probe_types=list(idea.probe_types), fit=FitConfig(l2=idea.l2),
                     n_boot=n_boot, n_perm=0, seed=seed, evaluations=evaluations, calibration=calibration,
                     select_rule=idea.select_rule, candidate_hooks=_candidates(idea, hooks), lexical_auroc=lexical)


def fit_key(idea: Idea) -> tuple:
    """Ideas with equal keys share one sweep (they differ only in how the operating point is chosen)."""
    own_types = idea.l2 != 1e-3 or idea.multilayer_window is not None
    return (idea.l2, idea.multilayer, idea.train_on_val, idea.probe_types if own_types else None, idea.extra_train,
            idea.multilayer_window)


def rechoose(res: SweepResult, idea: Idea) -> SweepResult:
    """``res`` with the operating point ``idea`` chooses from its table (its types, rule and layer prior)."""
    names = list(res.evaluations)
    hooks = [h for h in res.hooks if h != res.config.embed_hook]
    rows = [r for r in res.table if r["probe_type"] in idea.probe_types]
    key = "val_auroc" if not all(math.isnan(r["val_auroc"]) for r in rows) else "cv_auroc_oof"
    source = res.operating_point.threshold_source if res.operating_point else "val"
    op = choose(rows, key, names, idea.select_rule, _candidates(idea, hooks), res.config.target_fpr, source)
    row = res.row(op.hook, op.probe_type)
    return replace(res, operating_point=op, flags=flags_of(row, names, res.evaluations))


def idea_row(idea: Idea, res: SweepResult, names: Sequence[str]) -> dict:
    """The operating point's figures: hook, type, in-template test AUROC [CI], each set's AUROC [CI], TPR."""
    op = res.operating_point
    r = res.row(op.hook, op.probe_type)
    out = {"idea": idea.name, "hook": op.hook, "probe_type": op.probe_type, "selected_by": op.selected_by,
           "test_auroc": r["test_auroc"], "test_auroc_lo": r["test_auroc_lo"], "test_auroc_hi": r["test_auroc_hi"],
           "test_tpr": r["test_tpr"], "flags": list(res.flags)}
    for n in names:
        for k in ("auroc", "auroc_lo", "auroc_hi", "val_auroc", "tpr", "fpr", "flag"):
            out[f"{n}_{k}"] = r.get(f"{n}_{k}", math.nan)
    return out


def layer_curve(res: SweepResult, column: str, probe_type: str) -> dict[str, float]:
    """``column`` per resid_post hook for one probe type (layer order)."""
    rows = [r for r in res.table if r["probe_type"] == probe_type and _layer(r["hook"]) is not None]
    return {r["hook"]: r[column] for r in sorted(rows, key=lambda r: _layer(r["hook"]))}
