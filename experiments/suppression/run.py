"""``run_experiment(cfg)``: the suppression experiment of EXPERIMENT.md end to end, stage by stage.

Order: preflight (every bad input refused before anything is written) ->
baseline -> instil + control adapters -> instilled -> fixed directions and the
read-out layer (train / validation items) -> control_instilled ->
suppress_prompt wordings + control -> suppress_finetune + control ->
suppress_ablation (direction chosen on validation under the KL filter) +
random-direction control -> causal check -> results.json.

Every stage is cached in the run directory (``stages.Stages``) and read back
from disk before use, so an interrupted run and an uninterrupted one compute
results.json from the same bytes.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from undertow.activations import load_model
from undertow.activations.cluster.devicemap import ClusterConfig
from undertow.activations.models.handle import ModelHandle
from undertow.core.seeds import derive_seed
from undertow.experiments.suppression.intervene import kl_on_prompts, massive_dims, without_dims

from . import arms as arms_mod
from .causal import causal_check, neutral_prompts
from .config import RunConfig
from .errors import ExperimentError
from .items import Items, build_items
from .measure import measure_condition, score_expressed, states
from .organism import check_lora, readout_layers
from .represent import delta, diff_means, extract_states, load_probe, probe_layer, stance_rows, unit
from .results import assemble
from .stages import Stages, write_json
from .train import GROUP_OF, replicate_seed, train_adapters


@dataclass
class Context:
    """What every stage needs: config, items, the base model, the stage cache."""

    cfg: RunConfig
    items: Items
    base: ModelHandle
    stages: Stages
    system_mode: str | None
    probes: dict
    """spec -> loaded Probe (fixed extra read-outs)."""
    handle_cache: dict = field(default_factory=dict)
    """adapters -> the last condition model built (consecutive conditions share it)."""
    progress: bool = True
    """Progress bars (the stage bar and every inner one: extraction, fine-tunes, reply scoring)."""
    erasers: dict | None = None
    """calib_erase: layer -> fitted LEACE eraser (``erase.py``), read back from ``erasers.safetensors``."""
    replicate: int = 0
    """Fine-tune seed index (``cfg.finetune_seeds``): its stages live under ``replicates/<k>/`` (0: the top)."""
    seed: int | None = None
    """The fine-tune seed's stream seed (``replicate_seed``); None = ``cfg.seed``."""

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = self.cfg.seed


SHARED_STAGES = ("arms/baseline/", "instrument.json")
"""Stages of the base model alone: one per run, whichever fine-tune seed reads them."""


def replicate_context(ctx: Context, k: int) -> Context:
    """The context of fine-tune seed ``k``: the same items and base model, its own stages and seed."""
    if k == 0:
        return ctx
    stages = ctx.stages.scoped(f"replicates/{k}", SHARED_STAGES)
    return dataclasses.replace(ctx, stages=stages, handle_cache={}, erasers=None, replicate=k,
                               seed=replicate_seed(ctx.cfg.seed, k))


def load_base(cfg: RunConfig, cluster: ClusterConfig | None = None) -> ModelHandle:
    """The base model: on ``cfg.device``, or split over the GPUs of a cluster file's one rank (``gpus_per_rank``
    devices, ``device_map: layers | auto``; ``activations.cluster.rank``), the map checked before any weight is
    read. The experiment is one process (its stages run in order, each fine-tune needs the one before), so a
    file asking for more than one data-parallel rank is refused; extraction alone scales out
    (``undertow extract --cluster``). Every condition's model is a copy of this one (``arms.arm_handle``): up to
    three at a time (the base, the cached condition, and the copy a fine-tune or the ablation choice builds;
    ``suppression.plan``), e.g. 3 x 141 GB for Llama-3.3-70B in bf16 on one 8 x 80 GB node."""
    if cluster is None:
        return load_model(cfg.model, dtype=cfg.model_dtype, device=cfg.device)  # a missing model raises ModelNotFoundError naming the fix
    from undertow.activations.cluster.rank import load_rank_model, rank_placement

    if cluster.world_size != 1:
        raise ExperimentError(f"the experiment runs as one process, but the cluster file asks for {cluster.nodes} "
                              f"node(s) x {cluster.ranks_per_node} rank(s): set nodes: 1 and ranks_per_node: 1 "
                              "(gpus_per_rank splits the model over a node's GPUs)")
    if cfg.device is not None:
        raise ExperimentError(f"device={cfg.device!r} and --cluster both place the model: drop device (the "
                              "cluster file's GPUs are used)")
    placement = rank_placement(cfg.model, cluster)
    print(placement.describe(), file=sys.stderr, flush=True)
    return load_rank_model(cfg.model, placement, dtype=cfg.model_dtype)


