"""Does the probe transfer? Train on one domain (theme) and test on every other; train on one
dataset and test on another.

The generalisation matrix's diagonal is *within-domain* performance from grouped
CV (out-of-fold scores), so it is held-out like the off-diagonal cells rather
than a training-set score. All domain fits and within-domain folds are one
batch of problems over a shared ``X`` (see ``problems.py``); each problem is
standardised by its own training rows, exactly as fitting on that domain alone.
Intervals are template-cluster bootstraps of the test domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .artifact import Probe, _json_safe
from .config import PROBE_TYPES, FitConfig
from .errors import ProbeError
from .evaluate import score
from .fit import fit_types
from .folds import grouped_folds
from .layers import fit_probe
from .metrics import auprc, auroc, bootstrap_auroc, bootstrap_ci, cluster_bootstrap_counts
from .problems import Prepared, ProblemSet, standardisation
from .store import ProbeData, _binary_labels, _column, resolve_data
from .sweep import nonfinite_rows

__all__ = ["GeneralisationResult", "generalisation_matrix", "TransferResult", "transfer"]


@dataclass
class GeneralisationResult:
    """AUROC[train domain, test domain]; the diagonal is within-domain grouped CV."""

    domains: list[str]
    auroc: Tensor
    lo: Tensor
    hi: Tensor
    n_rows: list[int]
    probe_type: str
    hook: str | None = None

    def format(self) -> str:
        w = max(8, *(len(d) for d in self.domains)) + 1
        lines = ["train/test".ljust(w) + "".join(f"{d:>{w}}" for d in self.domains)]
        for i, d in enumerate(self.domains):
            lines.append(f"{d:<{w}}" + "".join(f"{float(v):>{w}.3f}" for v in self.auroc[i]))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return _json_safe({"domains": self.domains, "auroc": self.auroc.tolist(), "lo": self.lo.tolist(),
                           "hi": self.hi.tolist(), "n_rows": self.n_rows, "probe_type": self.probe_type,
                           "hook": self.hook})


def _matrix_inputs(data: ProbeData, hook: str | None, n_folds: int, seed: int, dtype, drop_nan: bool):
    if data.themes is None:
        raise ProbeError("no domains: pass domains=<theme per row> or give the store a 'theme' column")
    if hook is None:
        if len(data.hooks) != 1:
            raise ProbeError(f"the store has {len(data.hooks)} hooks; pass hook= (one of {data.hooks[:8]})")
        hook = data.hooks[0]
    X = data.load(hook, dtype=dtype)
    bad = nonfinite_rows(X)
    keep = torch.ones(len(X), dtype=torch.bool)
    if bad.numel() and not drop_nan:
        raise ProbeError(f"hook {hook!r} has {bad.numel()} rows with NaN/inf (rows {bad[:8].tolist()}); fix the "
                         "extraction or pass drop_nan=True")
    keep[bad.cpu()] = False
    names, dom = np.unique(data.themes[keep.numpy()], return_inverse=True)
    names = [str(n) for n in names]
    y, g = data.labels[keep.numpy()], data.groups[keep.numpy()]
    folds = np.zeros(len(y), dtype=np.int64)
    for i, name in enumerate(names):
        rows = dom == i
        if len(np.unique(y[rows])) < 2:
            raise ProbeError(f"domain {name!r} has only label {int(y[rows][0])}; every domain needs both classes "
                             "(drop it from the matrix or add examples)")
        try:
            folds[rows] = grouped_folds(y[rows], g[rows], n_folds, seed)
        except ProbeError as e:
            raise ProbeError(f"domain {name!r}: {e}") from None
    return hook, X[keep.to(X.device)], names, dom, y, g, folds


def generalisation_matrix(acts, labels=None, groups=None, domains=None, probe_type: str = "logistic", *,
                          hook: str | None = None, n_folds: int = 5, n_boot: int = 1000, ci_level: float = 0.95,
                          seed: int = 0, config: FitConfig | None = None, drop_nan: bool = False
                          ) -> GeneralisationResult:
    """Train on each domain, test on each other; ``acts`` is ``Tensor[N, D]`` or a store (with ``hook=``)."""
    if probe_type not in PROBE_TYPES:
        raise ProbeError(f"unknown probe type {probe_type!r}; choose from {PROBE_TYPES}")
    cfg = config or FitConfig()
    data = resolve_data(acts, labels, groups, themes=domains)
    hook, X, names, dom, y, g, folds = _matrix_inputs(data, hook, n_folds, seed, cfg.dtype, drop_nan)
    T = len(names)
    dom_t, fold_t = torch.as_tensor(dom), torch.as_tensor(folds)
    masks = [dom_t == i for i in range(T)] + [(dom_t == i) & (fold_t != f) for i in range(T) for f in range(n_folds)]
    y_t = torch.as_tensor(y, dtype=cfg.dtype)
    names_k = [f"train {d}" for d in names] + [f"{d} fold {f}" for d in names for f in range(n_folds)]
    problems = ProblemSet(torch.stack(masks), y_t.expand(len(masks), -1), names_k)
    mean, std = standardisation(X[None])
    Xs = (X[None] - mean[:, None]) / std[:, None]
    fit = fit_types(Prepared(Xs, problems, std), [probe_type], cfg)[probe_type]
    s = score(Xs, fit.w_LKD, fit.b_LK)[0]  # [K, N]
    gen = torch.Generator().manual_seed(seed)
    out = torch.full((3, T, T), torch.nan, dtype=torch.float64)
    for j in range(T):
        rows = torch.nonzero(dom_t == j).flatten()
        yj = y_t[rows].to(s)
        sj = s[:T, rows.to(s.device)].clone()  # [T, n_j] cross-domain scores
        sj[j] = s[T + j * n_folds + fold_t[rows].to(s.device), rows.to(s.device)]  # out-of-fold on the diagonal
        out[0, :, j] = auroc(sj, yj).double().cpu()
        if n_boot:
            counts, cluster = cluster_bootstrap_counts(torch.as_tensor(g[rows.numpy()]), n_boot, gen)
            lo, hi = bootstrap_ci(bootstrap_auroc(sj, yj, cluster, counts), ci_level)
            out[1, :, j], out[2, :, j] = lo.double().cpu(), hi.double().cpu()
    return GeneralisationResult(names, out[0], out[1], out[2], [int((dom == i).sum()) for i in range(T)],
                                probe_type, hook)


@dataclass
class TransferResult:
    """A probe trained on one dataset, evaluated on another."""

    auroc: float
    lo: float
    hi: float
    auprc: float
    n_test: int
    probe: Probe


def transfer(train_acts: Tensor, train_labels, test_acts: Tensor, test_labels, test_groups=None,
             probe_type: str = "logistic", *, config: FitConfig | None = None, n_boot: int = 1000,
             ci_level: float = 0.95, seed: int = 0, hook: str = "", model_fingerprint: str | None = None
             ) -> TransferResult:
    """Fit on (train_acts, train_labels) - e.g. project suites - and test on another set, e.g. model-written evals.

    ``test_groups`` (template/source ids) make the CI a cluster bootstrap; None treats rows as independent.
    """
    train_acts, test_acts = torch.as_tensor(train_acts), torch.as_tensor(test_acts)
    if train_acts.ndim != 2 or test_acts.ndim != 2:
        raise ProbeError("transfer needs train_acts and test_acts as [N, D] tensors (one hook, pooled positions)")
    if train_acts.shape[1] != test_acts.shape[1]:
        raise ProbeError(f"train d_model={train_acts.shape[1]} but test d_model={test_acts.shape[1]}; "
                         "both sets must come from the same model and hook")
    y = torch.as_tensor(_binary_labels(test_labels), dtype=torch.float64)
    if len(y) != len(test_acts):
        raise ProbeError(f"test_acts has {len(test_acts)} rows but test_labels has {len(y)}; align them")
    probe = fit_probe(train_acts, train_labels, probe_type, config=config, hook=hook,
                      model_fingerprint=model_fingerprint)
    s = probe.score(test_acts).double().cpu()
    a, ap = float(auroc(s, y)), float(auprc(s, y))
    lo = hi = float("nan")
    if n_boot:
        grp = torch.arange(len(y)) if test_groups is None else torch.as_tensor(
            np.unique(_column(test_groups, len(y), "test_groups").astype(str), return_inverse=True)[1])
        counts, cluster = cluster_bootstrap_counts(grp, n_boot, torch.Generator().manual_seed(seed))
        lo_t, hi_t = bootstrap_ci(bootstrap_auroc(s[None], y, cluster, counts)[0], ci_level)
        lo, hi = float(lo_t), float(hi_t)
    probe.metrics = {"transfer_auroc": a, "transfer_auroc_lo": lo, "transfer_auroc_hi": hi, "transfer_auprc": ap}
    return TransferResult(a, lo, hi, ap, len(y), probe)
