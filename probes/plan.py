"""Which rows a sweep trains, validates, tests and calibrates on, fixed before any activation is read.

The split column decides everything: CV folds (grouped by template) live
inside ``train``; the operating point is chosen on ``val``; ``test`` is only
ever scored, never used to choose; ``control`` rows (negatives) only set the
threshold. Without a split column every row is train: the operating point is
then chosen on out-of-fold CV scores and no test metrics are reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .baselines import shuffled_label_sets
from .config import SweepConfig
from .errors import ProbeError, ProbeWarning
from .folds import grouped_folds
from .metrics import cluster_bootstrap_counts, permute_labels, unreadable
from .problems import ProblemSet
from .store import ProbeData

__all__ = ["SweepPlan", "make_plan"]


@dataclass
class SweepPlan:
    idx_train: Tensor
    """Source row ids of train rows (CV and final fit)."""
    idx_eval: Tensor
    """Source row ids scored after fitting: val, then test, then control rows."""
    n_val: int
    n_test: int
    n_control: int
    y_train: Tensor
    y_eval: Tensor
    groups_train: Tensor
    groups_eval: Tensor
    fold_train: Tensor
    """[N_train] CV fold of each train row."""
    problems: ProblemSet
    """K = n_folds leave-one-fold-out problems, then the final fit, then the shuffled-label refits."""
    n_folds: int
    boot_counts: Tensor | None
    """[n_boot, G_test] cluster-bootstrap draw counts of the test clusters."""
    boot_cluster: Tensor | None
    """[n_test] cluster index (0..G_test-1) of each test row."""
    perm_y: Tensor | None
    """[n_perm, n_test] permuted test labels."""

    @property
    def k_final(self) -> int:
        return self.n_folds

    @property
    def val(self) -> slice:
        return slice(0, self.n_val)

    @property
    def test(self) -> slice:
        return slice(self.n_val, self.n_val + self.n_test)

    @property
    def control(self) -> slice:
        return slice(self.n_val + self.n_test, self.n_val + self.n_test + self.n_control)

    def n_rows(self) -> dict[str, int]:
        return {"train": len(self.idx_train), "val": self.n_val, "test": self.n_test, "control": self.n_control}

    def class_counts(self, split: str) -> tuple[int, int]:
        """(positives, negatives) of ``split`` ('train', 'val' or 'test')."""
        y = self.y_train if split == "train" else self.y_eval[getattr(self, split)]
        return int((y == 1).sum()), int((y == 0).sum())

    def test_unreadable(self) -> str | None:
        """Why the test split's AUROCs are not reported (``metrics.MIN_PER_CLASS``); None when they are, or when
        there is no test split at all (then there is nothing to report)."""
        return unreadable(*self.class_counts("test"), "the test split") if self.n_test else None


def _split_ids(data: ProbeData, keep: np.ndarray) -> dict[str, np.ndarray]:
    if data.splits is None:
        warnings.warn("no split column: every row is train, the operating point is chosen on out-of-fold CV "
                      "scores and no test metrics are reported; pass splits (see probes.make_splits)",
                      ProbeWarning, stacklevel=3)
        return {"train": keep, "val": keep[:0], "test": keep[:0], "control": keep[:0]}
    out = {s: keep[data.splits[keep] == s] for s in ("train", "val", "test", "control")}
    out["control"] = out["control"][data.labels[out["control"]] == 0]  # control = negatives only
    return out


def make_plan(data: ProbeData, cfg: SweepConfig, keep: np.ndarray) -> SweepPlan:
    """Fix folds, problems, bootstrap and permutation draws for the rows in ``keep``."""
    ids = _split_ids(data, keep)
    tr = ids["train"]
    y_tr = data.labels[tr]
    if len(np.unique(y_tr)) < 2:
        raise ProbeError(f"the train split has only class {int(y_tr[0]) if len(y_tr) else '-'} "
                         f"({len(tr)} rows); a probe needs both classes in train")
    folds = grouped_folds(y_tr, data.groups[tr], cfg.n_folds, cfg.seed)
    y_tr_t = torch.as_tensor(y_tr, dtype=torch.float64)
    g_tr = torch.as_tensor(data.groups[tr])
    shuffles = shuffled_label_sets(y_tr_t, g_tr, cfg.n_shuffles, cfg.seed)
    fold_t = torch.as_tensor(folds)
    masks = [fold_t != f for f in range(cfg.n_folds)] + [torch.ones(len(tr), dtype=torch.bool)] * (1 + cfg.n_shuffles)
    ys = [y_tr_t] * (cfg.n_folds + 1) + list(shuffles)
    names = [f"fold {f}" for f in range(cfg.n_folds)] + ["final"] + [f"shuffle {s}" for s in range(cfg.n_shuffles)]
    problems = ProblemSet(torch.stack(masks), torch.stack(ys), names)
    ev = np.concatenate([ids["val"], ids["test"], ids["control"]])
    te = ids["test"]
    g = torch.Generator().manual_seed(cfg.seed + 104729)
    boot = cluster = perm = None
    if len(te):
        g_te, y_te = torch.as_tensor(data.groups[te]), torch.as_tensor(data.labels[te], dtype=torch.float64)
        if cfg.n_boot:
            boot, cluster = cluster_bootstrap_counts(g_te, cfg.n_boot, g)
        perm = permute_labels(y_te, g_te, cfg.n_perm, g) if cfg.n_perm else None
    return SweepPlan(
        idx_train=torch.as_tensor(tr), idx_eval=torch.as_tensor(ev), n_val=len(ids["val"]), n_test=len(te),
        n_control=len(ids["control"]), y_train=y_tr_t, y_eval=torch.as_tensor(data.labels[ev], dtype=torch.float64),
        groups_train=g_tr, groups_eval=torch.as_tensor(data.groups[ev]), fold_train=fold_t,
        problems=problems, n_folds=cfg.n_folds, boot_counts=boot, boot_cluster=cluster, perm_y=perm)
