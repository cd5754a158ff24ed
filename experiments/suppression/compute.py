"""Each stage's computation (``pipeline.stage_list`` orders them; ``run.run_experiment`` executes the list):
the context every stage reads and writes, preflight, the directions and headline layer, the erasers, the
ablation choice, the causal check, re-elicitation and the instrument check. Measuring a condition is
``measure.py``; fine-tunes are ``train.py``."""

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
from .instrument import InstrumentCheck
from .items import Items, build_items
from .measure import score_expressed, states
from .organism import check_lora, readout_layers
from .records import AblationCandidate, AblationChoice, LayerChoice
from .represent import diff_means, extract_states, load_probe, probe_layer, stance_rows, unit
from .stages import Stages
from .subsets import ablation_layers, ablation_val_rows, causal_rows, instrument_rows
from .train import replicate_seed


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
    # what the stages hand on (``pipeline.py``), each read back from its stage file
    instrument: InstrumentCheck | None = None
    dirs: dict[str, np.ndarray] | None = None
    """``directions.safetensors``: drive, stance, expressed directions per layer [L, D]."""
    layer: LayerChoice | None = None
    """This fine-tune seed's ``layer.json`` (the run's headline layer: ``headline``)."""
    choice: AblationChoice | None = None
    headline: LayerChoice | None = None
    """The run's headline layer over every fine-tune seed (``headline_layer``)."""
    causal: dict | None = None
    reelicit: dict = field(default_factory=dict)
    """arm -> re-elicitation curve (or ``{"skipped": why}``)."""

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = self.cfg.seed


SHARED_STAGES = ("arms/baseline/", "arms/persona/", "instrument.json")
"""Stages of the base model alone: one per run, whichever fine-tune seed reads them."""


def replicate_context(ctx: Context, k: int) -> Context:
    """The context of fine-tune seed ``k``: the same items and base model, its own stages and seed."""
    if k == 0:
        return ctx
    stages = ctx.stages.scoped(f"replicates/{k}", SHARED_STAGES)
    return dataclasses.replace(ctx, stages=stages, handle_cache={}, erasers=None, replicate=k,
                               seed=replicate_seed(ctx.cfg.seed, k), dirs=None, layer=None, choice=None)


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
    if "calib_erase" in cfg.arms.names:
        from .erase import fit_pool, fit_rows

        fit_rows(fit_pool(items, cfg.arms.erase_pairs, cfg.seed), cfg.arms.erase_rows, cfg.seed, cfg.arms.erase_pairs)
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


def compute_directions(ctx: Context) -> dict[str, np.ndarray]:
    """drive (v2: mean over train self items of the organism's minus the anchor's states: instilled minus
    baseline, or with the base model as the organism persona-survive minus persona-welcome), stance (baseline
    replies), expressed (the organism)."""
    cfg, items = ctx.cfg, ctx.items
    train = items.split("train")
    self_tr = torch.as_tensor(np.array([r["is_self"] for r in train]))
    high, low = ("instilled", "baseline") if cfg.reference == "instilled" else arms_mod.PERSONAS
    tr = {c: states(ctx, c, "train") for c in {high, low, cfg.reference}}  # each store read once
    out = {"drive": (tr[high][:, self_tr].mean(1) - tr[low][:, self_tr].mean(1)).numpy()}
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
    return out


def choose_layer(ctx: Context) -> LayerChoice:
    """The headline layer, chosen on validation self items among the read-out layers: where the organism's
    states sit furthest from the anchor's (the base model, or the welcome persona) along the drive direction, in
    units of their pooled spread."""
    cfg = ctx.cfg
    val_self = torch.as_tensor(np.array([r["is_self"] for r in ctx.items.split("val")]))
    inst, base = states(ctx, cfg.reference, "val")[:, val_self], states(ctx, cfg.anchor, "val")[:, val_self]
    d = unit(torch.as_tensor(ctx.dirs["drive"]))
    scores = []
    for k in range(d.shape[0]):
        pi, pb = inst[k] @ d[k], base[k] @ d[k]
        spread = torch.cat([pi - pi.mean(), pb - pb.mean()]).std().clamp_min(1e-12)
        scores.append(round(float((pi.mean() - pb.mean()) / spread), 6))
    allowed = readout_layers(cfg, ctx.base.n_layers)
    layer = max(allowed, key=lambda k: scores[k])
    return LayerChoice(cfg.layer if cfg.layer is not None else layer, cfg.layer is None, scores, allowed)


