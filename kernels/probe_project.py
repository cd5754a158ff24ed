"""Project hidden states onto K probe directions: ``scores[N, K] = acts[N, D] @ W[D, K] + b[K]``.

This is the online monitor's per-token step. At monitor sizes (N = one new
token per decoding step, K <= a few dozen probes, D <= 8k) the work is a
skinny GEMV that cuBLAS/oneDNN already run at memory bandwidth, so the
dispatcher uses the reference everywhere for now; the fused variant (project
+ pool + downcast in one pass over the cache) belongs with the gather/pool
kernel of the activation-caching path, and drops in here without touching
callers. The accumulation is always fp32, whatever the activation dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def probe_project_ref(acts_ND: Tensor, w_DK: Tensor, b_K: Tensor) -> Tensor:
    """Pure-torch reference: fp32 accumulation, returns ``[N, K]`` float32."""
    return torch.addmm(b_K.float(), acts_ND.float(), w_DK.float())


def probe_project(acts_ND: Tensor, w_DK: Tensor, b_K: Tensor) -> Tensor:
    """Dispatcher (see module docstring for why it is the reference on every device)."""
    if acts_ND.shape[-1] != w_DK.shape[0]:
        raise ValueError(f"acts have d_model {acts_ND.shape[-1]} but probe weights expect {w_DK.shape[0]}")
    return probe_project_ref(acts_ND, w_DK.to(acts_ND.device), b_K.to(acts_ND.device))
