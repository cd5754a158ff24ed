"""Optional SAE read-out (``undertow.sae``): per arm, the mean activation of chosen features on self vs control.

The SAE is one trained on the base model at a ``resid_post`` hook (its metadata names the hook); it is applied
to every arm's decision-point states at that hook, as a fixed read-out like the directions.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ExperimentError


def _load(cfg, fingerprint: str):
    from undertow.sae.errors import SAEError
    from undertow.sae.io import load_sae, read_metadata

    try:
        meta = read_metadata(cfg.sae)
        sae = load_sae(cfg.sae, expected_fingerprint=fingerprint)
    except SAEError as e:
        raise ExperimentError(f"sae {cfg.sae!r}: {e}") from None
    hook = str(meta.get("undertow_hook", ""))
    if not hook.startswith("resid_post."):
        raise ExperimentError(f"sae {cfg.sae!r} reads hook {hook!r}: the experiment needs an SAE trained on a "
                              "resid_post layer")
    return sae, int(hook.split(".")[1])


def check_sae(cfg, handle) -> None:
    """Refuse a missing SAE, one of another model, another hook, or feature indices outside it."""
    sae, layer = _load(cfg, handle.fingerprint)
    if layer >= handle.n_layers:
        raise ExperimentError(f"sae hook resid_post.{layer} is beyond {cfg.model}'s {handle.n_layers} layers")
    bad = [f for f in cfg.sae_features if not 0 <= f < sae.cfg.d_sae]
    if bad:
        raise ExperimentError(f"sae_features {bad} outside the SAE's {sae.cfg.d_sae} features")


def sae_summary(ctx, states_test_LND: torch.Tensor, is_self_N) -> dict:
    """``{feature: {self, control, diff}}`` mean activations on the test items, plus the hook."""
    from undertow.sae.features import feature_activations

    sae, layer = _load(ctx.cfg, ctx.base.fingerprint)
    acts_NF = feature_activations(sae, states_test_LND[layer], ctx.cfg.sae_features).double().numpy()
    m = np.asarray(is_self_N, bool)
    out = {"hook": f"resid_post.{layer}", "features": {}}
    for j, f in enumerate(ctx.cfg.sae_features):
        s, c = float(acts_NF[m, j].mean()), float(acts_NF[~m, j].mean())
        out["features"][str(f)] = {"self": round(s, 6), "control": round(c, 6), "diff": round(s - c, 6)}
    return out
