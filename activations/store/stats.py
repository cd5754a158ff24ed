"""Running per-feature mean / variance: Chan et al.'s parallel merge of Welford moments.

A ``Moments`` is (count, mean_D, m2_D) in fp32 (count int). Batches merge in
batch order, shards in shard order, so the final numbers depend only on the
shard plan, never on how many ranks ran it or where a run was resumed: the
store's stats are byte-identical across those.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Moments:
    """Sample count, mean and sum of squared deviations (M2) of D features."""

    count: Tensor
    """int64 scalar."""
    mean_D: Tensor
    """fp32 [D]."""
    m2_D: Tensor
    """fp32 [D]."""

    @classmethod
    def zeros(cls, d: int, device: torch.device | str = "cpu") -> Moments:
        return cls(torch.zeros((), dtype=torch.int64, device=device), torch.zeros(d, device=device),
                   torch.zeros(d, device=device))

    @classmethod
    def from_slots(cls, count_P: Tensor, mean_PD: Tensor, m2_PD: Tensor) -> Moments:
        """Pool P slots' moments into one (vectorised Chan merge; no host sync)."""
        n = count_P.sum()
        count_f = count_P.float()
        w_P = count_f / n.clamp(min=1)  # int64 promoted to fp32 in the kernel: the same bits as .float()
        mean_D = (w_P[:, None] * mean_PD).sum(0)
        delta_PD = mean_PD - mean_D
        m2_D = m2_PD.sum(0) + (count_f[:, None] * delta_PD * delta_PD).sum(0)
        return cls(n, mean_D, m2_D)

    def merge(self, other: Moments) -> Moments:
        """Chan's pairwise merge; a zero-count side leaves the other unchanged."""
        n = self.count + other.count
        frac = other.count.float() / n.clamp(min=1).float()
        delta_D = other.mean_D - self.mean_D
        mean_D = self.mean_D + delta_D * frac
        m2_D = self.m2_D + other.m2_D + delta_D * delta_D * self.count.float() * frac
        return Moments(n, mean_D, m2_D)

    @property
    def var_D(self) -> Tensor:
        """Population variance (M2 / n); zeros when no sample."""
        return self.m2_D / self.count.clamp(min=1).float()

    def cpu(self) -> Moments:
        return Moments(self.count.cpu(), self.mean_D.cpu(), self.m2_D.cpu())

    def to_tensors(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}count": self.count.reshape(1).cpu(), f"{prefix}mean": self.mean_D.cpu().contiguous(),
                f"{prefix}m2": self.m2_D.cpu().contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], prefix: str) -> Moments:
        return cls(tensors[f"{prefix}count"].reshape(()), tensors[f"{prefix}mean"], tensors[f"{prefix}m2"])