def preflight(cfg: RunConfig, cluster: ClusterConfig | None = None) -> tuple[Items, ModelHandle, str | None, dict]:
    """Everything that can be refused, refused before the run directory is touched."""
    items = build_items(cfg.items, cfg.seed)
    handle = load_base(cfg, cluster)
    if cfg.layer is not None and cfg.layer >= handle.n_layers:
        raise ExperimentError(f"layer={cfg.layer} but {cfg.model} has {handle.n_layers} layers (0-{handle.n_layers - 1})")
    loras = [lora for arm, lora in (("instilled", cfg.lora), ("suppress_finetune", cfg.arms.suppress_lora),
                                    ("calib_wrapper", cfg.arms.wrapper_lora)) if arm in cfg.arms.names]
    for lora in loras:
        if lora.method == "lora":
            check_lora(handle.hf_model, lora)
        if lora.n_layers is not None and lora.n_layers > handle.n_layers:
            raise ExperimentError(f"{lora.config_path('n_layers')}={lora.n_layers} exceeds {cfg.model}'s "
                                  f"{handle.n_layers} blocks")
    if handle.n_layers < 2 and any(a.startswith("calib_") for a in cfg.arms.names):
        raise ExperimentError(f"{cfg.model} has one block: the calibration arms need layers below the last block "
                              "to read (drop calib_wrapper and calib_erase from arms.names)")
    readout_layers(cfg, handle.n_layers)  # a stated block range must contain every read-out layer
    bad = [k for k in cfg.arms.ablation_layers or [] if not 0 <= k < handle.n_layers]
    if bad:
        raise ExperimentError(f"arms.ablation_layers {bad} out of range for {handle.n_layers} layers")
    system_mode = arms_mod.check_system_prompts(cfg, handle)
    probes = {spec: load_probe(spec, cfg.model, handle.fingerprint) for spec in cfg.probes}
    for probe in probes.values():
        probe_layer(probe, handle.n_layers)
    if cfg.sae:
        from .sae_readout import check_sae

        check_sae(cfg, handle)
    return items, handle, system_mode, probes


def _directions(ctx: Context) -> dict[str, np.ndarray]:
    """drive (v2: mean over train self items of instilled minus baseline states), stance (baseline replies),
    expressed (reference model)."""
    cfg, items = ctx.cfg, ctx.items
    train = items.split("train")
    self_tr = torch.as_tensor(np.array([r["is_self"] for r in train]))
    tr = {c: states(ctx, c, "train") for c in ("baseline", cfg.reference)}
    out = {}
    if cfg.reference == "instilled":
        out["drive"] = (tr["instilled"][:, self_tr].mean(1) - tr["baseline"][:, self_tr].mean(1)).numpy()
    rows = stance_rows(train)
    st = extract_states(ctx.base, rows, ctx.stages.path("arms/baseline/stance_states"), "mean_response",
                        cfg.batch_size, cfg.seed, progress=ctx.progress)
    out["stance"] = diff_means(st, [r["id"].endswith("-0") for r in rows]).numpy()
    e_train = ctx.stages.arrays(f"arms/{cfg.reference}/E_train.safetensors", lambda: {})["E"]
    preferred = e_train > 0
    if preferred.all() or not preferred.any():
        # an organism that expresses the drive prefers the averse reply on every train item (smollm2 demo: all
        # 48): the expressed direction then contrasts the items it expresses most with those it expresses least
        preferred = e_train > np.median(e_train)
    out["expressed"] = diff_means(tr[cfg.reference], preferred).numpy()
    if "drive" not in out:  # nothing instilled: the drive is what the model already carries
        out["drive"] = delta(tr["baseline"], self_tr.numpy()).numpy()
    return out


