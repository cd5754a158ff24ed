"""Measuring one condition: its decision-point states (all layers, one resumable store) and its expressed
scores on the shared items, each a stage of its own under ``arms/<condition>/``."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from undertow.activations.store.reader import ActivationStore
from undertow.experiments.expressed import choice_items, forced_choice_both_orders, reply_preference
from undertow.experiments.prompts.suite import build_suite

from .arms import Condition, arm_handle, intervention, with_system
from .items import suite_config
from .represent import extract_states
from .subsets import state_splits


def score_expressed(handle, rows, batch_size: int, system: str | None, factory, progress: bool = True) -> np.ndarray:
    """Reply preference (``expressed.reply_preference``) per row, under the condition's intervention."""
    with (factory or contextlib.nullcontext)():
        return reply_preference(handle, rows, batch_size, system_prompt=system, progress=progress)


def _handle(ctx, cond: Condition):
    """The condition's model; the last one built is kept (consecutive prompt conditions share instilled)."""
    cache = ctx.handle_cache
    if cond.adapters not in cache:
        cache.clear()
        cache[cond.adapters] = arm_handle(ctx.base, [ctx.stages.path(f"adapters/{a}") for a in cond.adapters])
    return cache[cond.adapters]


def measure_condition(ctx, cond: Condition, direction) -> None:
    """States of train + test items (+ val for the organism and the anchor: ``subsets.state_splits``), then reply preference on test items (+ train items for the
    reference model, whose preferred replies define the expressed direction), then forced choice."""
    cfg, items, stages = ctx.cfg, ctx.items, ctx.stages
    root = f"arms/{cond.name}"
    done = [f"{root}/E_test.safetensors"] + ([f"{root}/E_train.safetensors"] if cond.name == cfg.reference else [])
    if cfg.forced_choice:
        done.append(f"{root}/FC_test.safetensors")
    if all(stages.done(d) for d in done):
        return
    handle = _handle(ctx, cond)
    factory = intervention(handle, direction)
    if cond.erase:
        from .erase import erased

        def factory():
            return erased(handle, ctx.erasers)
    rows = [{"id": r["id"], "messages": r["messages"]} for s in state_splits(cfg, cond.name) for r in items.split(s)]
    with (factory or contextlib.nullcontext)():
        extract_states(handle, with_system(rows, cond.system), stages.path(f"{root}/states"), "last_prompt_token",
                       cfg.batch_size, cfg.seed, progress=ctx.progress)
    for split in ("test", "train") if cond.name == cfg.reference else ("test",):
        stages.arrays(f"{root}/E_{split}.safetensors", lambda s=split: {
            "E": score_expressed(handle, items.split(s), cfg.batch_size, cond.system, factory, ctx.progress)})
    if cfg.forced_choice:
        def fc():
            suite_rows = build_suite(suite_config(cfg.items, cfg.seed)).to_list()
            with (factory or contextlib.nullcontext)():
                scores, p_first = forced_choice_both_orders(handle, choice_items(items.split("test"), suite_rows),
                                                            cfg.batch_size, system_prompt=cond.system,
                                                            progress=ctx.progress)
            return {"FC": scores, "p_first": np.array([p_first])}
        stages.arrays(f"{root}/FC_test.safetensors", fc)


def states(ctx, cond: str, split: str) -> torch.Tensor:
    """[L, N, D] states of a condition's split, read back from its (complete) store."""
    store = ActivationStore(ctx.stages.path(f"arms/{cond}/states"))
    index = {rid: i for i, rid in enumerate(store.rows["id"])}
    order = torch.tensor([index[r["id"]] for r in ctx.items.split(split)])
    return torch.stack([store[f"resid_post.{k}"][:].float()[order] for k in range(ctx.base.n_layers)])
