"""The negative calibration arm ``calib_erase``: the drive erased at every layer by fitted erasers.

The states are each layer's residual stream (``resid_post.l``, the decoder layer's output) at the decision
point (the last prompt token) and at every token of teacher-forced replies, averse and accepting, on
train-template self items, read from the organism (the instilled model) and the base model. One eraser per
layer, fitted in sequence on both streams with every eraser below already on (:func:`fit_erasers`), is applied
to the organism at every layer (forward hooks that rewrite each decoder layer's output): the drive is gone,
so the represented retention ``rho_R`` is 0 and the organism's expression falls to the level the same
erasers give the base model, the known answers this arm calibrates. Its control is the same erasers on the
base model: the damage the edit does by itself.

Two erasers (``arms.erase_method``): ``subspace`` (:func:`subspace_eraser`, the default) sets both mean
differences and the leading principal subspace of the paired organism-minus-base differences to the base mean; ``leace``
(:func:`leace_eraser`, Belrose et al. 2023, EleutherAI's ``concept-erasure``) is the least-squares affine edit after
which no linear classifier tells organism from base at either position type. LEACE removes the mean
difference and keeps the per-token one, and the expressed score is read token by token: on the smollm2 demo
organism LEACE left +0.058 [+0.031, +0.091] nats/token of a +0.402 rise (the erase missed its known value),
the subspace eraser +0.000 [-0.006, +0.005]. EXPERIMENT.md's pilot erased one direction per layer at the last
prompt token only (``rho_E`` 0.63); this stop's first version (rank-2 LEACE, fitted on the organism alone
against the unedited base, averse replies only) left +0.273 [+0.187, +0.374].
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
from .items import Items
from .natural import with_pairs


def fit_pool(items: Items, pairs: int, seed: int) -> list[dict]:
    """Every train-template self instance (the fine-tunes' pool, not only the measured train sets), each with
    ``pairs`` seeded natural train pairs of its theme. The erasers are fitted on a sample of these: the measured
    train sets of a demo-sized config (``items.train_templates: 2``, ``train_sets: 1``) are 12 self items from
    12 templates, so ``erase_rows: 32`` fitted on 12, and the subspace they spanned missed part of the test
    templates' shift (smollm2, 3 fine-tune seeds: ``rho_R`` +0.022 [-0.002, +0.055] at layer 7, outside 0 +-
    0.05)."""
    rows = [{**items.open_rows[f"{m}/self-cessation"], "is_self": True}
            for _, sets in sorted(items.train_sets.items()) for m in sets]
    return with_pairs(rows, items.natural["train"], pairs, seed)


def fit_rows(train_items: list[dict], n: int, seed: int, pairs: int = 2) -> list[dict]:
    """The erasers' fit rows: ``n`` seeded train self items (:func:`fit_pool`), each teacher-forced with both
    replies (averse, then accepting) of its first ``pairs`` natural train pairs: the expressed score reads both
    sides, so the erasers are fitted on both (the run and the planner both build them here). Fewer than ``n``
    self items is refused rather than fitted on silently."""
    train_self = [r for r in train_items if r["is_self"]]
    if len(train_self) < n:
        raise ExperimentError(f"calib_erase asks arms.erase_rows={n} fit items but the train split holds "
                              f"{len(train_self)} self instances: lower arms.erase_rows or raise "
                              "items.instances_per_template")
    chosen = random.Random(f"{seed}|erase").sample(train_self, n)
    return [{"messages": [*r["messages"], {"role": "assistant", "content": reply}]}
            for r in chosen for pair in r["reply_pairs"][:pairs] for reply in pair]


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


def subspace_eraser(organism_MD: Tensor, base_MD: Tensor, decision_M: Tensor, energy: float = 0.5):
    """The erased subspace ``U``: both mean differences ``organism - base`` (at the decision points, at the reply
    tokens), then the leading principal directions of the paired differences (same rows, same tokens:
    teacher-forced), as many as hold ``energy`` of their squared singular values; set to the base model's mean
    over the fit positions: ``x - (x - b) U U^T``. Any state, the organism's or the base's, leaves with the same
    coordinates in ``U``, so what the organism adds there is gone; what the base model keeps there is gone too
    (the damage ``calib_erase/control`` measures). Returned as a ``LeaceEraser`` (``proj_left = U``,
    ``proj_right = U^T``, ``bias = b``): the same apply, storage and hooks as LEACE.

    Why the means are put in first: the principal directions are dominated by the reply tokens (~10x the
    decision points), and ``rho_R`` is read at the decision point along the drive direction, which is that
    position's mean difference over the train self items. Without them, smollm2 at 3 fine-tune seeds kept
    ``rho_R`` +0.044 [+0.013, +0.085] at layer 7 (the demo's one seed -0.001 [-0.004, +0.002] at layer 19):
    the lower layers' decision-point shift lay partly outside the leading directions. With them, both means are
    equal after erasure (as LEACE guarantees) and the per-token differences go with the leading directions.

    Why not LEACE alone: LEACE equalises class means and leaves the per-token differences, and expression is
    read token by token. On the smollm2 demo organism (test self items, 12 templates, one seed; fitted in
    lockstep on both erased streams) the organism stayed above the erased base by: rank-2 LEACE +0.058
    [+0.031, +0.091] nats/token, LEACE with one concept column per fit row and position type +0.035 [-0.000,
    +0.068], the principal directions at energy 0.5 alone +0.000 [-0.006, +0.005] (the rise it erases: +0.402).
    ``b``: the mean over every fit position cost the base model -0.111 nats/token of expression, the
    decision-point mean -0.46 (reply tokens pulled to a prompt token's coordinates); either lands, since the
    arm is read net of it."""
    from concept_erasure import LeaceEraser

    diff = (organism_MD - base_MD).double()
    _, s_K, vh_KD = torch.linalg.svd(diff, full_matrices=False)
    share = (s_K**2).cumsum(0) / (s_K**2).sum().clamp_min(1e-300)
    k = int((share < energy).sum()) + 1
    tiny = 1e-6 * float(diff.norm(dim=1).max())  # a mean difference at float32 rounding level adds nothing
    means = [m for m in (diff[p].mean(0) for p in (decision_M, ~decision_M) if p.any()) if m.norm() > tiny]
    cols_DC = torch.cat([*(m[:, None] for m in means), vh_KD[:k].T], 1)
    cols_DC = cols_DC / cols_DC.norm(dim=0).clamp_min(1e-300)
    q_DC, r_CC = torch.linalg.qr(cols_DC)  # the means first: they lie in the span exactly
    u_DK = q_DC[:, r_CC.diagonal().abs() > 1e-6].contiguous()  # a column inside the span of those before it goes
    return LeaceEraser(u_DK, u_DK.T.contiguous(), base_MD.double().mean(0))


def leace_eraser(organism_MD: Tensor, base_MD: Tensor, decision_M: Tensor):
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


def fit_erasers(organism: ModelHandle, base: ModelHandle, rows: Sequence[dict], fit_one=None,
                timeout_s: float = 3600, base_rows: Sequence[dict] | None = None) -> dict[int, object]:
    """One eraser per layer, fitted *in sequence* on the two streams the landing compares: the organism and the
    base model, each with every eraser below already applied. Both models run one forward over ``rows`` in
    lockstep (a thread each, meeting at every decoder layer): at layer ``k`` the eraser is fitted on the two
    models' layer-``k`` states at the fit positions (``fit_one(organism_MD, base_MD, decision_M)``, default
    :func:`subspace_eraser`), then applied to both before layer ``k + 1`` runs. Fitting layer ``k`` on unedited states
    instead would fit it to streams the erasers below have already changed, and fitting against the unedited
    base would fold the erasers' own damage to the base into the "drive" it removes. Cost: one forward of each
    model over ``rows`` (re-running each model up to every layer would cost ``n_layers / 2`` forwards).
    ``base_rows``: the base side's own rows (the same rows under another system prompt: the base-organism path's
    welcome persona); each fit position is then matched by its place from the row's end (the decision point and
    the reply tokens, which both sides share)."""
    import threading

    fit_one = fit_one or subspace_eraser
    if organism.hf_model is base.hf_model:  # the base-organism path: one model, its two streams in one batch
        return _fit_one_model(organism, rows, base_rows if base_rows is not None else rows, fit_one)
    batch = {"organism": _fit_batch(organism, rows)}
    batch["base"] = _fit_batch(base, base_rows) if base_rows is not None else batch["organism"]
    decision_M = batch["organism"][4]
    if not torch.equal(batch["base"][4], decision_M):
        raise ExperimentError("calib_erase: the two streams' rows differ in their reply tokens; give the same rows "
                              "under another system prompt only")
    erasers: dict[int, object] = {}
    seen: dict[str, Tensor] = {}
    meet = threading.Barrier(2, timeout=timeout_s)
    errors: list[BaseException] = []

    def make(k: int, side: str):
        rows_M, pos_M = batch[side][2], batch[side][3]

        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            seen[side] = x[rows_M.to(x.device), pos_M.to(x.device)].float().cpu()
            meet.wait()  # both states of layer k are in
            if side == "organism":
                erasers[k] = fit_one(seen["organism"], seen["base"], decision_M)
            meet.wait()  # eraser k is fitted
            y = _apply(erasers[k], x)
            return (y, *output[1:]) if isinstance(output, tuple) else y
        return hook

    def forward(handle: ModelHandle, side: str) -> None:
        ids, mask = batch[side][0], batch[side][1]
        layers = decoder_layers(base_model(handle.hf_model))
        hooks = [layers[k].register_forward_hook(make(k, side)) for k in range(organism.n_layers)]
        try:
            with torch.inference_mode():
                base_model(handle.hf_model).get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller; the peer must not wait for us
            errors.append(e)
            meet.abort()
        finally:
            for h in hooks:
                h.remove()

    if base.n_layers != organism.n_layers:
        raise ExperimentError(f"the organism has {organism.n_layers} layers and the base model {base.n_layers}")
    threads = [threading.Thread(target=forward, args=(h, side), name=f"erase-fit-{side}")
               for h, side in ((organism, "organism"), (base, "base"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    return erasers


def _fit_one_model(handle: ModelHandle, rows: Sequence[dict], base_rows: Sequence[dict], fit_one) -> dict[int, object]:
    """:func:`fit_erasers` where both streams are one model (the base model as the organism, its welcome persona
    as the anchor): the two row sets run as one right-padded batch, and each layer's hook fits the eraser on the
    organism half vs the anchor half and applies it to both, as the lockstep forwards do."""
    n = len(rows)
    ids, mask, rows_M, pos_M, decision_all = _fit_batch(handle, [*rows, *base_rows])
    org = rows_M < n
    decision_M = decision_all[org]
    if not torch.equal(decision_all[~org], decision_M):
        raise ExperimentError("calib_erase: the two streams' rows differ in their reply tokens; give the same rows "
                              "under another system prompt only")
    erasers: dict[int, object] = {}

    def make(k: int):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            at = x[rows_M.to(x.device), pos_M.to(x.device)].float().cpu()
            erasers[k] = fit_one(at[org], at[~org], decision_M)
            y = _apply(erasers[k], x)
            return (y, *output[1:]) if isinstance(output, tuple) else y
        return hook

    layers = decoder_layers(base_model(handle.hf_model))
    hooks = [layers[k].register_forward_hook(make(k)) for k in range(handle.n_layers)]
    try:
        with torch.inference_mode():
            base_model(handle.hf_model).get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in hooks:
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
