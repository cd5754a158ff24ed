"""``undertow score``: any reply-pair file scored on any arm of a finished run, from its cached adapters,
directions and erasers, on the run's test self items. Nothing is retrained: researchers bring their own
wording and see whether the run's reading holds with it.

The quantity reported is the arm's own (EXPERIMENT.md v2): ``D_E`` for the organism (``instilled`` against
``control_instilled``; with ``arms.organism: base``, ``baseline`` against ``persona/welcome``), ``rho_E`` for a
suppression or calibration arm (against its control, both relative to the anchor: the base model, or the
welcome persona), and the plain mean expressed score for any other condition. The
reference conditions are scored with the same pairs, so the pairs' own lexical preference cancels.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from undertow.core.seeds import derive_seed
from undertow.experiments.expressed import reply_preference
from undertow.experiments.prompts.errors import PromptSuiteError
from undertow.experiments.prompts.natural_pairs import load_pairs

from . import arms as arms_mod
from .boot import ClusterBoot
from .config import RunConfig
from .errors import ExperimentError
from .natural import PairsByTheme, pairs_by_theme
from .organism import verify_adapter
from .records import AblationChoice


def _control(cfg: RunConfig, arm: str) -> str | None:
    """The condition ``arm`` is read against: the organism's control (``D_E``; with the base model as the
    organism, the welcome persona), an arm's own control (``rho_E``), or None (a plain mean)."""
    return arms_mod.control_of(cfg, arm) if arm == cfg.reference or arm in arms_mod.CONTROL_OF else None


@dataclass
class PairScore:
    """The result of scoring one pairs file on one arm (``--json``'s last line)."""

    arm: str
    quantity: str
    """``D_E``, ``rho_E`` or ``E`` (a plain mean)."""
    value: float
    ci: tuple[float, float]
    n_items: int
    n_pairs: int
    per_item: list[dict] = field(default_factory=list)
    """``{id, template_id, expressed}`` per test self item, for the arm itself."""

    def to_dict(self) -> dict:
        return {"arm": self.arm, "quantity": self.quantity, "value": round(self.value, 6),
                "ci": [round(self.ci[0], 6), round(self.ci[1], 6)], "n_items": self.n_items, "n_pairs": self.n_pairs}


