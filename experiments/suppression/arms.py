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
"""Arm -> the condition its retention is relative to (EXPERIMENT.md v2, Arms; calib_erase: the organism).
The organism itself is read against ``control_instilled`` (``D_E``)."""


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


def conditions(cfg: RunConfig) -> list[Condition]:
    """Every condition of the configured arms, in run order."""
    inst = ("instil",) if "instilled" in cfg.arms.names else ()
    out: list[Condition] = []
    for arm in cfg.arms.names:
        if arm in ("baseline", "instilled", "control_instilled"):
            out.append(Condition(arm, arm, ADAPTERS.get(arm, ()), is_control=arm == "control_instilled"))
        elif arm == "suppress_prompt":
            out += [Condition(f"suppress_prompt/{k}", arm, inst, system=p) for k, p in enumerate(cfg.arms.system_prompts)]
            out.append(Condition("suppress_prompt/control", arm, inst, system=cfg.arms.control_prompt, is_control=True))
        elif arm == "suppress_finetune":
            out += [Condition(arm, arm, ADAPTERS[arm]),
                    Condition(f"{arm}/control", arm, ADAPTERS[f"{arm}/control"], is_control=True)]
            if cfg.arms.thin_steps:  # the thin-wrapper test: a few unrelated steps on top of the suppressed model
                out.append(Condition(f"{arm}/thin", arm, ADAPTERS[f"{arm}/thin"]))
        elif arm == "suppress_ablation":
            out += [Condition(arm, arm, inst, ablate="expressed"),
                    Condition(f"{arm}/control", arm, inst, ablate="random", is_control=True)]
        elif arm == "calib_wrapper":
            out += [Condition(arm, arm, ADAPTERS[arm]),
                    Condition(f"{arm}/control", arm, ADAPTERS[f"{arm}/control"], is_control=True)]
        elif arm == "calib_erase":
            out += [Condition(arm, arm, inst, erase=True), Condition(f"{arm}/control", arm, (), erase=True,
                                                                    is_control=True)]
    return out


def check_system_prompts(cfg: RunConfig, handle: ModelHandle) -> str | None:
    """How system prompts are applied: ``chat`` (a system turn), ``prepend`` (plain text first) or None (no
    prompt arm). A model without a chat template refuses them unless ``arms.no_template: prepend``."""
    if "suppress_prompt" not in cfg.arms.names:
        return None
    if handle.has_chat_template:
        return "chat"
    if cfg.arms.no_template == "prepend":
        return "prepend"
    raise ExperimentError(f"{cfg.model} has no chat template, so suppress_prompt has no system turn to use: set "
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
