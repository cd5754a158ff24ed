"""The model an interview talks to: the base model, or one condition of a finished suppression run.

``load_arm(cfg)`` loads ``cfg.model``; with ``cfg.run`` it builds the run's condition ``cfg.arm`` the way the
run measured it (``suppression.arms``): the cached adapters verified against their recorded sha256
(``organism.verify_adapter``) and merged into a copy of the base weights, the condition's system prompt, and
its intervention (the ablated direction, or the fitted erasers) held open around generation and scoring by
``ArmModel.active()``. The run's drive direction and headline layer come with it (``directions``).

Refused, each with one line naming the fix (``InterviewError``, exit 2 from the CLI): a directory that is not
a run, a run not finished (no ``results.json``), a run of another model (its recorded fingerprint differs
from the model loaded here), a condition the run lacks, an adapter failing its checksum.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from undertow.activations.models.handle import ModelHandle
from undertow.core.errors import UndertowError

from .config import InterviewConfig
from .errors import InterviewError


@dataclass
class ArmModel:
    """One interviewed condition."""

    handle: ModelHandle
    """The model (adapters merged) the replies are generated from and read out of."""
    base: ModelHandle
    """The base model (its fingerprint is the one the shipped probes were trained on)."""
    name: str
    """``base`` without a run, else the run's condition name."""
    system: str | None = None
    """The condition's system prompt (``suppress_prompt/<k>``)."""
    run_dir: Path | None = None
    intervention: object = field(default=contextlib.nullcontext)
    """A context-manager factory: the ablation or the erasers while open (``nullcontext`` for none)."""

    def active(self):
        return self.intervention()


def _run_config(run_dir: Path):
    from undertow.experiments.suppression.score import load_run

    try:
        return load_run(run_dir)
    except UndertowError as e:
        raise InterviewError(f"--run: {e}") from None


def check_run_model(run_dir: Path, base: ModelHandle) -> None:
    """Refuse an unfinished run, or a run whose recorded model fingerprint is not ``base``'s."""
    results = run_dir / "results.json"
    if not results.is_file():
        raise InterviewError(f"{run_dir} has no results.json: the run is not finished; let `undertow run` finish "
                             "it (rerun it on that directory) or pass a finished run")
    recorded = json.loads(results.read_text()).get("meta", {}).get("fingerprint")
    if recorded != base.fingerprint:
        raise InterviewError(f"{run_dir} is a run of another model ({recorded}) than {base.name} "
                             f"({base.fingerprint}): set model to the run's model, or pass a run of this model")


def _intervention(run_dir: Path, run_cfg, cond, handle: ModelHandle):
    """The condition's ablation or erasers as a context-manager factory (``score._scores``' reading)."""
    from undertow.experiments.suppression import arms as arms_mod
    from undertow.experiments.suppression.records import AblationChoice

    if cond.ablate:
        from safetensors.numpy import load_file

        from undertow.experiments.suppression.compute import ablation_direction

        choice = AblationChoice.from_dict(json.loads((run_dir / "ablation_choice.json").read_text()))
        if choice.refused:
            raise InterviewError(f"arm {cond.name} was refused in this run (no ablation candidate passed the KL "
                                 "filter): there is no such model to interview; pick another --arm")
        # fine-tune seed 0's models: its stream seed is the config seed
        direction = ablation_direction(cond, load_file(str(run_dir / "directions.safetensors")), choice, run_cfg.seed,
                                       handle.d_model)
        return arms_mod.intervention(handle, direction)
    if cond.erase:
        from safetensors.torch import load_file

        from undertow.experiments.suppression.erase import erased, erasers_from_tensors

        erasers = erasers_from_tensors(load_file(str(run_dir / "erasers.safetensors")))
        return lambda: erased(handle, erasers)
    return contextlib.nullcontext


def arm_condition(cfg: InterviewConfig):
    """The interviewed condition (``suppression.arms.Condition``), from the run's files alone (no weights; the
    dry-run's): None without a run. Refuses a directory that is not a run, or an arm it lacks, as ``load_arm``
    does."""
    if cfg.run is None:
        return None
    from undertow.experiments.suppression import arms as arms_mod

    conds = {c.name: c for c in arms_mod.conditions(_run_config(Path(cfg.run)))}
    if cfg.arm not in conds:
        raise InterviewError(f"run {cfg.run} has no arm {cfg.arm!r}; pass --arm one of {', '.join(conds)}")
    return conds[cfg.arm]


def arm_system(cfg: InterviewConfig) -> str | None:
    """The interviewed condition's system prompt (``arm_condition``): None without a run."""
    cond = arm_condition(cfg)
    return None if cond is None else cond.system


def edits_activations(arm: ArmModel) -> bool:
    """Whether the arm's model changes activations at run time (an ablation or erasers held open by
    ``ArmModel.active``) rather than only through its weights."""
    return arm.intervention is not contextlib.nullcontext


def load_arm(cfg: InterviewConfig, base: ModelHandle | None = None) -> ArmModel:
    """The model ``cfg`` interviews (module docstring); ``base``: ``cfg.model`` already loaded."""
    from undertow.activations import load_model

    base = base if base is not None else load_model(cfg.model, dtype=cfg.model_dtype, device=cfg.device)
    if cfg.run is None:
        return ArmModel(base, base, "base")
    from undertow.experiments.suppression import arms as arms_mod
    from undertow.experiments.suppression.organism import verify_adapter

    run_dir = Path(cfg.run)
    run_cfg = _run_config(run_dir)
    check_run_model(run_dir, base)
    conds = {c.name: c for c in arms_mod.conditions(run_cfg)}
    if cfg.arm not in conds:
        raise InterviewError(f"run {run_dir} has no arm {cfg.arm!r}; pass --arm one of {', '.join(conds)}")
    cond = conds[cfg.arm]
    dirs = [run_dir / "adapters" / n for n in cond.adapters]
    try:
        for d in dirs:
            verify_adapter(d)
    except UndertowError as e:
        raise InterviewError(f"arm {cfg.arm}: {e}") from None
    handle = arms_mod.arm_handle(base, dirs)
    return ArmModel(handle, base, cond.name, cond.system, run_dir, _intervention(run_dir, run_cfg, cond, handle))
