"""SAE-feature probes vs raw-activation probes, on identical splits.

One ``undertow.probes.sweep`` over a ``TensorStore`` holding three "hooks" for the same rows:
``raw`` (the residual vectors), ``sae`` (all feature activations) and ``sae_top{k}`` (the ``k``
features that separate the classes best on the *train* split alone: Kantamneni et al. 2025's k-sparse
SAE probe). One sweep means one split plan, the same grouped folds, bootstrap and permutations for all
three, so the rows of the table differ only in the representation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from undertow.probes import TensorStore, sweep
from undertow.probes.metrics import auroc

from .errors import SAEError

COLUMNS = ("hook", "probe_type", "cv_auroc_mean", "val_auroc", "test_auroc", "test_auroc_lo", "test_auroc_hi",
           "selectivity")


@dataclass
class ProbeComparison:
    """The sweep table restricted to the comparison's columns, plus what ``sae_top{k}`` used."""

    table: list[dict]
    top_features: list[int]
    """Features of the k-sparse probe (chosen on train rows only)."""
    n_rows: int

    def format(self) -> str:
        lines = [" | ".join(COLUMNS), " | ".join("---" for _ in COLUMNS)]
        for r in self.table:
            lines.append(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS))
        return "\n".join(lines)


def train_top_features(feats_NF: Tensor, labels: np.ndarray, train: np.ndarray, k: int) -> list[int]:
    """The ``k`` features with the largest |train AUROC - 0.5| (train rows only: no test leakage)."""
    s = feats_NF[torch.as_tensor(train)].T.double()
    au = auroc(s, torch.as_tensor(labels[train]))
    score = torch.where((s != 0).any(1), (au - 0.5).abs(), -1.0)
    return torch.argsort(score, descending=True)[:k].tolist()


def compare_probes(raw_ND: Tensor, feats_NF: Tensor, rows: Mapping[str, list], *, k: int = 16,
                   probe_types: tuple[str, ...] = ("logistic", "diff_means"), **sweep_overrides) -> ProbeComparison:
    """Sweep raw vs SAE-feature vs k-sparse SAE probes on ``rows`` (``label``, ``template_id``, ``split``)."""
    if len(raw_ND) != len(feats_NF):
        raise SAEError(f"raw activations ({len(raw_ND)} rows) and SAE features ({len(feats_NF)}) must be the same rows")
    labels = np.asarray(rows["label"])
    splits = np.asarray(rows.get("split") or ["train"] * len(labels)).astype(str)
    train = np.flatnonzero(splits == "train")
    if len(np.unique(labels[train])) < 2:
        raise SAEError("the train split needs both classes to pick the k-sparse probe's features")
    top = train_top_features(feats_NF, labels, train, k)
    source = TensorStore({"raw": raw_ND.float(), "sae": feats_NF.float(), f"sae_top{k}": feats_NF[:, top].float()},
                         rows)
    res = sweep(source, probe_types=probe_types, **sweep_overrides)
    table = [{c: r.get(c) for c in COLUMNS} for r in res.table]
    return ProbeComparison(table, top, len(labels))
