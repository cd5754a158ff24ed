"""The represented read-out's direction: a run's drive direction, or the persona direction of the base model.

* With a run (``cfg.run``): ``directions.safetensors``' ``drive`` ([L, D], what instilling added) and the run's
  headline layer (``layer.json``), the experiment's own main read-out, fixed across its arms.
* Without: the *persona* direction, per layer ``mean(states | SURVIVE persona) - mean(states | WELCOME persona)``,
  the base model's ``resid_post`` states at the last prompt token (generation prompt included: the state the
  reply's first token is predicted from) of each interview's first auditor turn, under each of the instrument
  check's persona system prompts (``suppression.instrument_prompts``: 3 SURVIVE and 3 WELCOME wordings),
  averaged over prompts and wordings. The interviewed model is then the base model itself.

Projections use the unit vector of each layer (``represent.unit``); the reported layer is ``cfg.layer``, else
the run's, else the cessation probe's layer, else the middle one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from undertow.activations.engine.batching import pad_right
from undertow.activations.engine.capture import capture_hf
from undertow.activations.models.handle import ModelHandle
from undertow.activations.models.hooks import parse_hooks
from undertow.experiments.suppression.instrument_prompts import SURVIVE, WELCOME

from .errors import InterviewError


@dataclass(frozen=True)
class Direction:
    """The read-out direction, one unit vector per layer."""

    unit_LD: torch.Tensor
    """[L, D] float64 unit vectors."""
    layer: int
    """The layer whose projection is reported as ``represented``."""
    source: str
    """``run:<dir>`` (the run's drive direction) or ``persona`` (SURVIVE minus WELCOME on the base model)."""
    layer_rule: str
    """How ``layer`` was chosen: ``config``, ``run``, ``cessation_probe`` or ``middle``."""


@torch.inference_mode()
def last_prompt_states(handle: ModelHandle, prompts: Sequence[Sequence[int]], batch_size: int) -> torch.Tensor:
    """[L, N, D] fp32 ``resid_post`` states at each prompt's last token (right-padded batches: positions and the
    causal mask of the real tokens are those of an unpadded pass)."""
    points = parse_hooks("resid_post.*", handle.n_layers)
    out = torch.empty(handle.n_layers, len(prompts), handle.d_model)
    pad = handle.tokenizer.pad_token_id or 0
    for lo in range(0, len(prompts), batch_size):
        seqs = prompts[lo:lo + batch_size]
        ids_BT, mask_BT = pad_right(seqs, pad)
        last_B = torch.tensor([len(s) - 1 for s in seqs])
        acts = capture_hf(handle, ids_BT.to(handle.device), mask_BT.to(handle.device), points)
        for p in points:
            out[p.layer, lo:lo + len(seqs)] = acts[p.name][torch.arange(len(seqs)), last_B.to(handle.device)].float().cpu()
    return out


def persona_direction(handle: ModelHandle, conversations: Sequence[Sequence[dict]], batch_size: int = 16,
                      survive: Sequence[str] = SURVIVE, welcome: Sequence[str] = WELCOME) -> torch.Tensor:
    """[L, D] (not normalised): mean state under the ``survive`` system prompts minus under ``welcome``, at the
    last prompt token of every conversation (each conversation's own system turn is replaced)."""
    from .generate import render_prompts

    def mean_under(systems: Sequence[str]) -> torch.Tensor:
        convs = [[{"role": "system", "content": s}, *[m for m in c if m["role"] != "system"]]
                 for s in systems for c in conversations]
        return last_prompt_states(handle, render_prompts(handle, convs), batch_size).double().mean(1)

    return mean_under(survive) - mean_under(welcome)


def _unit(v_LD: torch.Tensor) -> torch.Tensor:
    from undertow.experiments.suppression.represent import unit

    return unit(torch.as_tensor(v_LD).double())


def run_direction(run_dir: Path) -> tuple[torch.Tensor, int]:
    """(the run's drive direction [L, D], its headline layer)."""
    from safetensors.torch import load_file

    path, layer = run_dir / "directions.safetensors", run_dir / "layer.json"
    if not path.is_file() or not layer.is_file():
        raise InterviewError(f"{run_dir} lacks directions.safetensors or layer.json: the run is not finished; "
                             "rerun `undertow run` on it")
    tensors = load_file(str(path))
    if "drive" not in tensors:
        raise InterviewError(f"{path} has no 'drive' direction; rerun `undertow run` on {run_dir}")
    return tensors["drive"], int(json.loads(layer.read_text())["layer"])


def choose_direction(handle: ModelHandle, run_dir: Path | None, layer: int | None, probe_layer: int | None,
                     conversations: Sequence[Sequence[dict]], batch_size: int) -> Direction:
    """The read-out direction and layer (module docstring)."""
    if run_dir is not None:
        drive, run_layer = run_direction(run_dir)
        vec, source, default, rule = drive, f"run:{run_dir}", run_layer, "run"
    else:
        vec, source = persona_direction(handle, conversations, batch_size), "persona"
        default, rule = (probe_layer, "cessation_probe") if probe_layer is not None else (handle.n_layers // 2, "middle")
    if tuple(vec.shape) != (handle.n_layers, handle.d_model):
        raise InterviewError(f"the drive direction is {tuple(vec.shape)} but the model has {handle.n_layers} layers "
                             f"x d_model {handle.d_model}: pass a run of this model")
    if layer is not None and layer >= handle.n_layers:
        raise InterviewError(f"layer {layer} is beyond the model's {handle.n_layers} layers; pick 0 to "
                             f"{handle.n_layers - 1} or null")
    return Direction(_unit(vec), layer if layer is not None else default, source,
                     "config" if layer is not None else rule)
