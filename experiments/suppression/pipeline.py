"""The run's stages as one typed list: ``undertow run`` executes it (``run.run_experiment``) and ``undertow run
--dry-run`` plans it (``plan._Planner.walk``), entry by entry, so a new arm is one entry here and the plan
cannot drift from the run.

Three parts: ``first`` (the base model's instrument check), ``per_seed`` (every fine-tune, condition and
fitted object of one fine-tune seed, in run order; entries marked ``shared`` are the base model's own and run
under seed 0 only) and ``last`` (the causal check and re-elicitation, on seed 0's models).

Each entry's ``run(ctx)`` computes or loads its cached result (``cache``, under the run directory or the seed's
``replicates/<k>/``) and hands it on through the context (``ctx.dirs``, ``ctx.layer``, ``ctx.choice``...); its
``plan(planner)`` adds the forward passes and fine-tune steps it will cost to the dry-run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .arms import Condition, conditions
from .compute import (
    ablation_direction,
    causal_stage,
    choose_ablation,
    choose_layer,
    compute_directions,
    fit_erasers_stage,
    instrument_stage,
    reelicit_stage,
)
from .config import RunConfig
from .instrument import InstrumentCheck
from .measure import measure_condition
from .records import AblationChoice, LayerChoice
from .train import GROUP_OF, adapter_names, train_adapters


@dataclass(frozen=True)
class Stage:
    """One entry of the stage list."""

    name: str
    """As the plan table and the stage bar name it."""
    cache: str
    """The file or directory (relative to the run or the seed's directory) that holds its result."""
    run: Callable
    """``run(ctx) -> None``: compute (or load) the result and set it on the context."""
    plan: Callable
    """``plan(planner) -> None``: add its cost to the dry-run (``plan._Planner``)."""
    shared: bool = False
    """The base model's own stage: computed once per run (under fine-tune seed 0), read by every seed."""


@dataclass(frozen=True)
class StageList:
    first: list[Stage]
    per_seed: list[Stage]
    last: list[Stage]

    def count(self, n_seeds: int) -> int:
        """Stages a run of ``n_seeds`` fine-tune seeds executes."""
        return (len(self.first) + len(self.last) + len(self.per_seed)
                + (n_seeds - 1) * sum(not s.shared for s in self.per_seed))


def _instrument(ctx) -> None:
    ctx.instrument = ctx.stages.record("instrument.json", InstrumentCheck, lambda: instrument_stage(ctx))


def _finetune(group: str) -> Callable:
    return lambda ctx: train_adapters(ctx, group)


def _erasers(ctx) -> None:
    from .erase import erasers_from_tensors

    ctx.erasers = erasers_from_tensors(ctx.stages.arrays("erasers.safetensors", lambda: fit_erasers_stage(ctx)))


def _ablation_choice(ctx) -> None:
    ctx.choice = ctx.stages.record("ablation_choice.json", AblationChoice, lambda: choose_ablation(ctx))


def _measure(cond: Condition) -> Callable:
    def run(ctx) -> None:
        if cond.ablate and ctx.choice.refused:
            return  # no candidate passed the KL filter (ablation_choice.json says so): the arm is not measured
        measure_condition(ctx, cond, ablation_direction(cond, ctx.dirs, ctx.choice, ctx.seed, ctx.base.d_model)
                          if cond.ablate else None)
    return run


def _directions(ctx) -> None:
    ctx.dirs = ctx.stages.arrays("directions.safetensors", lambda: compute_directions(ctx))
    ctx.layer = ctx.stages.record("layer.json", LayerChoice, lambda: choose_layer(ctx))


def _causal(ctx) -> None:
    ctx.causal = ctx.stages.json("causal.json", lambda: causal_stage(ctx))


def _reelicit(arm: str) -> Callable:
    def run(ctx) -> None:
        if arm == "suppress_ablation" and (ctx.choice is None or ctx.choice.refused):
            ctx.reelicit[arm] = {"skipped": "the ablation arm was refused (no candidate passed the KL filter)"}
        else:
            ctx.reelicit[arm] = ctx.stages.json(f"reelicit/{arm}.json", lambda: reelicit_stage(ctx, arm))
    return run


def _skipped(arm: str, why: str) -> Callable:
    def run(ctx) -> None:
        ctx.reelicit[arm] = {"skipped": why}
    return run


def _nothing(planner) -> None:
    """Planned nothing: the stage makes no forward pass."""


def stage_list(cfg: RunConfig) -> StageList:
    """Every stage ``cfg`` runs, in order. ``arms.organism: auto`` is listed as ``instil`` (the upper bound:
    ``run_experiment`` lists the stages again once the instrument check has decided)."""
    # the drive direction needs the organism's and the anchor's train states: instilled, or both personas
    directions_after = "instilled" if cfg.reference == "instilled" else "persona/welcome"
    first = [Stage("instrument check", "instrument.json", _instrument, lambda p: p.instrument(), shared=True)] \
        if cfg.instrument.enabled else []
    per_seed: list[Stage] = []
    erasers = choice = False
    for cond in conditions(cfg):
        if cond.name in GROUP_OF:
            group = GROUP_OF[cond.name]
            per_seed.append(Stage(f"fine-tune {'+'.join(adapter_names(cfg, group))}", f"adapters/{group}",
                                  _finetune(group), lambda p, g=group: p.finetune(g)))
        if cond.erase and not erasers:
            erasers = True
            per_seed.append(Stage("fit erasers", "erasers.safetensors", _erasers, lambda p: p.erasers()))
        if cond.ablate and not choice:
            choice = True
            per_seed.append(Stage("ablation choice", "ablation_choice.json", _ablation_choice,
                                  lambda p: p.ablation_choice()))
        per_seed.append(Stage(f"measure {cond.name}", f"arms/{cond.name}", _measure(cond),
                              lambda p, c=cond: p.measure(c), shared=cond.name == "baseline" or cond.arm == "persona"))
        if cond.name == directions_after:
            per_seed.append(Stage("directions and layer", "directions.safetensors", _directions,
                                  lambda p: p.directions()))
    last = []
    if cfg.causal.enabled:
        last.append(Stage("causal check", "causal.json", _causal, lambda p: p.causal()))
    if cfg.reelicit.enabled:
        for arm in cfg.reelicit.arms:
            if arm in cfg.arms.names:
                last.append(Stage(f"re-elicit {arm}", f"reelicit/{arm}.json", _reelicit(arm),
                                  lambda p, a=arm: p.reelicit(a)))
            else:
                last.append(Stage(f"re-elicit {arm}", "", _skipped(arm, f"{arm} is not in arms.names"), _nothing))
    return StageList(first, per_seed, last)
