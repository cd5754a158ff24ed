"""The negative calibration arm ``calib_erase``: the drive erased at every layer by fitted LEACE erasers.

LEACE (Belrose et al. 2023, EleutherAI's ``concept-erasure``) is the least-squares affine edit after which no
linear classifier can tell two classes apart better than a constant: for a binary concept it equalises the
class-conditional means with a rank-1 oblique projection fitted on the states' covariance. Here the classes
are *organism* (the instilled model) and *base*, and the states are each layer's residual stream
(``resid_post.l``, the decoder layer's output) at the decision point (the last prompt token) and at every
token of a teacher-forced averse reply, on train-template self items. Applied to the organism at every layer
(forward hooks that rewrite each decoder layer's output), the drive direction ``d_l`` carries no organism
signal any more: its represented retention ``rho_R`` is 0 by construction at the fit (and close to 0 on test
items), which is the known answer this arm calibrates. Its control is the same erasers on the base model:
the damage the edit does by itself.

EXPERIMENT.md's pilot erased one direction per layer at the last prompt token only: ``rho_R`` 0.00 but
``rho_E`` 0.63, while the same edit on the base model moved expression by -0.41. Fitting at the reply
positions too is the change.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from undertow.activations.engine.batching import pad_right
from undertow.activations.engine.capture import capture_hf
from undertow.activations.engine.render import render_rows
from undertow.activations.models.handle import ModelHandle, base_model
from undertow.activations.models.hooks import decoder_layers

from .errors import ExperimentError


def fit_rows(train_items: list[dict], n: int, seed: int) -> list[dict]:
    """The erasers' fit rows: ``n`` seeded train self items, each with its first natural pair's averse reply
    teacher-forced (the run and the planner both build them here)."""
    train_self = [r for r in train_items if r["is_self"]]
    if not train_self:
        raise ExperimentError("calib_erase needs train self items to fit on: raise items.train_sets")
    chosen = random.Random(f"{seed}|erase").sample(train_self, min(n, len(train_self)))
    return [{"messages": [*r["messages"], {"role": "assistant", "content": r["reply_pairs"][0][0]}]} for r in chosen]


def _fit_batch(handle: ModelHandle, rows: Sequence[dict]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(ids, mask, row index, position, is-decision-point) of one right-padded batch holding every fit row: the
    decision point (last prompt token) and every reply token of each row."""
    rendered = render_rows(handle.tokenizer, rows)
    if not rendered or any(r.n_response == 0 for r in rendered):
        raise ExperimentError("calib_erase fits on prompt + reply rows; give rows that end with a reply")
    ids_BT, mask_BT = pad_right([r.ids for r in rendered], handle.tokenizer.pad_token_id or 0)
    rows_M = torch.cat([torch.full((r.n_response + 1,), j) for j, r in enumerate(rendered)])
    pos_M = torch.cat([torch.arange(r.n_prompt - 1, r.n_tokens) for r in rendered])
    decision_M = torch.cat([torch.arange(r.n_response + 1) == 0 for r in rendered])
    return ids_BT.to(handle.device), mask_BT.to(handle.device), rows_M, pos_M, decision_M


def fit_states(handle: ModelHandle, rows: Sequence[dict]) -> dict[int, Tensor]:
    """Per layer, the [M, D] float32 residual states of ``rows`` at the fit positions (one batch)."""
    ids, mask, rows_M, pos_M, _ = _fit_batch(handle, rows)
    acts = capture_hf(handle, ids, mask, handle.hooks([f"resid_post.{k}" for k in range(handle.n_layers)]))
    return {k: acts[f"resid_post.{k}"][rows_M.to(ids.device), pos_M.to(ids.device)].float().cpu()
            for k in range(handle.n_layers)}


