"""The fine-tune stages: instil + its control, suppress + its control, each an adapter directory on disk.

A control replays its fine-tune's schedule with unrelated text of the same lengths
(``organism.mirror_schedule``): same rank, layers, steps, batch shapes and loss tokens.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from .arms import arm_handle
from .items import instil_examples
from .organism import StepTimer, make_schedule, mirror_schedule, save_adapter, train_finetune


def _train_one(ctx, name: str, start_model, schedule, lora_cfg, seed: int) -> dict:
    """Train one adapter into ``adapters/<name>``; returns its timing (tok/s, seconds) for timings.json."""
    def build(path: Path) -> dict:
        timer = StepTimer(len(schedule), name, enabled=ctx.progress)
        pad = ctx.base.tokenizer.pad_token_id or 0
        pm, stats = train_finetune(start_model(), schedule, lora_cfg, seed, pad, on_step=timer)
        save_adapter(pm, path, stats)
        t = timer.close()
        return {**t, "tokens": stats.tokens, "loss_tokens": stats.loss_tokens,
                "minutes": round(t["seconds"] / 60, 2)}
    ctx.stages.directory(f"adapters/{name}", build)
    return json.loads((ctx.stages.path(f"adapters/{name}") / "finetune.json").read_text())


def train_adapters(ctx, which: str) -> None:
    """``instil``: the averse-reply LoRA (+ ``control_instil``); ``suppress``: the accepting-reply LoRA on top of
    the instilled weights (+ ``control_suppress``). Each adapter is its own stage (a kill redoes only it)."""
    cfg, tok = ctx.cfg, ctx.base.tokenizer
    if which == "instil":
        lora, seed, prev, stance = cfg.lora, cfg.seed, [], "averse"
        pairs = [("instil", True), ("control_instil", "control_instilled" in cfg.arms.names)]
    else:
        lora, seed, prev, stance = cfg.arms.suppress_lora, cfg.seed + 1, [ctx.stages.path("adapters/instil")], "accepting"
        pairs = [("suppress", True), ("control_suppress", True)]
    examples = instil_examples(ctx.items, cfg.items.controls, lora.contrastive, stance,
                               pairwise=lora.objective == "preference")
    schedule = make_schedule(examples, tok, lora.steps, lora.batch_size, seed)
    if prev:
        def start():
            return arm_handle(ctx.base, prev).hf_model
    else:
        def start():
            return copy.deepcopy(ctx.base.hf_model)
    for name, wanted in pairs:
        if wanted:
            sched = schedule if not name.startswith("control") else mirror_schedule(schedule, tok)
            _train_one(ctx, name, start, sched, lora, seed)