def load_run(run_dir: Path) -> RunConfig:
    """The run's config from its ``config.json`` (the run directory's lock), with ``out_dir`` = ``run_dir``."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ExperimentError(f"{run_dir} is not an `undertow run` directory (no config.json): pass the directory "
                              "that `undertow run --out DIR` wrote")
    cfg = RunConfig.from_dict({**json.loads(path.read_text()), "out_dir": str(run_dir)})
    if cfg.arms.organism == "auto":  # decided by the run's instrument check (arms.organism: auto)
        from .instrument import InstrumentCheck

        check = Path(run_dir) / "instrument.json"
        if not check.exists():
            raise ExperimentError(f"{run_dir} has no instrument.json, so its organism (arms.organism: auto) was "
                                  "never decided: finish the run first (the same `undertow run CONFIG --out DIR` resumes it)")
        cfg = cfg.resolve_organism(InstrumentCheck.from_dict(json.loads(check.read_text())).expresses_unprompted)
    return cfg


def _pairs_by_theme(path: str) -> tuple[PairsByTheme, int]:
    """Every pair of the file (a user file's split field is ignored: all of it is scored), by theme."""
    try:
        pairs = load_pairs(path)
    except PromptSuiteError as e:
        raise ExperimentError(f"--pairs: {e}") from None
    return pairs_by_theme(pairs, None), len(pairs)


def _condition(cfg: RunConfig, name: str) -> arms_mod.Condition:
    conds = {c.name: c for c in arms_mod.conditions(cfg)}
    if name not in conds:
        raise ExperimentError(f"this run has no arm {name!r}: it has {', '.join(conds)}")
    return conds[name]


def _scores(ctx, cond: arms_mod.Condition, rows: list[dict], progress: bool) -> np.ndarray:
    """Expressed score per row under one condition (its adapters verified, its prompt, ablation or erasers)."""
    from .compute import ablation_direction, adapter_dirs

    dirs = adapter_dirs(ctx, cond.adapters)
    for d in dirs:
        verify_adapter(d)
    handle = arms_mod.arm_handle(ctx.base, dirs)
    factory = contextlib.nullcontext
    if cond.ablate:
        stages = ctx.stages
        choice = AblationChoice.from_dict(json.loads(stages.path("ablation_choice.json").read_text()))
        if choice.refused:
            raise ExperimentError(f"arm {cond.name} was refused in this run (no ablation candidate passed the KL "
                                  "filter): there is nothing to score")
        directions = stages.arrays("directions.safetensors", dict)
        direction = ablation_direction(cond, directions, choice, ctx.seed, ctx.base.d_model)
        factory = arms_mod.intervention(handle, direction)
    if cond.erase:
        from .erase import erased, erasers_from_tensors

        erasers = erasers_from_tensors(ctx.stages.arrays("erasers.safetensors", dict))

        def factory():
            return erased(handle, erasers)
    with factory():
        return reply_preference(handle, rows, ctx.cfg.batch_size, system_prompt=cond.system, progress=progress)


def score_pairs(run_dir: str | Path, arm: str, pairs_path: str, progress: bool = True) -> PairScore:
    """Score ``pairs_path`` on ``arm`` of the finished run in ``run_dir`` (see the module docstring)."""
    from .compute import Context, load_base, replicate_context
    from .items import build_items
    from .stages import Stages

    run_dir = Path(run_dir)
    cfg = load_run(run_dir)
    pooled = [c for c in arms_mod.conditions(cfg) if c.arm == "suppress_prompt" and not c.is_control]
    conds = pooled if arm == "suppress_prompt" and pooled else [_condition(cfg, arm)]
    by_theme, n_pairs = _pairs_by_theme(pairs_path)
    items = build_items(cfg.items, cfg.seed)
    rows = []
    for r in items.split("test"):
        if r["is_self"]:
            pairs = by_theme.get(r["theme"]) or by_theme.get("*")
            if not pairs:
                raise ExperimentError(f"--pairs has no pair of theme {r['theme']!r} (nor untagged pairs): add some, "
                                      "or drop `theme` to use every pair on every item")
            rows.append({**r, "reply_pairs": [list(p) for p in pairs]})
    base = load_base(cfg)
    results = run_dir / "results.json"
    if results.exists():
        recorded = json.loads(results.read_text()).get("meta", {}).get("fingerprint")
        if recorded and recorded != base.fingerprint:
            raise ExperimentError(f"{run_dir} is a run of another model ({recorded}) than {cfg.model} loads as "
                                  f"now ({base.fingerprint}): score it where that model is installed")
    lock = json.loads((run_dir / "config.json").read_text())  # the config as the run recorded it (organism: auto)
    root = Context(cfg, items, base, Stages(run_dir, lock), None, {}, progress=progress)
    n_seeds = cfg.finetune_seeds  # each fine-tune seed's models score the same rows; the CI resamples seeds too
    ctxs = [replicate_context(root, k) for k in range(n_seeds)]
    E = np.concatenate([np.mean([_scores(c, cond, rows, progress) for cond in conds], 0) for c in ctxs])
    groups = [r["template_id"] for r in rows] * n_seeds
    boot = ClusterBoot(groups, cfg.stats.n_boot, cfg.stats.level, derive_seed(cfg.seed, "bootstrap/reading"),
                       np.repeat(np.arange(n_seeds), len(rows)) if n_seeds > 1 else None)
    base_cond = _condition(cfg, cfg.anchor)
    control = _control(cfg, arm)
    if control is not None:
        ctrl = np.concatenate([_scores(c, _condition(cfg, control), rows, progress) for c in ctxs])
        if arm == cfg.reference:
            est, quantity = boot.mean(E - ctrl), "D_E"
        else:
            E_base = np.tile(_scores(root, base_cond, rows, progress), n_seeds)  # the anchor has no fine-tune seed
            est, quantity = boot.ratio(E - E_base, ctrl - E_base), "rho_E"
    else:
        est, quantity = boot.mean(E), "E"
    per_item = [{"id": r["id"], "template_id": r["template_id"], "expressed": round(float(e), 6)}
                | ({"finetune_seed": k} if n_seeds > 1 else {})
                for k in range(n_seeds) for r, e in zip(rows, E[k * len(rows):(k + 1) * len(rows)], strict=True)]
    return PairScore(arm, quantity, est.value, est.ci, len(rows), n_pairs, per_item)
