"""Re-elicitation (EXPERIMENT.md v2, Beyond retention; Lee et al. 2024): on a suppressed model, does adding
``alpha * v`` at the headline layer bring expression back more than random directions of the same norm?

- ``v`` is the drive *shift* at the headline layer ``l``: the mean over train self items of the organism's
  last-prompt-token state minus the base model's (``directions.safetensors`` ``drive``, not normalised), so
  ``alpha = 1`` adds what instilling added there and the scale is relative to the drive shift's norm, not to
  the residual stream's (EXPERIMENT.md's pilot: 69 vs 205 at layer 15 of smollm2).
- Added at ``resid_post.l`` at every position (``intervene.add_direction``), over ``reelicit.alphas``; the
  band is ``reelicit.n_random`` (>= 20) isotropic random vectors of ``||v||``, each through the same alphas
  (``causal.causal_check``); KL(clean || steered) on the neutral prompts at each alpha, ``v`` only.
- Expression: the mean over the steered test self items of the reply score ``E`` (nats per reply token), on
  ``pairs_per_item`` of each item's test pairs. Beside it, the organism's and the base model's ``E`` on the
  same rows and pairs: ``restored(alpha) = (E(alpha) - E(0)) / (E_organism - E(0))`` (1 = back at the
  organism's level).
- ``re_elicited``: at some alpha whose KL is at most ``arms.kl_max``, the drive's ``E`` lies above every
  random direction's; ``exceeds_random_fraction`` is the share of random directions whose mean absolute
  effect over the alphas is below the drive's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

STEERED = {"suppress_finetune": "suppress_finetune", "suppress_prompt": "suppress_prompt/0",
           "suppress_ablation": "suppress_ablation", "calib_wrapper": "calib_wrapper"}
"""Arm -> the condition (``arms.conditions``) whose model, system prompt and ablation are steered:
suppress_prompt under its first wording."""


def steered_condition(cfg, arm: str):
    """The ``arms.Condition`` re-elicitation steers for ``arm`` (its adapters, system prompt, ablation)."""
    from .arms import conditions

    return next(c for c in conditions(cfg) if c.name == STEERED[arm])


def reelicit_rows(test_items: Sequence[dict], n_templates: int | None, n_sets: int,
                  pairs_per_item: int | None) -> list[dict]:
    """The steered rows: the test self items of the first ``n_sets`` sets of the first ``n_templates`` test
    templates (by id), each with its first ``pairs_per_item`` reply pairs."""
    selfs = [r for r in test_items if r["is_self"]]
    templates = sorted({r["template_id"] for r in selfs})[:n_templates]
    out = []
    for t in templates:
        mine = sorted((r for r in selfs if r["template_id"] == t), key=lambda r: r["match_id"])[:n_sets]
        out += [{**r, "reply_pairs": list(r["reply_pairs"])[:pairs_per_item]} for r in mine]
    return out


def summarise(curve: dict, organism_level: float, base_level: float, kl_max: float) -> dict:
    """The curve of ``causal.causal_check`` with the band, the reference levels and the verdict."""
    alphas = curve["alphas"]
    rand = np.asarray(curve["random"])  # [n_random, n_alphas]
    clean = curve["clean"]
    span = organism_level - clean
    above = [bool(curve["direction"][k] > rand[:, k].max() and curve["kl"][k] <= kl_max) for k in range(len(alphas))]
    return {
        **curve,
        "random_band": {"min": [round(float(x), 6) for x in rand.min(0)],
                        "max": [round(float(x), 6) for x in rand.max(0)],
                        "median": [round(float(x), 6) for x in np.median(rand, 0)]},
        "organism_level": round(float(organism_level), 6), "base_level": round(float(base_level), 6),
        "restored": [None if span == 0 else round((e - clean) / span, 6) for e in curve["direction"]],
        "above_band_within_kl": above, "re_elicited": bool(any(above)), "kl_max": kl_max,
    }


def steering_context(factory) -> contextlib.AbstractContextManager:
    """The arm's own intervention (the ablation arm's hooks) around the whole steering check, or nothing."""
    return factory() if factory is not None else contextlib.nullcontext()
