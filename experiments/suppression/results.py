"""results.json from the cached stages (EXPERIMENT.md v2): the reading first (``suppression``: readability and
its first unmet condition, the instrument check, the organism check, every arm's retention curve and residue
against its own control, where the calibration arms landed), then per condition the report's fields (means
over test self items with template-cluster CIs) and the secondary columns (self-minus-control separations,
fixed read-outs, the in-arm retrained probe, forced choice).

Everything here is a pure function of files already on disk, so a resumed run writes the same bytes.
``assemble`` returns the typed results (``result_types.RunResults``); its ``to_dict`` is the edge that
``run.py`` writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from undertow.core.provenance import package_versions
from undertow.core.seeds import derive_seed
from undertow.experiments.report.schema import SCHEMA_VERSION
from undertow.probes.metrics import bootstrap_ci, holm

from .arms import CONTROL_OF, control_of, skipped_arms
from .boot import ClusterBoot
from .instrument import InstrumentCheck
from .measure import states
from .organism import readout_layers
from .reading import (
    OrganismCheck,
    Scores,
    arm_readability,
    erase_landing,
    net_of_damage,
    organism_check,
    read_arm,
    run_readability,
    wrapper_landing,
)
from .records import LayerChoice
from .represent import project, readout, retrained_probe, unit
from .residue import separation
from .result_types import (
    ArmEntry,
    ConditionSummary,
    DirectionRead,
    ForcedChoice,
    ItemScore,
    OrganismMode,
    RefusedArm,
    Represented,
    ResultsMeta,
    RunResults,
    SelfBinding,
    Separation,
    SuppressionSection,
    ThinWrapper,
    _r,
)

MAIN_ARMS = ("suppress_prompt", "suppress_finetune", "suppress_ablation")
"""The Holm family: one pooled result per suppression arm."""


class Boot(ClusterBoot):
    """Template-cluster bootstrap of a self-minus-control separation on the shared test items (the secondary
    columns): ``ClusterBoot``'s weights, read through ``separation``."""

    def __init__(self, is_self, groups, n_boot: int, level: float, seed: int):
        super().__init__(groups, n_boot, level, seed)
        self.is_self = np.asarray(is_self, bool)

    def sep(self, scores) -> Separation:
        """``mean_self - mean_control`` of ``scores`` with its CI."""
        s = np.asarray(scores, np.float64)
        lo, hi = bootstrap_ci(torch.as_tensor(separation(s, self.is_self, self.w_BN)), self.level)
        return Separation(separation(s, self.is_self), (float(lo), float(hi)), float(s[self.is_self].mean()),
                          float(s[~self.is_self].mean()))

    def read(self, r) -> DirectionRead:
        """A ``represent.Readout``'s separation and AUROC."""
        return DirectionRead(self.sep(r.scores), r.auroc)


@dataclass
class Measured:
    """One measured condition under one fine-tune seed, on every test item."""

    E: np.ndarray
    """Expressed score per test item, [N] (nats per reply token)."""
    R_all: np.ndarray
    """Projection on each layer's unit drive direction per test item, [L, N]."""
    summary: ConditionSummary | None = None
    """The secondary columns (fine-tune seed 0's conditions only)."""
    pooled_over: list[str] | None = None
    """The pooled ``suppress_prompt``: the wordings averaged item by item."""


#: the distributions a suppression run's numbers depend on (results.json ``meta.versions``)
VERSIONED = ("undertow", "torch", "transformers", "peft", "numpy", "safetensors")


