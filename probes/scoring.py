"""Metrics of a probe's scores on labelled rows: AUROC with a cluster-bootstrap CI, rates at its threshold."""

from __future__ import annotations

import numpy as np
import torch

from .errors import ProbeError
from .metrics import auroc, bootstrap_auroc, bootstrap_ci, cluster_bootstrap_counts

__all__ = ["evaluate_scores"]


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