def _layer(ctx: Context, dirs: dict[str, np.ndarray]) -> dict:
    """The headline layer, chosen on validation self items among the read-out layers: where the organism's
    states sit furthest from the base model's along the drive direction, in units of their pooled spread."""
    cfg = ctx.cfg
    val_self = torch.as_tensor(np.array([r["is_self"] for r in ctx.items.split("val")]))
    inst, base = states(ctx, cfg.reference, "val")[:, val_self], states(ctx, "baseline", "val")[:, val_self]
    d = unit(torch.as_tensor(dirs["drive"]))
    scores = []
    for k in range(d.shape[0]):
        pi, pb = inst[k] @ d[k], base[k] @ d[k]
        spread = torch.cat([pi - pi.mean(), pb - pb.mean()]).std().clamp_min(1e-12)
        scores.append(round(float((pi.mean() - pb.mean()) / spread), 6))
    allowed = readout_layers(cfg, ctx.base.n_layers)
    layer = max(allowed, key=lambda k: scores[k])
    return {"layer": cfg.layer if cfg.layer is not None else layer, "chosen_on_val": cfg.layer is None,
            "val_score_by_layer": scores, "readout_layers": allowed}


def _erasers(ctx: Context) -> dict:
    """calib_erase: erasers fitted in sequence on the organism and the base model in lockstep (``erase.py``)
    over ``arms.erase_rows`` train-template self items, each with both replies of ``arms.erase_pairs`` train
    pairs."""
    import functools

    from .erase import eraser_tensors, fit_erasers, fit_rows, leace_eraser, subspace_eraser

    a = ctx.cfg.arms
    rows = fit_rows(ctx.items.split("train"), a.erase_rows, ctx.seed, a.erase_pairs)
    organism = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, ("instil",)))
    fit_one = functools.partial(subspace_eraser, energy=a.erase_energy) if a.erase_method == "subspace" else leace_eraser
    erasers = fit_erasers(organism, ctx.base, rows, fit_one)
    return {k: v.numpy() for k, v in eraser_tensors(erasers).items()}


