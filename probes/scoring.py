"""Metrics of a probe's scores on labelled rows: AUROC with a cluster-bootstrap CI, rates at its threshold."""

from __future__ import annotations

import numpy as np
import torch

from .errors import ProbeError
from .metrics import auroc, bootstrap_auroc, bootstrap_ci, cluster_bootstrap_counts, unreadable

__all__ = ["evaluate_scores", "auroc_text"]


def evaluate_scores(scores: np.ndarray, labels: np.ndarray, groups: list, threshold: float,
                    n_boot: int = 1000, seed: int = 0, where: str = "these rows") -> dict:
    """AUROC with a cluster-bootstrap 95% CI, TPR/FPR at the probe's calibrated threshold, n, ``n_pos`` /
    ``n_neg``. Below ``metrics.MIN_PER_CLASS`` rows of a class the AUROC, its CI and the rates are None and
    ``reason`` says why, naming ``where`` (else it is None)."""
    if len(set(labels.tolist())) != 2:
        raise ProbeError(f"labels must contain both 0 and 1, got {sorted(set(labels.tolist()))}")
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    why = unreadable(n_pos, n_neg, where)
    if why:
        return {"auroc": None, "auroc_ci": None, "n": int(len(labels)), "n_positive": n_pos, "n_pos": n_pos,
                "n_neg": n_neg, "reason": why, "tpr_at_threshold": None, "fpr_at_threshold": None,
                "threshold": threshold}
    s, y = torch.tensor(scores, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    codes = torch.tensor(np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1])
    counts, _ = cluster_bootstrap_counts(codes, n_boot, torch.Generator().manual_seed(seed))
    lo, hi = bootstrap_ci(bootstrap_auroc(s[None], y, codes, counts)[0])
    pred = scores > threshold
    return {"auroc": float(auroc(s, y)), "auroc_ci": [float(lo), float(hi)], "n": int(len(y)),
            "n_positive": n_pos, "n_pos": n_pos, "n_neg": n_neg, "reason": None,
            "tpr_at_threshold": float(pred[labels == 1].mean()),
            "fpr_at_threshold": float(pred[labels == 0].mean()), "threshold": threshold}


def auroc_text(res: dict) -> str:
    """``AUROC 0.917 (95% CI 0.600-1.000)`` of an :func:`evaluate_scores` result, or why it is not readable."""
    if res["auroc"] is None:
        return f"AUROC {res['reason']}"
    lo, hi = res["auroc_ci"]
    return f"AUROC {res['auroc']:.3f} (95% CI {lo:.3f}-{hi:.3f})"
