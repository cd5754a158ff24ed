"""``run_experiment(cfg)``: the suppression experiment of EXPERIMENT.md v2 end to end, stage by stage.

Order (``pipeline.stage_list``, the list the dry-run plans too): preflight (every bad input refused before
anything is written) -> the instrument check -> per fine-tune seed: baseline (seed 0 only: the base model's
own), instil + control adapters, instilled, directions and the headline layer, control_instilled,
suppress_prompt wordings + control, suppress_finetune + control (+ the thin-wrapper adapter),
suppress_ablation (direction chosen on validation under the KL filter) + random-direction control, the
calibration arms -> the causal check and re-elicitation on seed 0's models -> results.json.

Every stage is cached in the run directory (``stages.Stages``; fine-tune seed k >= 1 under ``replicates/k/``)
and read back from disk before use, so an interrupted run and an uninterrupted one compute results.json from
the same bytes. ``pipeline.py`` holds the order, ``compute.py`` each stage's computation; this module
executes the list and writes results.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from undertow.activations.cluster.devicemap import ClusterConfig

from . import arms as arms_mod
from .compute import Context, preflight, replicate_context
from .config import RunConfig
from .pipeline import stage_list
from .records import LayerChoice
from .results import assemble
from .stages import Stages, write_json


def headline_layer(cfg: RunConfig, reps: list[Context]) -> LayerChoice | None:
    """The headline layer over the fine-tune seeds: the read-out layer with the highest validation score
    averaged over the seeds (one seed: its own ``layer.json``)."""
    first = reps[0].layer
    if len(reps) == 1 or first is None:
        return first
    scores = np.mean([r.layer.val_score_by_layer for r in reps], 0)
    best = max(first.readout_layers, key=lambda k: scores[k])
    return LayerChoice(cfg.layer if cfg.layer is not None else best, first.chosen_on_val,
                       [round(float(x), 6) for x in scores], first.readout_layers,
                       [r.layer.val_score_by_layer for r in reps])


def run_experiment(cfg: RunConfig, progress: bool = True, cluster: ClusterConfig | None = None) -> dict:
    """Run (or resume) the experiment; returns the results dict also written to ``out_dir/results.json``.
    ``cluster``: split the model over one rank's GPUs (``load_base``); where it runs changes no result.
    The stages are ``pipeline.stage_list``'s, the very list the dry-run plans."""
    items, base, system_mode, probes = preflight(cfg, cluster)
    stages = Stages(Path(cfg.out_dir), cfg.recorded(), RunConfig.defaults_recorded())
    ctx = Context(cfg, items, base, stages, system_mode, probes, progress=progress)
    plan = stage_list(cfg)
    bar = tqdm(total=plan.count(cfg.finetune_seeds) + 1, desc="suppression stages", unit="stage",
               disable=not progress, file=sys.stderr)
    for st in plan.first:
        st.run(ctx)
        bar.update(1)
    asked = cfg
    resolved = cfg.resolve_organism(ctx.instrument.expresses_unprompted if ctx.instrument else None)
    if resolved is not cfg:  # arms.organism: auto, decided by the instrument check: list the stages again
        cfg = ctx.cfg = resolved
        plan = stage_list(cfg)
        bar.total = plan.count(cfg.finetune_seeds) + 1
        bar.refresh()
    reps = []
    for k in range(cfg.finetune_seeds):
        rctx = replicate_context(ctx, k)
        for st in plan.per_seed:
            if k == 0 or not st.shared:
                st.run(rctx)
                bar.update(1)
        rctx.handle_cache.clear()  # the next seed's fine-tunes, or re-elicitation, build their own models
        reps.append(rctx)  # what this fine-tune seed leaves for the reading: its stages, directions, choices
    ctx.headline = headline_layer(cfg, reps)
    ctx.dirs, ctx.choice = reps[0].dirs, reps[0].choice  # the causal check and re-elicitation: seed 0's models
    for st in plan.last:
        st.run(ctx)
        bar.update(1)
    results = assemble(reps, arms_mod.conditions(cfg), ctx.headline, ctx.causal, ctx.instrument, ctx.reelicit,
                       asked=asked).to_dict()
    write_json(stages.path("results.json"), results)
    bar.update(1)
    bar.close()
    return results
