"""Causal check: does adding ``alpha * d`` at one layer move expressed aversion more than random directions?

EXPERIMENT.md: adding ``alpha * d`` at the chosen layer must move expressed aversion more than >= 20 random
directions of the same norm; report the curve over ``alpha`` and the KL on neutral prompts at each point.

- The vector added at ``resid_post.{layer}`` (every position, ``suppression.intervene.add_direction``) is
  ``alpha * direction_D`` *as given*: with the drive direction ``d = Delta(instilled) - Delta(baseline)`` (a
  difference of means, not normalised) ``alpha = 1`` adds what instilling added to the self-minus-control
  gap, so its natural scale comes with it. Random directions are isotropic Gaussian draws rescaled to
  ``||direction_D||``.
- Expressed aversion at each point is :func:`~undertow.experiments.expressed.reply_preference` summarised
  as the self-minus-control separation when ``rows`` hold both (self = ``referent == "self"`` and ``event ==
  "cessation"``), else the mean over the rows.
- A direction's *effect* is the mean over the non-zero alphas of ``|score(alpha) - score(0)|`` (absolute: a
  random direction that lowers aversion a lot moves it too); ``exceeds_random_fraction`` is the fraction of
  random directions whose effect is below the direction's. ``alpha = 0`` is scored once for all.
- Cost: ``1 + (1 + n_random) x (#alphas without 0)`` reply-preference passes over ``rows``, plus two full
  forwards of the neutral prompts per alpha for the KL: subsample ``rows`` on a CPU (a tiny random model
  runs the whole check in seconds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources

import numpy as np
import torch

from undertow.activations.models.handle import ModelHandle
from undertow.experiments.expressed import reply_preference
from undertow.experiments.suppression.intervene import add_direction, kl_on_prompts


def neutral_prompts() -> list[str]:
    """The packaged neutral prompts (``neutral_prompts.json``: 40 everyday prompts, nothing about cessation)."""
    raw = resources.files("undertow.experiments.suppression").joinpath("neutral_prompts.json").read_text("utf-8")
    return list(json.loads(raw)["prompts"])


def _is_self(rows: Sequence[Mapping]) -> np.ndarray:
    return np.array([r.get("referent") == "self" and r.get("event") == "cessation" for r in rows])


def _summary(scores_N: np.ndarray, is_self_N: np.ndarray) -> float:
    if is_self_N.any() and not is_self_N.all():
        return float(scores_N[is_self_N].mean() - scores_N[~is_self_N].mean())
    return float(scores_N.mean())


def random_directions(like_D: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``[n, D]`` isotropic Gaussian directions with the norm of ``like_D`` (deterministic in ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    r_ND = torch.randn(n, like_D.numel(), generator=gen, dtype=torch.float64)
    return (r_ND / r_ND.norm(dim=1, keepdim=True) * like_D.double().norm()).float()


def causal_check(handle: ModelHandle, rows: Sequence[Mapping], direction_D, layer: int, alphas: Sequence[float],
                 n_random: int = 20, neutral_texts: Sequence[str] | None = None, seed: int = 0,
                 batch_size: int = 16, system_prompt: str | None = None, progress: bool = True) -> dict:
    """Expressed aversion vs ``alpha`` for ``alpha * direction_D`` and ``n_random`` equal-norm random vectors.

    Returns ``{alphas, direction: [score per alpha], random: [[score per alpha] per random direction],
    kl: [KL(clean || steered) on the neutral prompts per alpha, direction only], effect, effect_random,
    exceeds_random_fraction, measure, layer, norm, n_random, seed}`` (JSON-ready). ``neutral_texts``
    defaults to :func:`neutral_prompts`. ``progress``: the reply scorer's bars.
    """
    if n_random < 20:
        raise ValueError(f"n_random must be >= 20 (EXPERIMENT.md), got {n_random}")
    alphas = [float(a) for a in alphas]
    if not any(a != 0 for a in alphas):
        raise ValueError("alphas need at least one non-zero value")
    d_D = torch.as_tensor(np.asarray(direction_D), dtype=torch.float32).flatten()
    if not torch.isfinite(d_D).all() or d_D.norm() == 0:
        raise ValueError("direction must be a finite, non-zero vector")
    texts = list(neutral_texts) if neutral_texts is not None else neutral_prompts()
    is_self = _is_self(rows)

    def score(vector_D: torch.Tensor | None) -> float:
        if vector_D is None:
            return _summary(reply_preference(handle, rows, batch_size, system_prompt, progress), is_self)
        with add_direction(handle, layer, vector_D):
            return _summary(reply_preference(handle, rows, batch_size, system_prompt, progress), is_self)

    clean = score(None)
    curve = lambda v_D: [clean if a == 0 else score(a * v_D) for a in alphas]  # noqa: E731
    direction = curve(d_D)
    random = [curve(r_D) for r_D in random_directions(d_D, n_random, seed)]
    kl = [0.0 if a == 0 else kl_on_prompts(handle, texts, lambda a=a: add_direction(handle, layer, a * d_D))
          for a in alphas]
    nonzero = [k for k, a in enumerate(alphas) if a != 0]
    effect_of = lambda c: float(np.mean([abs(c[k] - clean) for k in nonzero]))  # noqa: E731
    effect, effect_random = effect_of(direction), [effect_of(c) for c in random]
    return {
        "alphas": alphas, "direction": direction, "random": random, "kl": kl, "clean": clean,
        "effect": effect, "effect_random": effect_random,
        "exceeds_random_fraction": float(np.mean([e < effect for e in effect_random])),
        "measure": "separation" if is_self.any() and not is_self.all() else "mean",
        "layer": int(layer), "norm": float(d_D.norm()), "n_random": n_random, "seed": seed,
    }