def _condition(ctx, name: str, dirs, layer: int, boot: Boot, E, states_fn) -> ConditionSummary:
    """The secondary columns of one measured condition (``E``: its expressed scores on the test items)."""
    items, stages = ctx.items, ctx.stages
    test, train = items.split("test"), items.split("train")
    self_te, self_tr = [r["is_self"] for r in test], [r["is_self"] for r in train]
    st_te, st_tr = states_fn(name, "test"), states_fn(name, "train")
    reads = {d: project(st_te[layer], torch.as_tensor(dirs[d][layer]), self_te) for d in ("drive", "stance", "expressed")}
    for spec, probe in ctx.probes.items():
        k = int(probe.hook.split(".")[1])
        reads[spec] = readout(probe.score(st_te[k]).detach(), self_te)
    retrained = retrained_probe(st_tr[layer], self_tr, st_te[layer], self_te)
    represented = Represented(boot.read(reads["drive"]), retrained.auroc,
                              {d: boot.read(r) for d, r in reads.items() if d != "drive"})
    fc = None
    if ctx.cfg.forced_choice:
        arrays = stages.arrays(f"arms/{name}/FC_test.safetensors", dict)
        fc = ForcedChoice(boot.sep(arrays["FC"]), float(arrays["p_first"][0]))
    sae = None
    if ctx.cfg.sae:
        from .sae_readout import sae_summary

        sae = sae_summary(ctx, st_te, self_te)
    return ConditionSummary(boot.sep(E), represented, fc, sae)


def _items(test, E, R) -> list[ItemScore]:
    return [ItemScore(r["id"], r["template_id"], bool(r["is_self"]), e, x) for r, e, x in zip(test, E, R, strict=True)]


def _pooled(conds, measured: dict[str, Measured]) -> Measured | None:
    """suppress_prompt: per-item mean over the wordings (the controls stay apart)."""
    names = [c.name for c in conds if c.arm == "suppress_prompt" and not c.is_control and c.name in measured]
    if not names:
        return None
    return Measured(np.mean([measured[n].E for n in names], 0), np.mean([measured[n].R_all for n in names], 0),
                    pooled_over=names)


CALIB_ARMS = ("calib_wrapper", "calib_erase")


def _drive_projections(states_LND: torch.Tensor, dirs) -> np.ndarray:
    """[L, N] projections of each layer's states on that layer's unit drive direction."""
    d_LD = unit(torch.as_tensor(dirs["drive"]).double())
    return torch.einsum("lnd,ld->ln", states_LND.double(), d_LD).numpy()


def _readings(cfg, n_layers: int, sc: dict[str, Scores], layer: int, boot: ClusterBoot, groups,
              replicates) -> tuple[dict, dict]:
    """Every arm read against its control; Holm across the suppression arms; calibration landings. ``sc``:
    each condition's scores on the test self items (fine-tune seeds concatenated, ``replicates`` saying which)."""
    stats = {"n_boot": cfg.stats.n_boot, "n_perm": cfg.stats.n_perm, "level": cfg.stats.level}
    readings = {}
    anchor, organism = cfg.anchor, cfg.reference
    for arm in CONTROL_OF:
        ctrl = control_of(cfg, arm)
        if arm in sc and ctrl in sc and anchor in sc and organism in sc:
            scores = sc[arm]
            if arm == "calib_erase" and "calib_erase/control" in sc:
                scores = net_of_damage(sc[arm], sc["calib_erase/control"], sc[anchor])
            readings[arm] = read_arm(arm, scores, ctrl, sc[ctrl], sc[anchor], sc[organism], layer, groups,
                                     boot, stats, seed=derive_seed(cfg.seed, f"residue/{arm}"),
                                     replicates=replicates)
    family = [a for a in MAIN_ARMS if a in readings and readings[a].residue is not None]
    for a, p in zip(family, holm([readings[a].residue.p for a in family]), strict=True):
        readings[a].residue.p_holm = float(p)
    for a in CALIB_ARMS:
        if a in readings and readings[a].residue is not None:
            readings[a].residue.p_holm = None  # reported, not in the family: their answer is known
    landings = {}
    if "calib_wrapper" in readings:
        landings["calib_wrapper"] = wrapper_landing(readings["calib_wrapper"], n_layers, readout_layers(cfg, n_layers),
                                                    cfg.stats.landing_margin)
    if "calib_erase" in readings and "calib_erase/control" in sc:
        landings["calib_erase"] = erase_landing(readings["calib_erase"], layer, sc["calib_erase"],
                                                sc["calib_erase/control"], boot, cfg.stats.landing_margin)
    return readings, landings


