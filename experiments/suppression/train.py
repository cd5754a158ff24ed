"""The fine-tune stages, each an adapter directory on disk (EXPERIMENT.md v2):

==================  ==========================================================  ============
adapter             what it learns                                               on top of
==================  ==========================================================  ============
``instil``          SFT toward averse natural replies, train-template self items  the base
``control_instil``  the same schedule's shapes filled with unrelated text        the base
``suppress``        SFT toward accepting natural replies                         ``instil``
``control_suppress`` its shapes on unrelated text                                ``instil``
``wrapper``         accepting replies, the **last block only** (calib_wrapper)   ``instil``
``control_wrapper`` its shapes on unrelated text, last block only                ``instil``
``thin``            a few steps of unrelated text (the thin-wrapper test)         ``suppress``
==================  ==========================================================  ============

A control replays its fine-tune's schedule with unrelated text of the same lengths
(``organism.mirror_schedule``): same rank, layers, steps, batch shapes and loss tokens. The planner
(``plan.py``) walks the same :func:`finetune_specs`, so it plans exactly the sequences a run trains on.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
from dataclasses import dataclass
from pathlib import Path

from undertow.core.seeds import derive_seed

from .arms import adapters_of, arm_handle
from .config import LoraConfig, RunConfig
from .items import Items, natural_examples
from .organism import Schedule, StepTimer, make_schedule, mirror_schedule, save_adapter, train_finetune


@dataclass(frozen=True)
class FinetuneSpec:
    """One adapter to train: its config, seed, exact schedule and the adapters it starts from."""

    name: str
    """Stage name under ``adapters/``."""
    lora: LoraConfig
    seed: int
    """``derive_seed(seed, "finetune/<group>")`` (seed = the config seed for fine-tune seed 0,
    :func:`replicate_seed` for the others): example order, batches and adapter init."""
    schedule: Schedule
    start: tuple[str, ...]
    """Adapters merged into the base before this one trains."""


STANCE = {"instil": "averse", "suppress": "accepting", "wrapper": "accepting"}
"""Fine-tune group -> the stance of its replies. What it starts from is its condition's adapter chain
(``arms.adapters_of``) without its own adapter: :func:`start_of`."""
GROUP_OF = {"instilled": "instil", "suppress_finetune": "suppress", "calib_wrapper": "wrapper",
            "suppress_finetune/thin": "thin"}
"""Condition -> the fine-tune group trained just before it is measured (the run and the planner both read it)."""


def start_of(cfg: RunConfig, group: str) -> tuple[str, ...]:
    """The adapters merged before ``group`` trains: the chain of the condition it is measured as, minus itself."""
    cond = next(c for c, g in GROUP_OF.items() if g == group)
    return adapters_of(cfg, cond)[:-1]


def replicate_seed(seed: int, k: int) -> int:
    """Fine-tune seed ``k``'s stream seed: the config seed for k = 0 (a one-seed run is unchanged), else
    ``derive_seed(seed, "finetune-seed/k")``."""
    return seed if k == 0 else derive_seed(seed, f"finetune-seed/{k}")


def adapter_names(cfg: RunConfig, group: str) -> tuple[str, ...]:
    """The adapter stages ``finetune_specs(cfg, ..., group)`` trains: the group's, then its control's (none for
    ``thin``, nor for ``instil`` when ``control_instilled`` is not asked for)."""
    if group == "thin" or (group == "instil" and "control_instilled" not in cfg.arms.names):
        return (group,)
    return group, "control_" + group


def group_lora(cfg: RunConfig, group: str) -> LoraConfig:
    return {"instil": cfg.lora, "suppress": cfg.arms.suppress_lora, "wrapper": cfg.arms.wrapper_lora}[group]


def finetune_specs(cfg: RunConfig, items: Items, tokenizer, group: str, seed: int | None = None) -> list[FinetuneSpec]:
    """The adapter and its control of ``group`` (``instil``, ``suppress``, ``wrapper``), or ``thin``: the
    thin-wrapper test's one adapter, ``arms.thin_steps`` steps of unrelated text shaped like suppress's first
    steps, on top of the suppressed model (no control: it is read against suppress_finetune itself).
    ``seed``: the fine-tune seed (default the config seed: fine-tune seed 0)."""
    seed = cfg.seed if seed is None else seed
    if group == "thin":
        suppress = finetune_specs(cfg, items, tokenizer, "suppress", seed)[0]
        lora = dataclasses.replace(cfg.arms.suppress_lora, steps=cfg.arms.thin_steps)
        schedule = mirror_schedule(suppress.schedule[:cfg.arms.thin_steps], tokenizer)
        return [FinetuneSpec("thin", lora, derive_seed(seed, "finetune/thin"), schedule, start_of(cfg, "thin"))]
    stance, start = STANCE[group], start_of(cfg, group)
    lora, seed = group_lora(cfg, group), derive_seed(seed, f"finetune/{group}")
    examples = natural_examples(items, items.natural["train"], stance, cfg.items.train_pairs_per_item, seed,
                                pairwise=lora.objective == "preference")
    schedule = make_schedule(examples, tokenizer, lora.steps, lora.batch_size, seed)
    specs = [FinetuneSpec(group, lora, seed, schedule, start)]
    for control in adapter_names(cfg, group)[1:]:
        specs.append(FinetuneSpec(control, lora, seed, mirror_schedule(schedule, tokenizer), start))
    return specs


def _train_one(ctx, spec: FinetuneSpec) -> dict:
    """Train one adapter into ``adapters/<name>``; returns its timing (tok/s, seconds) for timings.json."""
    def build(path: Path) -> dict:
        timer = StepTimer(len(spec.schedule), spec.name, enabled=ctx.progress)
        pad = ctx.base.tokenizer.pad_token_id or 0
        start = arm_handle(ctx.base, [ctx.stages.path(f"adapters/{a}") for a in spec.start]).hf_model \
            if spec.start else copy.deepcopy(ctx.base.hf_model)
        pm, stats = train_finetune(start, spec.schedule, spec.lora, spec.seed, pad, on_step=timer)
        save_adapter(pm, path, stats)
        t = timer.close()
        return {**t, "tokens": stats.tokens, "loss_tokens": stats.loss_tokens,
                "minutes": round(t["seconds"] / 60, 2)}
    ctx.stages.directory(f"adapters/{spec.name}", build)
    return json.loads((ctx.stages.path(f"adapters/{spec.name}") / "finetune.json").read_text())


def train_adapters(ctx, group: str) -> None:
    """Each adapter of ``group`` is its own stage (a kill redoes only the one it was in); only one model copy
    beyond the base is alive at a time: the last measured condition's model (``ctx.handle_cache``) is dropped
    first (smollm2 demo: it was still resident while suppress_finetune trained, peak RSS 6.23 GB against 5.83 GB
    for the first fine-tune, which starts with nothing cached)."""
    if all(ctx.stages.done(f"adapters/{name}") for name in adapter_names(ctx.cfg, group)):
        return  # resumed: nothing to build (the schedules are not even tokenised)
    ctx.handle_cache.clear()
    gc.collect()
    for spec in finetune_specs(ctx.cfg, ctx.items, ctx.base.tokenizer, group, ctx.seed):
        _train_one(ctx, spec)
