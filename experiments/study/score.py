"""Score a saved probe on new rows: extract them at the probe's hook and position, then project."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from undertow.activations.engine.config import RowOptions
from undertow.probes import Probe, ProbeError

__all__ = ["probe_scores"]


def probe_scores(probe: Probe, rows, model: str | None = None, batch_size: int = 32,
                 options: RowOptions | None = None) -> np.ndarray:
    """Extract ``rows`` at the probe's hook and position with the engine (``options``: how the rows are taken,
    e.g. ``truncate``), and score them."""
    from undertow.activations import load_model
    from undertow.activations.engine.config import ExtractConfig
    from undertow.activations.engine.extraction import extract

    model = model or probe.extra.get("model")
    if not model:
        raise ProbeError("the probe does not record its model; pass --model NAME_OR_PATH")
    handle = load_model(model)
    if probe.model_fingerprint and probe.model_fingerprint != handle.fingerprint:
        raise ProbeError(f"probe was trained on {probe.model_fingerprint} but {model} is {handle.fingerprint}; "
                         "use that model or a probe trained on this one")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtractConfig(**(options or RowOptions()).to_dict(), model=model, hooks=[probe.hook],
                            positions=[probe.position or "last_prompt_token"], dtype="float32",
                            out_dir=str(Path(tmp) / "store"), batch_size=batch_size)
        store = extract(handle, rows, cfg)
        return probe.score(torch.as_tensor(store[probe.hook][:])).numpy()