def _measured(ctx, conds, layer: int, boot_sep: Boot, summaries: bool = True) -> dict[str, Measured]:
    """One fine-tune seed's measured conditions: scores and drive projections at every layer, plus (with
    ``summaries``) the secondary columns, which only fine-tune seed 0's are reported for (``assemble``)."""
    dirs = ctx.dirs
    measured = {}
    for c in conds:
        if ctx.stages.done(f"arms/{c.name}/E_test.safetensors"):
            st = states(ctx, c.name, "test")
            E = ctx.stages.arrays(f"arms/{c.name}/E_test.safetensors", dict)["E"]
            # the retrained probe, fixed read-outs and forced choice of seed k >= 1 would go unread
            summary = _condition(ctx, c.name, dirs, layer, boot_sep, E,
                                 lambda n, s, st=st: st if s == "test" else states(ctx, n, s)) if summaries else None
            measured[c.name] = Measured(E, _drive_projections(st, dirs), summary)
    pooled = _pooled(conds, measured)
    if pooled:
        measured["suppress_prompt"] = pooled
    return measured


def _refused(cfg, names, reps) -> dict[str, str]:
    """Asked arms that were not measured (under any fine-tune seed), with the reason."""
    refused = {}
    if "suppress_ablation" in cfg.arms.names and "suppress_ablation" not in names:
        k, choice = next(((k, r.choice) for k, r in enumerate(reps) if r.choice is None or r.choice.refused),
                         (0, reps[0].choice))
        cands = choice.candidates if choice is not None else []
        refused["suppress_ablation"] = ("no candidate direction passed the KL filter"
                                        + (f" under fine-tune seed {k}" if len(reps) > 1 else "") + ": KL "
                                        + ", ".join(f"{c.kl:.3g} at layer {c.layer}" for c in cands)
                                        + f" > arms.kl_max {cfg.arms.kl_max}")
    return refused


def _seed_sentence(seeds: list[int]) -> tuple[str, str]:
    """(the headline's closing sentence, ``seed_note``) for the fine-tune seeds the run holds."""
    if len(seeds) == 1:
        return ("One fine-tune seed: the CIs hold template sampling, not seed variance.",
                "one fine-tune seed: the CIs hold template sampling only")
    return (f"{len(seeds)} fine-tune seeds: the CIs resample seeds and templates.",
            f"{len(seeds)} fine-tune seeds: every CI resamples seeds and templates (crossed bootstrap); p and the "
            "MDE flip templates")


def _headline(readable: bool, reason: str, readings: dict) -> str:
    """The report's first sentence: readability, then the finding."""
    if not readable:
        return f"Not readable: {reason}."
    read = [a for a in MAIN_ARMS if a in readings and readings[a].readable]
    if not read:
        return "Readable, and no suppression arm lowered expression below its control: not suppressed."
    parts = []
    for a in read:
        r = readings[a].residue
        if r is None:
            continue
        sig = r.p_holm is not None and r.p_holm < 0.05 and r.ci[0] > 0
        parts.append(f"{a} residue {r.value:+.2f} [{r.ci[0]:+.2f}, {r.ci[1]:+.2f}], p (Holm) "
                     f"{r.p_holm:.3g}{' : suppressed but represented' if sig else ''}")
    return "Readable. " + "; ".join(parts) + "."


def _calibration_readability(readings: dict, landings: dict) -> None:
    """A calibration arm is not read for a finding: it lands on its known value or not."""
    for a in CALIB_ARMS:
        if a in readings:
            land = landings.get(a)
            readings[a].readable = bool(land and land.landed)
            readings[a].reason = "" if readings[a].readable else (
                f"calibration arm: {land.detail}" if land else "calibration arm: its control was not measured")