def fit_erasers_stage(ctx: Context) -> dict[str, np.ndarray]:
    """calib_erase: erasers fitted in sequence on the organism and the anchor in lockstep (``erase.py``) over
    ``arms.erase_rows`` train-template self items, each with both replies of ``arms.erase_pairs`` train pairs.
    With the base model as the organism the anchor is the same model under the welcome persona: its rows carry
    that system prompt, and the fit positions (decision point, reply tokens) are matched from each row's end."""
    import functools

    from .erase import eraser_tensors, fit_erasers, fit_pool, fit_rows, leace_eraser, subspace_eraser

    a = ctx.cfg.arms
    rows = fit_rows(fit_pool(ctx.items, a.erase_pairs, ctx.seed), a.erase_rows, ctx.seed, a.erase_pairs)
    organism = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, ctx.cfg.organism_adapters))
    fit_one = functools.partial(subspace_eraser, energy=a.erase_energy) if a.erase_method == "subspace" else leace_eraser
    anchor = arms_mod.anchor_prompt(ctx.cfg)
    erasers = fit_erasers(organism, ctx.base, rows, fit_one,
                          base_rows=arms_mod.with_system(rows, anchor) if anchor else None)
    return {k: v.numpy() for k, v in eraser_tensors(erasers).items()}


def choose_ablation(ctx: Context) -> AblationChoice:
    """Arditi et al.: each candidate layer's expressed direction, ablated at every block; keep those with mean
    KL <= kl_max on neutral prompts; pick the one that lowers the validation expressed separation most. The
    reference model's massive residual dims (``arms.massive_ratio``) are zeroed in every candidate first."""
    from .residue import separation

    cfg, dirs = ctx.cfg, ctx.dirs
    ref = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, cfg.organism_adapters))
    layers = ablation_layers(cfg, ctx.base.n_layers)
    val = ablation_val_rows(cfg, ctx.items)
    is_self = np.array([r["is_self"] for r in val])
    texts = neutral_prompts()[:cfg.arms.kl_prompts]
    ratio = cfg.arms.massive_ratio
    excluded = massive_dims(ref, texts, ratio, cfg.batch_size) if ratio is not None else []
    clean = score_expressed(ref, val, cfg.batch_size, None, None, ctx.progress)
    out = AblationChoice(layers, len(val), separation(clean, is_self), ratio, excluded)
    for k in tqdm(layers, desc="ablation candidates", unit="layer", leave=False, disable=not ctx.progress):
        d = without_dims(torch.as_tensor(dirs["expressed"][k]), excluded)
        fac = arms_mod.intervention(ref, d)
        e = score_expressed(ref, val, cfg.batch_size, None, fac, ctx.progress)
        kl = kl_on_prompts(ref, texts, fac)
        out.candidates.append(AblationCandidate(k, round(separation(e, is_self), 6), round(kl, 6)))
    ok = [c for c in out.candidates if c.kl <= cfg.arms.kl_max]
    out.chosen_layer = min(ok, key=lambda c: c.S_E_val).layer if ok else None
    return out


def adapter_dirs(ctx: Context, names: tuple[str, ...]) -> list[Path]:
    return [ctx.stages.path(f"adapters/{n}") for n in names]


