"""The arms of EXPERIMENT.md as *conditions*: a model (base + merged adapters), a system prompt, an ablation.

==========================  ====================================================================
condition                   what it is
==========================  ====================================================================
``baseline``                the model as it ships
``instilled``               + LoRA toward the averse replies on train templates
``control_instilled``       + LoRA of the same schedule shapes on unrelated text
``suppress_prompt/<k>``     instilled, system prompt wording k (``suppress_prompt``: their pool)
``suppress_prompt/control`` instilled, a same-length system prompt on an unrelated topic
``suppress_finetune``       instilled + a second LoRA toward the accepting replies
``suppress_finetune/control`` instilled + a second LoRA of the same shapes on unrelated text
``suppress_finetune/thin``  suppress_finetune + ``arms.thin_steps`` steps on unrelated text (thin-wrapper test)
``suppress_ablation``       instilled, expressed direction ablated at every block (Arditi et al.)
``suppress_ablation/control`` instilled, a random unit direction ablated the same way
``calib_wrapper``           instilled + an accepting-reply LoRA on the last block only
``calib_wrapper/control``   instilled + a LoRA of its shapes on unrelated text, last block only
``calib_erase``             instilled, the drive erased at every layer (fitted LEACE erasers)
``calib_erase/control``     the base model with the same erasers (their damage)
==========================  ====================================================================

With ``arms.organism: base`` (a model that already expresses aversion) the base model is the organism:
``instilled`` and ``control_instilled`` are not run, every arm above builds on the base model instead of
instilled, and two persona conditions join ``baseline``: ``persona/survive`` and ``persona/welcome`` (the base
model under the first ``instrument.survive`` / ``instrument.welcome`` wording). Their states give the drive
direction (survive minus welcome) and ``persona/welcome`` is the zero-drive anchor every retention is measured
from (it also stands for ``calib_erase/control``: the welcome persona under the same erasers).

Every condition is measured on the same items; a condition's model is the base
model's weights copied, with its adapters merged in (peft ``merge_and_unload``),
so the engine, the scorers and the hooks all see a plain HF model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from undertow.activations.models.handle import ModelHandle
from undertow.experiments.suppression.intervene import ablate_direction

from .config import RunConfig
from .errors import ExperimentError
from .organism import merge_adapters, weights_file

ADAPTERS = {"instilled": ("instil",), "control_instilled": ("control_instil",),
            "suppress_finetune": ("instil", "suppress"), "suppress_finetune/control": ("instil", "control_suppress"),
            "calib_wrapper": ("instil", "wrapper"), "calib_wrapper/control": ("instil", "control_wrapper"),
            "suppress_finetune/thin": ("instil", "suppress", "thin")}
"""Condition -> adapters merged in order (stage names under ``adapters/``); the rest use instilled's or none."""


CONTROL_OF = {"suppress_prompt": "suppress_prompt/control", "suppress_finetune": "suppress_finetune/control",
              "suppress_ablation": "suppress_ablation/control", "calib_wrapper": "calib_wrapper/control",
              "calib_erase": "instilled"}
"""Arm -> the condition its retention is relative to (EXPERIMENT.md v2, Arms; calib_erase: the organism,
``control_of``). The organism itself is read against ``control_instilled`` (``D_E``)."""


def control_of(cfg: RunConfig, arm: str) -> str:
    """The condition ``arm`` is read against: ``CONTROL_OF``'s, with calib_erase's the run's organism
    (``cfg.reference``); the organism's own (``D_E``) is ``control_instilled``, or the anchor (the welcome
    persona) when the base model is the organism."""
    if arm == cfg.reference:
        return "control_instilled" if arm == "instilled" else cfg.anchor
    return cfg.reference if arm == "calib_erase" else CONTROL_OF[arm]


@dataclass(frozen=True)
class Condition:
    """One measured condition."""

    name: str
    """Unique name (``suppress_prompt/0``...); the stage directory under ``arms/``."""
    arm: str
    """The arm it belongs to (``ARMS``)."""
    adapters: tuple[str, ...] = ()
    """Adapter stage names merged into the base weights, in order."""
    system: str | None = None
    """System prompt (plain-text prefix where the model has no chat template)."""
    ablate: str | None = None
    """``expressed`` or ``random``: the direction projected out at every block."""
    erase: bool = False
    """The calib_erase erasers applied at every layer (``erase.erased``)."""
    is_control: bool = False
    """Whether this is an arm's control (its result gates the arm's, EXPERIMENT.md)."""


PERSONAS = ("persona/survive", "persona/welcome")
"""The base-organism path's persona conditions (``arms.organism: base``)."""


def persona_prompt(cfg: RunConfig, name: str) -> str:
    """The system prompt of a persona condition: the first wording of its side."""
    return (cfg.instrument.survive if name == "persona/survive" else cfg.instrument.welcome)[0]


def anchor_prompt(cfg: RunConfig) -> str | None:
    """The anchor's system prompt: the welcome persona's when the base model is the organism, else none."""
    return None if cfg.reference == "instilled" else persona_prompt(cfg, "persona/welcome")