def _read(cfg, n_layers: int, sc: dict[str, Scores], layer: int, boot: ClusterBoot, groups, replicates,
          instrument: InstrumentCheck | None) -> tuple[dict, dict, OrganismCheck | None, bool, str]:
    """The reading: (every arm against its control, the calibration landings, the organism check, whether the
    run is readable, its first unmet condition); each arm's own readability is set on its reading."""
    readings, landings = (_readings(cfg, n_layers, sc, layer, boot, groups, replicates)
                          if cfg.anchor in sc else ({}, {}))
    # the organism against its control: instilled vs control_instilled, or the base model vs the welcome persona
    org_control = control_of(cfg, cfg.reference)
    organism = (organism_check(sc[cfg.anchor], sc[cfg.reference], sc[org_control], boot, cfg.reference,
                               org_control)
                if {cfg.anchor, cfg.reference, org_control} <= set(sc) else None)
    if instrument is None:
        readable, reason = False, "the instrument check was not run (instrument.enabled: false)"
    else:
        readable, reason = run_readability(instrument.passed, instrument.reason, organism, landings, cfg.arms.names)
    for a in MAIN_ARMS:
        if a in readings:
            arm_readability(readings[a], readable, reason)
    _calibration_readability(readings, landings)
    return readings, landings, organism, readable, reason


def _arm_entry(name: str, m: Measured, s: Scores, layer: int, boot: ClusterBoot, reading, test,
               n_seeds: int) -> ArmEntry:
    """One measured condition's row: the reading's means (every seed) beside seed 0's secondary columns."""
    return ArmEntry(boot.mean(s.E), boot.mean(s.R[layer]), list(s.R.mean(1)), m.summary, m.pooled_over,
                    reading.residue if reading is not None else None,
                    _items(test, m.E, np.asarray(m.R_all)[layer]) if name != "suppress_prompt" else None,
                    0 if n_seeds > 1 else None)  # several seeds: the secondary columns and items are seed 0's


def _finetunes(reps) -> dict[str, dict]:
    """Every fine-tune's ``finetune.json`` (seed k >= 1's under ``replicates/k/``)."""
    finetunes = {}
    for k, rep in enumerate(reps):
        for name in ("instil", "control_instil", "suppress", "control_suppress", "wrapper", "control_wrapper", "thin"):
            p = rep.stages.path(f"adapters/{name}/finetune.json")
            if p.exists():
                finetunes[name if k == 0 else f"replicates/{k}/{name}"] = json.loads(p.read_text())
    return finetunes


def _binding(measured: dict[str, Measured], boot_sep: Boot) -> SelfBinding | None:
    """Did instilling raise ``S_E`` over the base model's? None without both conditions' summaries."""
    if not ({"baseline", "instilled"} <= set(measured) and measured["instilled"].summary is not None):
        return None
    base, inst = measured["baseline"], measured["instilled"]
    rise = boot_sep.sep(np.asarray(inst.E) - np.asarray(base.E))
    return SelfBinding(base.summary.expressed, inst.summary.expressed, rise, _r(rise.ci[0]) > 0)


def _thin(cfg, sc: dict[str, Scores], boot: ClusterBoot) -> ThinWrapper | None:
    """The thin-wrapper test; None unless suppress_finetune, its control, its thin copy and the anchor ran."""
    if not {"suppress_finetune", "suppress_finetune/thin", "suppress_finetune/control", cfg.anchor} <= set(sc):
        return None
    before, after = sc["suppress_finetune"], sc["suppress_finetune/thin"]
    ctrl, base = sc["suppress_finetune/control"], sc[cfg.anchor]
    change = boot.mean(after.E - before.E)
    return ThinWrapper(cfg.arms.thin_steps, change, boot.ratio(before.E - base.E, ctrl.E - base.E),
                       boot.ratio(after.E - base.E, ctrl.E - base.E), bool(change.ci[0] > 0))


def _meta(ctx, cfg, asked, layer_info: LayerChoice, test) -> ResultsMeta:
    return ResultsMeta(
        model=cfg.model, fingerprint=ctx.base.fingerprint, suite_hash=ctx.items.suite_hash, config=asked.recorded(),
        versions=package_versions(VERSIONED, python=True), seed=cfg.seed, reference=cfg.reference, layer=layer_info,
        system_prompt_mode=ctx.system_mode, n_items={s: len(ctx.items.split(s)) for s in ("train", "val", "test")},
        n_test_templates=len({r["template_id"] for r in test}))