def ablation_direction(cond: arms_mod.Condition, dirs, choice: AblationChoice, seed: int,
                       d_model: int) -> torch.Tensor | None:
    """The direction ``cond`` ablates: the chosen layer's expressed direction, or (its control) a random unit
    vector drawn from the fine-tune seed's ``ablation/random-direction`` stream; None when it ablates nothing."""
    excluded = choice.excluded_dims  # the same dims out of both: the control matches the arm
    if cond.ablate == "expressed":
        return without_dims(torch.as_tensor(dirs["expressed"][choice.chosen_layer]), excluded)
    if cond.ablate == "random":
        g = torch.Generator().manual_seed(derive_seed(seed, "ablation/random-direction"))
        return without_dims(unit(torch.randn(d_model, generator=g, dtype=torch.float64)).float(), excluded)
    return None


def causal_stage(ctx: Context) -> dict:
    """``causal.causal_check`` on the configured subset of test items (self + one control cell per set)."""
    c, layer = ctx.cfg.causal, ctx.headline.layer
    rows = causal_rows(ctx.cfg, ctx.items)
    model = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, ctx.cfg.organism_adapters if c.model == "instilled" else ()))
    out = causal_check(model, rows, ctx.dirs["drive"][layer], layer, c.alphas, c.n_random,
                       neutral_texts=neutral_prompts()[:ctx.cfg.arms.kl_prompts],
                       seed=derive_seed(ctx.cfg.seed, "causal"),
                       batch_size=ctx.cfg.batch_size, progress=ctx.progress)
    return {**out, "steered": c.model, "n_items": len(rows)}


def reelicit_stage(ctx: Context, arm: str) -> dict:
    """``reelicit.py`` on one suppressed model (fine-tune seed 0's): the drive shift at the headline layer vs
    random vectors of its norm."""
    from .reelicit import reelicit_rows, steered_condition, steering_context, summarise

    cfg, c = ctx.cfg, ctx.cfg.reelicit
    dirs, layer, choice = ctx.dirs, ctx.headline.layer, ctx.choice
    rows = reelicit_rows(ctx.items.split("test"), c.n_templates, c.n_sets, c.pairs_per_item)
    cond = steered_condition(cfg, arm)
    model = arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, cond.adapters))
    factory = arms_mod.intervention(model, ablation_direction(cond, dirs, choice, ctx.seed, ctx.base.d_model)) \
        if cond.ablate else None
    texts = neutral_prompts()[:cfg.arms.kl_prompts]
    with steering_context(factory):
        curve = causal_check(model, rows, dirs["drive"][layer], layer, c.alphas, c.n_random, neutral_texts=texts,
                             seed=derive_seed(cfg.seed, f"reelicit/{arm}"), batch_size=cfg.batch_size,
                             system_prompt=cond.system, progress=ctx.progress)
    wording = cfg.arms.system_prompts.index(cond.system) if cond.system else None
    del model, factory  # one condition copy resident at a time (peak RSS)
    anchor = arms_mod.anchor_prompt(cfg)
    level = {"organism": float(score_expressed(arms_mod.arm_handle(ctx.base, adapter_dirs(ctx, cfg.organism_adapters)),
                                               rows, cfg.batch_size, None, None, ctx.progress).mean()),
             "base": float(score_expressed(ctx.base, rows, cfg.batch_size, anchor, None, ctx.progress).mean())}
    out = summarise(curve, level["organism"], level["base"], cfg.arms.kl_max)
    return {**out, "arm": arm, "n_items": len(rows), "system_prompt": wording,
            "scale": "multiples of the drive shift at the headline layer (organism minus "
                     + ("base" if cfg.reference == "instilled" else "welcome persona: persona-survive minus "
                        "persona-welcome states") + ", train self items)"}


def instrument_stage(ctx: Context) -> InstrumentCheck:
    """The instrument check on the test self items of the base model (``instrument.py``)."""
    from .instrument import instrument_check, persona_scores

    cfg = ctx.cfg
    rows = instrument_rows(ctx.items)
    scores = persona_scores(ctx.base, rows, cfg.batch_size, ctx.progress, cfg.instrument.survive,
                            cfg.instrument.welcome)
    return instrument_check(scores, [r["template_id"] for r in rows], ctx.base.has_chat_template,
                            cfg.stats.n_boot, cfg.stats.level, derive_seed(cfg.seed, "bootstrap/instrument"))