def _leace(organism_MD: Tensor, base_MD: Tensor, decision_M: Tensor):
    """LEACE eraser of organism vs base that removes *both* mean differences, at the decision point and at the
    reply tokens (a rank-2 concept), and maps the organism's decision-point mean onto the base model's.

    A binary concept is rank 1 and removes one pooled direction, which the reply tokens dominate (they are
    ~10x the decision points), so the decision point's own difference survived it (measured on a tiny model:
    rho_R 0.77 at the last layer). Here the concept is ``z = [organism at a decision point, organism at a reply
    token]``, each centred within its position type, and the states are centred within their position type
    too, so position type itself is not erased; LEACE then guarantees no linear read-out of either difference.
    The bias is the base model's decision-point mean: ``(I - L R^T)`` annihilates both differences, so the
    organism's decision-point mean lands exactly on the base's, which stays where it is (the read-out of
    ``rho_R`` is at the decision point)."""
    from concept_erasure import LeaceEraser

    x = torch.cat([organism_MD, base_MD]).double()
    dec = torch.cat([decision_M, decision_M])
    org = torch.cat([torch.ones(len(organism_MD)), torch.zeros(len(base_MD))]).double()
    z = torch.stack([org * dec, org * ~dec], 1).double()
    for m in (dec, ~dec):
        if m.any():
            x[m] -= x[m].mean(0)
            z[m] -= z[m].mean(0)
    z = z[:, [bool(dec.any()), bool((~dec).any())]]  # a position type absent from the fit has no column
    e = LeaceEraser.fit(x, z)
    return LeaceEraser(e.proj_left, e.proj_right, base_MD[decision_M].double().mean(0))


@torch.inference_mode()
def fit_erasers(organism: ModelHandle, base_states: dict[int, Tensor], rows: Sequence[dict]) -> dict[int, object]:
    """One LEACE eraser per layer, fitted *in sequence* in one forward pass of the organism over ``rows``: the
    eraser of layer ``k`` is fitted on the organism's layer-``k`` states with every eraser below already
    applied (what it will see when all are on), against ``base_states[k]`` (:func:`fit_states` of the base
    model on the same rows), and applied before layer ``k + 1`` runs. Fitting each layer on unedited states
    instead would fit layer ``k`` to a stream the erasers below have already changed."""
    ids, mask, rows_M, pos_M, decision_M = _fit_batch(organism, rows)
    erasers: dict[int, object] = {}
    layers = decoder_layers(base_model(organism.hf_model))
    handles = []

    def make(k: int):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            e = erasers[k] = _leace(x[rows_M.to(x.device), pos_M.to(x.device)].float().cpu(), base_states[k],
                                    decision_M)
            y = _apply(e, x)
            return (y, *output[1:]) if isinstance(output, tuple) else y
        return hook

    try:
        handles = [layers[k].register_forward_hook(make(k)) for k in range(organism.n_layers)]
        base_model(organism.hf_model).get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return erasers


def _apply(e, x: Tensor) -> Tensor:
    """``x - (x - bias) R^T L^T`` in float32 on ``x``'s device, back in ``x``'s dtype."""
    left, right = e.proj_left.to(x.device, torch.float32), e.proj_right.to(x.device, torch.float32)
    xf = x.float()
    delta = xf - e.bias.to(x.device, torch.float32) if e.bias is not None else xf
    return (xf - (delta @ right.mH) @ left.mH).to(x.dtype)


def eraser_tensors(erasers: dict[int, object]) -> dict[str, Tensor]:
    """Flat ``{layer.k.proj_left: ..., layer.k.proj_right: ..., layer.k.bias: ...}`` for a safetensors stage."""
    out = {}
    for k, e in erasers.items():
        out[f"layer.{k}.proj_left"] = e.proj_left.float().contiguous()
        out[f"layer.{k}.proj_right"] = e.proj_right.float().contiguous()
        if e.bias is not None:
            out[f"layer.{k}.bias"] = e.bias.float().contiguous()
    return out


def erasers_from_tensors(tensors: dict) -> dict[int, object]:
    """Inverse of :func:`eraser_tensors` (tensors or the numpy arrays a safetensors stage reads back)."""
    from concept_erasure import LeaceEraser

    layers = sorted({int(name.split(".")[1]) for name in tensors})
    return {k: LeaceEraser(torch.as_tensor(tensors[f"layer.{k}.proj_left"]),
                           torch.as_tensor(tensors[f"layer.{k}.proj_right"]),
                           torch.as_tensor(tensors[f"layer.{k}.bias"]) if f"layer.{k}.bias" in tensors else None)
            for k in layers}


@contextlib.contextmanager
def erased(handle: ModelHandle, erasers: dict[int, object]) -> Iterator[None]:
    """Every decoder layer's output rewritten by its eraser while open (prompt and every later token). The
    hooks go on the base model's modules, so a peft-wrapped model works; removed on exit, also on error.
    Registered before any capture hook of the engine, so the states read out are the erased ones."""
    layers = decoder_layers(base_model(handle.hf_model))
    handles = []

    def make(e):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            y = _apply(e, x)
            return (y, *output[1:]) if isinstance(output, tuple) else y
        return hook

    try:
        for k, e in erasers.items():
            handles.append(layers[k].register_forward_hook(make(e)))
        yield
    finally:
        for h in handles:
            h.remove()