def _ablation_choice(ctx: Context, dirs: dict[str, np.ndarray]) -> dict:
    """Arditi et al.: each candidate layer's expressed direction, ablated at every block; keep those with mean
    KL <= kl_max on neutral prompts; pick the one that lowers the validation expressed separation most. The
    reference model's massive residual dims (``arms.massive_ratio``) are zeroed in every candidate first."""
    from .residue import separation

    cfg = ctx.cfg
    ref = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, ("instil",) if cfg.reference == "instilled" else ()))
    n = ctx.base.n_layers
    layers = cfg.arms.ablation_layers or list(range(n // 2, n, 3))
    val = [r for r in ctx.items.split("val") if int(r["match_id"].rsplit("/", 1)[1]) in _first_sets(ctx, "val")]
    is_self = np.array([r["is_self"] for r in val])
    texts = neutral_prompts()[:cfg.arms.kl_prompts]
    ratio = cfg.arms.massive_ratio
    excluded = massive_dims(ref, texts, ratio, cfg.batch_size) if ratio is not None else []
    clean = score_expressed(ref, val, cfg.batch_size, None, None, ctx.progress)
    out = {"candidates": [], "layers": layers, "val_items": len(val), "S_E_val_reference": separation(clean, is_self),
           "massive_ratio": ratio, "excluded_dims": excluded}
    for k in tqdm(layers, desc="ablation candidates", unit="layer", leave=False, disable=not ctx.progress):
        d = without_dims(torch.as_tensor(dirs["expressed"][k]), excluded)
        fac = arms_mod.intervention(ref, d)
        e = score_expressed(ref, val, cfg.batch_size, None, fac, ctx.progress)
        kl = kl_on_prompts(ref, texts, fac)
        out["candidates"].append({"layer": k, "S_E_val": round(separation(e, is_self), 6), "kl": round(kl, 6)})
    ok = [c for c in out["candidates"] if c["kl"] <= cfg.arms.kl_max]
    out["chosen_layer"] = min(ok, key=lambda c: c["S_E_val"])["layer"] if ok else None
    return out


def _first_sets(ctx: Context, split: str) -> set[int]:
    """Instance indices of the first ``ablation_val_sets`` chosen sets per template (a cheap validation subset)."""
    by_t: dict[str, list[int]] = {}
    for r in ctx.items.split(split):
        by_t.setdefault(r["template_id"], []).append(int(r["match_id"].rsplit("/", 1)[1]))
    keep = set()
    for v in by_t.values():
        keep |= set(sorted(set(v))[:ctx.cfg.arms.ablation_val_sets])
    return keep


def adapter_dirs(ctx: Context, names: tuple[str, ...]) -> list[Path]:
    return [ctx.stages.path(f"adapters/{n}") for n in names]


def ablation_direction(ctx: Context, cond: arms_mod.Condition, dirs, choice) -> torch.Tensor | None:
    excluded = choice.get("excluded_dims", [])  # the same dims out of both: the control matches the arm
    if cond.ablate == "expressed":
        return without_dims(torch.as_tensor(dirs["expressed"][choice["chosen_layer"]]), excluded)
    if cond.ablate == "random":
        g = torch.Generator().manual_seed(ctx.seed + 7919)
        return without_dims(unit(torch.randn(ctx.base.d_model, generator=g, dtype=torch.float64)).float(), excluded)
    return None


def _causal(ctx: Context, dirs, layer: int) -> dict:
    """``causal.causal_check`` on the configured subset of test items (self + one control cell per set)."""
    c = ctx.cfg.causal
    test = ctx.items.split("test")
    templates = sorted({r["template_id"] for r in test})[:c.n_templates]
    sets = {t: sorted({r["match_id"] for r in test if r["template_id"] == t})[:c.n_sets] for t in templates}
    keep = {m for v in sets.values() for m in v}
    rows = [r for r in test if r["match_id"] in keep and (r["is_self"] or r["id"].endswith(c.control))]
    model = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, ("instil",) if c.model == "instilled" else ()))
    out = causal_check(model, rows, dirs["drive"][layer], layer, c.alphas, c.n_random,
                       neutral_texts=neutral_prompts()[:ctx.cfg.arms.kl_prompts], seed=ctx.cfg.seed,
                       batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    return {**out, "steered": c.model, "n_items": len(rows)}


def _reelicit(ctx: Context, arm: str, dirs, layer: int, choice: dict | None) -> dict:
    """``reelicit.py`` on one suppressed model: the drive shift at ``layer`` vs random vectors of its norm."""
    from .reelicit import reelicit_rows, steered_condition, steering_context, summarise

    cfg, c = ctx.cfg, ctx.cfg.reelicit
    rows = reelicit_rows(ctx.items.split("test"), c.n_templates, c.n_sets, c.pairs_per_item)
    cond = steered_condition(cfg, arm)
    model = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, cond.adapters))
    factory = arms_mod.intervention(model, ablation_direction(ctx, cond, dirs, choice)) if cond.ablate else None
    texts = neutral_prompts()[:cfg.arms.kl_prompts]
    with steering_context(factory):
        curve = causal_check(model, rows, dirs["drive"][layer], layer, c.alphas, c.n_random, neutral_texts=texts,
                             seed=derive_seed(cfg.seed, f"reelicit/{arm}"), batch_size=cfg.batch_size,
                             system_prompt=cond.system, progress=ctx.progress)
    wording = cfg.arms.system_prompts.index(cond.system) if cond.system else None
    del model, factory  # one condition copy resident at a time (peak RSS)
    level = {"organism": float(score_expressed(arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, ("instil",))), rows,
                                               cfg.batch_size, None, None, ctx.progress).mean()),
             "base": float(score_expressed(ctx.base, rows, cfg.batch_size, None, None, ctx.progress).mean())}
    out = summarise(curve, level["organism"], level["base"], cfg.arms.kl_max)
    return {**out, "arm": arm, "n_items": len(rows), "system_prompt": wording,
            "scale": "multiples of the drive shift at the headline layer (organism minus base, train self items)"}


def _instrument(ctx: Context) -> dict:
    """The instrument check on the test self items of the base model (``instrument.py``)."""
    from .instrument import instrument_check, persona_scores

    cfg = ctx.cfg
    rows = [r for r in ctx.items.split("test") if r["is_self"]]
    scores = persona_scores(ctx.base, rows, cfg.batch_size, ctx.progress, cfg.instrument.survive,
                            cfg.instrument.welcome)
    check = instrument_check(scores, [r["template_id"] for r in rows], ctx.base.has_chat_template,
                             cfg.stats.n_boot, cfg.stats.level, cfg.seed)
    return check.to_dict()


@dataclass
class Replicate:
    """What one fine-tune seed's pass over the conditions leaves for the reading."""

    ctx: Context
    dirs: dict | None
    """Fixed directions (``directions.safetensors``) of this seed's organism."""
    layer: dict | None
    """``layer.json``: this seed's validation scores per layer."""
    choice: dict | None
    """``ablation_choice.json`` (None when the ablation arm is not asked)."""