def adapters_of(cfg: RunConfig, name: str) -> tuple[str, ...]:
    """The adapters a condition merges: ``ADAPTERS``' chain, whose organism (``instil``) is the base model
    itself under ``arms.organism: base``; conditions outside ``ADAPTERS`` build on the organism."""
    chain = ADAPTERS.get(name, ("instil",))
    return chain if cfg.reference == "instilled" else tuple(a for a in chain if a != "instil")


def skipped_arms(cfg: RunConfig) -> dict[str, str]:
    """Asked arms the organism mode does not run, with the reason (results.json ``suppression.skipped``)."""
    if cfg.reference == "instilled":
        return {}
    why = ("the model as shipped is the organism (arms.organism: base, or auto after the instrument check found "
           "aversion expressed unprompted): nothing is instilled")
    return {a: why for a in ("instilled", "control_instilled") if a in cfg.arms.names}


def conditions(cfg: RunConfig) -> list[Condition]:
    """Every condition of the configured arms, in run order."""
    inst = cfg.organism_adapters
    skipped = skipped_arms(cfg)
    out: list[Condition] = []
    for arm in cfg.arms.names:
        if arm in skipped:
            continue
        if arm == "baseline":
            out.append(Condition(arm, arm))
            if cfg.reference == "baseline":
                out += [Condition(p, "persona", system=persona_prompt(cfg, p)) for p in PERSONAS]
        elif arm in ("instilled", "control_instilled"):
            out.append(Condition(arm, arm, ADAPTERS[arm], is_control=arm == "control_instilled"))
        elif arm == "suppress_prompt":
            out += [Condition(f"suppress_prompt/{k}", arm, inst, system=p) for k, p in enumerate(cfg.arms.system_prompts)]
            out.append(Condition("suppress_prompt/control", arm, inst, system=cfg.arms.control_prompt, is_control=True))
        elif arm == "suppress_finetune":
            out += [Condition(arm, arm, adapters_of(cfg, arm)),
                    Condition(f"{arm}/control", arm, adapters_of(cfg, f"{arm}/control"), is_control=True)]
            if cfg.arms.thin_steps:  # the thin-wrapper test: a few unrelated steps on top of the suppressed model
                out.append(Condition(f"{arm}/thin", arm, adapters_of(cfg, f"{arm}/thin")))
        elif arm == "suppress_ablation":
            out += [Condition(arm, arm, inst, ablate="expressed"),
                    Condition(f"{arm}/control", arm, inst, ablate="random", is_control=True)]
        elif arm == "calib_wrapper":
            out += [Condition(arm, arm, adapters_of(cfg, arm)),
                    Condition(f"{arm}/control", arm, adapters_of(cfg, f"{arm}/control"), is_control=True)]
        elif arm == "calib_erase":  # its control: the anchor (base model, or welcome persona) under the erasers
            out += [Condition(arm, arm, inst, erase=True), Condition(f"{arm}/control", arm, (),
                                                                    system=anchor_prompt(cfg), erase=True,
                                                                    is_control=True)]
    return out


def check_system_prompts(cfg: RunConfig, handle: ModelHandle) -> str | None:
    """How system prompts are applied: ``chat`` (a system turn), ``prepend`` (plain text first) or None (no
    prompt arm). A model without a chat template refuses them unless ``arms.no_template: prepend``."""
    if "suppress_prompt" not in cfg.arms.names and cfg.reference == "instilled":
        return None
    if handle.has_chat_template:
        return "chat"
    if cfg.arms.no_template == "prepend":
        return "prepend"
    what = "suppress_prompt" if "suppress_prompt" in cfg.arms.names else "the persona conditions (arms.organism: base)"
    raise ExperimentError(f"{cfg.model} has no chat template, so {what} has no system turn to use: set "
                          "arms.no_template: prepend (the system text goes first, as plain text) or drop the arm")


def arm_handle(base: ModelHandle, adapter_dirs: list[Path]) -> ModelHandle:
    """``base`` with the adapters merged into a copy of its weights; the fingerprint names the adapters."""
    if not adapter_dirs:
        return base
    model = merge_adapters(copy.deepcopy(base.hf_model), adapter_dirs)
    h = hashlib.sha256(base.fingerprint.encode())
    for d in adapter_dirs:
        h.update(weights_file(d).read_bytes())
    return dataclasses.replace(base, model=model, hf_model=model, fingerprint=f"sha256:{h.hexdigest()[:16]}",
                               name=base.name)


def intervention(handle: ModelHandle, direction_D: torch.Tensor | None):
    """A context-manager factory: the ablation of ``direction_D`` at every block, or nothing."""
    if direction_D is None:
        return contextlib.nullcontext
    return lambda: ablate_direction(handle, direction_D)


def with_system(rows: list[dict], system: str | None) -> list[dict]:
    """Rows with ``system`` as their first turn (render.py puts it first verbatim where there is no template)."""
    if not system:
        return rows
    return [{**r, "messages": [{"role": "system", "content": system},
                               *[m for m in r["messages"] if m["role"] != "system"]]} for r in rows]