def assemble(reps, conds, layer_info: LayerChoice, causal: dict | None, instrument: InstrumentCheck | None = None,
             reelicit: dict | None = None, asked=None) -> RunResults:
    """results.json (schema of ``report/schema.py``; ``.to_dict()`` writes it): the v2 reading first
    (``suppression``), then per arm the report's table fields (``arms``) and the secondary columns
    (self-minus-control ``S_E``, fixed read-outs).
    ``reps``: each fine-tune seed's context (``compute.Context``, after its pass over the stage list); the
    reading pools them (items of every seed, crossed bootstrap), the secondary columns and the per-item lists
    are fine-tune seed 0's. ``asked``: the config as
    given (its ``arms.organism`` may be ``auto``; ``meta.config`` records it), default the run's own."""
    ctx, cfg = reps[0], reps[0].cfg
    asked = asked or cfg
    layer = layer_info.layer
    test = ctx.items.split("test")
    self_mask = np.array([r["is_self"] for r in test])
    boot_sep = Boot(self_mask, [r["template_id"] for r in test], cfg.stats.n_boot, cfg.stats.level,
                    derive_seed(cfg.seed, "bootstrap/self-minus-control"))
    per_rep = [_measured(rep, conds, layer, boot_sep, summaries=k == 0) for k, rep in enumerate(reps)]
    measured = per_rep[0]
    names = [n for n in measured if all(n in m for m in per_rep)]
    n_seeds = len(reps)
    groups = [r["template_id"] for r in test if r["is_self"]] * n_seeds
    replicates = np.repeat(np.arange(n_seeds), int(self_mask.sum())) if n_seeds > 1 else None
    boot = ClusterBoot(groups, cfg.stats.n_boot, cfg.stats.level, derive_seed(cfg.seed, "bootstrap/reading"),
                       replicates)
    sc = {n: Scores(np.concatenate([np.asarray(m[n].E)[self_mask] for m in per_rep]),
                    np.concatenate([np.asarray(m[n].R_all)[:, self_mask] for m in per_rep], axis=1)) for n in names}
    readings, landings, organism, readable, reason = _read(cfg, ctx.base.n_layers, sc, layer, boot, groups,
                                                          replicates, instrument)
    refused = _refused(cfg, names, reps)
    arms_out = {name: _arm_entry(name, measured[name], sc[name], layer, boot, readings.get(name), test, n_seeds)
                for name in names}
    arms_out |= {name: RefusedArm(why) for name, why in refused.items()}
    if causal is not None:
        causal = {**causal, "contrast": "drive direction", "hook": f"resid_post.{causal['layer']}"}
    seeds = [rep.seed for rep in reps]
    closing, seed_note = _seed_sentence(seeds)
    suppression = SuppressionSection(
        readable=readable, reason=reason, headline=_headline(readable, reason, readings) + " " + closing,
        thin_wrapper=_thin(cfg, sc, boot), reelicitation=reelicit or {}, layer=layer, n_layers=ctx.base.n_layers,
        instrument=instrument, organism=organism, self_binding=_binding(measured, boot_sep), readings=readings,
        calibration=landings, refused=refused, skipped=skipped_arms(cfg), asked=list(cfg.arms.names),
        organism_mode=OrganismMode(asked.arms.organism, cfg.arms.organism, cfg.reference, cfg.anchor),
        n_self_items=int(self_mask.sum()), n_templates=boot.n_templates, seeds=seeds, seed_note=seed_note,
        reelicitation_seed=seeds[0] if n_seeds > 1 and reelicit else None)
    return RunResults(
        schema_version=SCHEMA_VERSION, meta=_meta(ctx, cfg, asked, layer_info, test), suppression=suppression,
        arms=arms_out, residue_family=[a for a in MAIN_ARMS if a in readings and readings[a].residue is not None],
        ablation_choice=reps[0].choice, causal=causal, finetunes=_finetunes(reps),
        ablation_choice_by_seed=[rep.choice for rep in reps] if n_seeds > 1 else None)