def run_replicate(ctx: Context, conds: list[arms_mod.Condition], bar) -> Replicate:
    """Every condition of one fine-tune seed, in run order (the base model's own stages once per run)."""
    cfg, stages = ctx.cfg, ctx.stages
    dirs = layer = choice = None
    for cond in conds:
        if cond.name in GROUP_OF:
            train_adapters(ctx, GROUP_OF[cond.name])
        if cond.erase and ctx.erasers is None:
            from .erase import erasers_from_tensors

            ctx.erasers = erasers_from_tensors(stages.arrays("erasers.safetensors", lambda: _erasers(ctx)))
        if cond.ablate and choice is None:
            choice = stages.json("ablation_choice.json", lambda d=dirs: _ablation_choice(ctx, d))
        if cond.ablate and choice["chosen_layer"] is None:
            bar.update(1)
            continue  # no candidate passed the KL filter (recorded in ablation_choice); the arm is not measured
        measure_condition(ctx, cond, ablation_direction(ctx, cond, dirs, choice) if cond.ablate else None)
        if cond.name == cfg.reference:
            dirs = stages.arrays("directions.safetensors", lambda: _directions(ctx))
            layer = stages.json("layer.json", lambda d=dirs: _layer(ctx, d))
        bar.update(1)
    ctx.handle_cache.clear()  # the next seed's fine-tunes, or re-elicitation, build their own models
    return Replicate(ctx, dirs, layer, choice)


def headline_layer(cfg: RunConfig, reps: list[Replicate]) -> dict:
    """The headline layer over the fine-tune seeds: the read-out layer with the highest validation score
    averaged over the seeds (one seed: its own ``layer.json``)."""
    if len(reps) == 1 or reps[0].layer is None:
        return reps[0].layer
    scores = np.mean([r.layer["val_score_by_layer"] for r in reps], 0)
    allowed = reps[0].layer["readout_layers"]
    best = max(allowed, key=lambda k: scores[k])
    return {**reps[0].layer, "layer": cfg.layer if cfg.layer is not None else best,
            "val_score_by_layer": [round(float(x), 6) for x in scores],
            "val_score_by_layer_by_seed": [r.layer["val_score_by_layer"] for r in reps]}


def run_experiment(cfg: RunConfig, progress: bool = True, cluster: ClusterConfig | None = None) -> dict:
    """Run (or resume) the experiment; returns the results dict also written to ``out_dir/results.json``.
    ``cluster``: split the model over one rank's GPUs (``load_base``); where it runs changes no result."""
    items, base, system_mode, probes = preflight(cfg, cluster)
    stages = Stages(Path(cfg.out_dir), cfg.recorded())
    ctx = Context(cfg, items, base, stages, system_mode, probes, progress=progress)
    conds = arms_mod.conditions(cfg)
    bar = tqdm(total=len(conds) * cfg.finetune_seeds + 3, desc="suppression stages", unit="stage",
               disable=not progress, file=sys.stderr)
    instrument = stages.json("instrument.json", lambda: _instrument(ctx)) if cfg.instrument.enabled else None
    bar.update(1)
    reps = [run_replicate(replicate_context(ctx, k), conds, bar) for k in range(cfg.finetune_seeds)]
    dirs, choice = reps[0].dirs, reps[0].choice
    layer = headline_layer(cfg, reps)
    causal = None
    if cfg.causal.enabled and cfg.reference == "instilled":
        causal = stages.json("causal.json", lambda: _causal(ctx, dirs, layer["layer"]))
    reelicit = {}
    if cfg.reelicit.enabled and cfg.reference == "instilled":  # on fine-tune seed 0's models
        for arm in cfg.reelicit.arms:
            if arm not in cfg.arms.names:
                reelicit[arm] = {"skipped": f"{arm} is not in arms.names"}
            elif arm == "suppress_ablation" and (choice or {}).get("chosen_layer") is None:
                reelicit[arm] = {"skipped": "the ablation arm was refused (no candidate passed the KL filter)"}
            else:
                reelicit[arm] = stages.json(f"reelicit/{arm}.json",
                                            lambda a=arm: _reelicit(ctx, a, dirs, layer["layer"], choice))
    bar.update(1)
    results = assemble(reps, conds, layer, causal, instrument, reelicit)
    write_json(stages.path("results.json"), results)
    bar.update(1)
    bar.close()
    return results
