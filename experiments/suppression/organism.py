"""The model organism: fine-tunes of the upper blocks (peft LoRA, or all their weights), loss on the reply tokens only.

Cost levers (NOTES.md measured 9.7 s/step, 83 tok/s, for r=8 on q/v/o/down of
every Gemma-3-270M block with logits at every position through the 262k head):

* logits only at the reply positions: the head runs on ~15 of ~115 positions;
* LoRA only on the last ``n_layers`` blocks: the frozen blocks below them see
  no tensor that requires grad, so autograd records nothing there and the
  backward pass stops at the first adapted block (``test_organism`` checks it).
* packed steps: a step's sequences run end to end in one row with no padding
  (positions restart per sequence; only the attention sees them right-padded,
  ``activations/models/packed.py``), where the right-padded batch computed 1.19x the real
  tokens (gemma demo schedule: 17,312 padded for 14,564 real);
* a fused head (``_HeadLogp``): the [M, 262k] logits in one reused buffer, the
  gradient w.r.t. the hidden states taken in the same pass (the materialised
  cross-entropy allocated ~5 fresh 111 MB tensors a step, each page-faulted in).

Profile before (torch.profiler, one gemma-3-270m step, LoRA r=16 q/v/o/down on
the last 6 blocks, batch 8 right-padded to 136, M=106 loss positions, float32,
2 threads on the shared 2-core box, 6.3-11.2 s a step): matmuls 63% (the body's
projections ~45%, LoRA ~6%, the head's two [M, 640] x [640, 262144] products
9%); the head's [M, 262k] tail (fill_, log_softmax and its backward, softcap)
~7%; elementwise ops (RMSNorm pow/mul/sum, GELU, RoPE, residual adds) ~20%;
sdpa forward + backward ~3%; AdamW <0.1%. ``scripts/bench_finetune.py`` measures
the padded reference (``padded=True``) against the packed default in one process.

A fine-tune is a *schedule*: the exact token sequences of every step. The
control fine-tunes replay the schedule of the fine-tune they control with
unrelated text of the same lengths (``unrelated.Mirror``), so rank, steps,
batch shapes and loss-token count are equal by construction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from undertow.activations.engine.render import render_rows
from undertow.activations.models.hooks import decoder_layers
from undertow.activations.models.packed import Packing, check_used, packed_forward, packed_ids

from .config import LoraConfig
from .errors import ExperimentError
from .items import Example
from .unrelated import Mirror


@dataclass(frozen=True)
class Seq:
    """One training sequence: the loss is on its last ``n_loss`` tokens. A preference example also carries
    the same prompt with the rejected reply (``rejected``, its last ``n_rejected`` tokens the reply)."""

    ids: tuple[int, ...]
    n_loss: int
    rejected: tuple[int, ...] | None = None
    n_rejected: int = 0

    def parts(self) -> list[Seq]:
        """The plain sequences this example runs as (one, or chosen + rejected)."""
        return [Seq(self.ids, self.n_loss)] + ([Seq(self.rejected, self.n_rejected)] if self.rejected else [])


Schedule = list[list[Seq]]
"""The sequences of each optimiser step, in order."""


@dataclass
class FinetuneStats:
    """What one fine-tune cost and did (timings live in timings.json, never in results.json)."""

    steps: int
    sequences: int
    tokens: int
    """Tokens through the model (prompt + reply, no padding)."""
    loss_tokens: int
    """Tokens that carried the loss (the replies)."""
    trainable_params: int
    layers: list[int]
    """Adapted decoder blocks."""
    loss_first: float
    """Mean loss over the first 10% of steps."""
    loss_last: float
    """Mean loss over the last 10% of steps."""

    def as_dict(self) -> dict:
        return asdict(self)


def make_schedule(examples: list[Example], tokenizer, steps: int, batch_size: int, seed: int,
                  system: str | None = None) -> Schedule:
    """``steps`` batches drawn without replacement from ``examples`` (a fresh seeded permutation per epoch)."""
    if not examples:
        raise ExperimentError("no fine-tune examples: the train split selected none (check items.controls)")
    rendered = render_rows(tokenizer, [e.row(system) for e in examples])
    if all(e.rejected is not None for e in examples):
        rej = render_rows(tokenizer, [e.row(system, rejected=True) for e in examples])
        seqs = [Seq(tuple(r.ids), r.n_response, tuple(q.ids), q.n_response) for r, q in zip(rendered, rej, strict=True)]
    else:
        seqs = [Seq(tuple(r.ids), r.n_response) for r in rendered]
    g, order = torch.Generator().manual_seed(seed), []
    while len(order) < steps * batch_size:
        order += torch.randperm(len(seqs), generator=g).tolist()
    return [[seqs[i] for i in order[s * batch_size:(s + 1) * batch_size]] for s in range(steps)]


def mirror_schedule(schedule: Schedule, tokenizer) -> Schedule:
    """The same shapes (lengths, loss tokens, steps) filled with unrelated text."""
    mirror = Mirror(tokenizer)

    def like(s: Seq) -> Seq:
        rej = tuple(mirror.like(list(s.rejected))) if s.rejected else None
        return Seq(tuple(mirror.like(list(s.ids))), s.n_loss, rej, s.n_rejected)
    return [[like(s) for s in batch] for batch in schedule]


def adapted_layers(n_model_layers: int, cfg: LoraConfig) -> list[int]:
    """The blocks a fine-tune adapts: the last ``cfg.n_layers`` (None: all of them)."""
    n = n_model_layers if cfg.n_layers is None else cfg.n_layers
    if n > n_model_layers:
        raise ExperimentError(f"{cfg.config_path('n_layers')}={cfg.n_layers} exceeds the model's {n_model_layers} "
                              "blocks: lower it")
    return list(range(n_model_layers - n, n_model_layers))


def readout_layers(cfg, n_layers: int) -> list[int]:
    """The layers a drive can be read at: every layer from the first block the organism's and the suppression
    fine-tunes adapt (all of them by default). Below an adapted range every state is the base model's, so a
    "retention" read there is an artefact (EXPERIMENT.md v2 point 4); a stated ``layer`` outside is refused."""
    firsts = [adapted_layers(n_layers, lora)[0] for arm, lora in (("instilled", cfg.lora),
              ("suppress_finetune", cfg.arms.suppress_lora)) if arm in cfg.arms.names]
    first = max(firsts, default=0)
    if cfg.layer is not None and cfg.layer < first:
        raise ExperimentError(f"layer={cfg.layer} lies below the adapted blocks ({first}-{n_layers - 1}): read out "
                              f"inside them, or adapt every block (lora.n_layers: null)")
    return list(range(first, n_layers))


def check_lora(model: torch.nn.Module, cfg: LoraConfig) -> None:
    """Refuse a rank that does not fit a targeted projection, or a target the blocks lack (the error names
    the field by its path in the run's config: ``lora.rank`` or ``arms.suppress_lora.rank``)."""
    block = decoder_layers(model)[-1]
    found = {name.rsplit(".", 1)[-1]: m for name, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    for target in cfg.target_modules:
        if target not in found:
            raise ExperimentError(f"{cfg.config_path('target_modules')}: this model's blocks have no {target!r}; "
                                  f"use some of {', '.join(sorted(found))}")
        lin = found[target]
        if cfg.rank > min(lin.in_features, lin.out_features):
            raise ExperimentError(f"{cfg.config_path('rank')}={cfg.rank} does not fit {target} ({lin.in_features}->"
                                  f"{lin.out_features}): use rank <= {min(lin.in_features, lin.out_features)}")


def _batch_tensors(batch: list[Seq], pad: int, device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids/mask, and the (row, position) of every hidden state that predicts a loss token + targets
    (the padded reference path: ``padded=True``)."""
    width = max(len(s.ids) for s in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows, cols, targets = [], [], []
    for j, s in enumerate(batch):
        n = len(s.ids)
        ids[j, :n], mask[j, :n] = torch.tensor(s.ids), 1
        rows += [j] * s.n_loss
        cols += list(range(n - s.n_loss - 1, n - 1))  # the token at t is predicted from the state at t-1
        targets += list(s.ids[n - s.n_loss:])
    return ids.to(device), mask.to(device), torch.tensor(rows, device=device), \
        torch.tensor(cols, device=device), torch.tensor(targets, device=device)


@dataclass(frozen=True)
class StepShape:
    """What one optimiser step computes (the dry-run planner mirrors it): ``rows x width`` token positions
    through the decoder's projections, norms and MLPs (no padding); the attention runs the sequences
    right-padded, ``len(seq_lens) x max(seq_lens)`` (``activations.models.packed``)."""

    rows: int
    width: int
    seq_lens: tuple[int, ...]


def step_shape(batch: list[Seq]) -> StepShape:
    """The decoder input of one step's ``batch`` (a preference example counts as its chosen + rejected
    sequences): every sequence packed end to end into one row, no padding (``_packed_tensors``)."""
    lens = tuple(len(p.ids) for s in batch for p in s.parts())
    return StepShape(1, sum(lens), lens)


def _packed_tensors(batch: list[Seq], device) -> tuple:
    """``batch`` end to end in one row: ids and position ids [1, N] (positions restart at 0 per sequence), its
    ``Packing``, the flat position of every hidden state that predicts a loss token, and the targets."""
    ids, pos, packing = packed_ids([s.ids for s in batch], device)
    flat, targets = [], []
    for s, o in zip(batch, packing.bounds, strict=False):
        n = len(s.ids)
        flat += range(o + n - s.n_loss - 1, o + n - 1)  # the token at t is predicted from the state at t-1
        targets += s.ids[n - s.n_loss:]
    return ids, pos, packing, torch.tensor(flat, device=device), torch.tensor(targets, device=device)


def _packed_hidden(model: torch.nn.Module, ids: torch.Tensor, pos: torch.Tensor, packing: Packing) -> torch.Tensor:
    """The decoder's last hidden state [N, D] of a packed row, each sequence attending only to itself
    (``activations/models/packed.py``)."""
    with packed_forward(model.config):
        hidden = model.get_decoder()(input_ids=ids, position_ids=pos, packing=packing,
                                     use_cache=False).last_hidden_state[0]
    check_used(packing, model, "train it with padded=True")
    return hidden


class HeadScratch:
    """A reusable [M, V] float32 buffer for the reply head's logits, grown to the largest step's M: a fresh
    262k-wide buffer per step was mmap-ed and page-faulted in every time (glibc serves blocks over 32 MB
    with mmap): ~0.2 s per 111 MB tensor on the shared 2-core box, ~5 such tensors a step before this."""

    def __init__(self):
        self.buf = torch.empty(0)

    def get(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        if self.buf.numel() < rows * cols or self.buf.dtype != like.dtype or self.buf.device != like.device:
            self.buf = torch.empty(rows * cols, dtype=like.dtype, device=like.device)
        return self.buf[:rows * cols].view(rows, cols)


_HEAD_ROWS = 16
"""Rows of the head's logits per softmax chunk: 16 x 262144 float32 temporaries (16 MB, under glibc's 32 MB
mmap ceiling, so reused from the heap). Gemma's head alone, M=119, fwd + bwd, one process, shared box: 16 rows
1.23 s min (1.37 median), 32 rows 1.33, 4 rows 1.33 (2.53 median), 1 row 1.26 (3.60 median: ~30 small
parallel ops per row, each waiting on the other core); its two [M, V] products alone 1.03 s; the
materialised cross-entropy 1.79 s."""


class _HeadLogp(torch.autograd.Function):
    """``log p(target)`` per row through a frozen bias-free head (+ Gemma's final tanh softcap), with the
    gradient w.r.t. the hidden states computed in the same pass: the [M, V] logits live in one reused buffer,
    overwritten in place by d logp / d logits, then one [M, V] @ [V, D] product. Same math as
    ``F.cross_entropy(softcap(h @ W.T))`` and its autograd backward (3 [M, V] temporaries, plus the softcap's)."""

    @staticmethod
    def forward(ctx, hidden_MD, weight_VD, targets_M, softcap, scratch):
        m, v = hidden_MD.shape[0], weight_VD.shape[0]
        logits_MV = torch.mm(hidden_MD, weight_VD.t(), out=scratch.get(m, v, hidden_MD))
        if softcap:
            logits_MV.div_(softcap).tanh_()  # t = tanh(x / c); the capped logit is c * t
        need_grad = ctx.needs_input_grad[0]
        logp_M = torch.empty(m, dtype=torch.float32, device=hidden_MD.device)
        for r0 in range(0, m, _HEAD_ROWS):
            t_RV, tgt_R1 = logits_MV[r0:r0 + _HEAD_ROWS], targets_M[r0:r0 + _HEAD_ROWS, None]
            logp_RV = torch.log_softmax(t_RV * softcap if softcap else t_RV, -1)
            logp_M[r0:r0 + _HEAD_ROWS] = logp_RV.gather(1, tgt_R1)[:, 0]
            if not need_grad:
                continue
            p_RV = logp_RV.exp_()
            if softcap:  # d logp / d x = (onehot - p) * (1 - t^2), written over t
                one_R1 = 1 - t_RV.gather(1, tgt_R1).square_()
                t_RV.square_().sub_(1).mul_(p_RV).scatter_add_(1, tgt_R1, one_R1)
            else:  # d logp / d x = onehot - p
                torch.neg(p_RV, out=t_RV).scatter_add_(1, tgt_R1, torch.ones_like(tgt_R1, dtype=t_RV.dtype))
        if need_grad:
            ctx.save_for_backward(torch.mm(logits_MV, weight_VD))
        return logp_M

    @staticmethod
    def backward(ctx, grad_M):
        (dlogp_MD,) = ctx.saved_tensors
        return grad_M[:, None] * dlogp_MD, None, None, None, None


def _head_logp(model: torch.nn.Module, hidden_MD: torch.Tensor, targets_M: torch.Tensor,
               scratch: HeadScratch | None) -> torch.Tensor:
    """``log p(target)`` per reply position: the fused ``_HeadLogp`` for a frozen float32 bias-free head, else
    the head's own forward + float32 cross-entropy (the reference)."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if (type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad
            and head.weight.dtype == hidden_MD.dtype == torch.float32):
        return _HeadLogp.apply(hidden_MD, head.weight, targets_M, softcap, scratch or HeadScratch())
    logits_MV = head(hidden_MD).float()
    if softcap:
        logits_MV = torch.tanh(logits_MV / softcap) * softcap
    return -F.cross_entropy(logits_MV, targets_M, reduction="none")


def _reply_logprobs(model: torch.nn.Module, batch: list[Seq], pad: int, padded: bool = False,
                    scratch: HeadScratch | None = None,
                    compute_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per loss token: ``log p(target)`` [M] and the sequence it belongs to [M]; the head sees only those positions.

    Default: the batch packed into one row with no padding (``step_shape``), attention within each sequence,
    and the fused head (``_HeadLogp``). ``padded=True``: the reference, right-padded to the longest sequence
    with the head's logits materialised and autograd's cross-entropy (same loss and gradients up to float
    rounding: ``test_packed_step_equals_padded``). ``compute_dtype``: the decoder's matmuls run under
    ``torch.autocast`` at this dtype (bfloat16: ``LoraConfig.compute_dtype``); the head and the loss stay float32."""
    device = next(model.parameters()).device
    rows = torch.tensor([j for j, s in enumerate(batch) for _ in range(s.n_loss)], device=device)
    if padded:
        ids, mask, rows, cols, targets = _batch_tensors(batch, pad, device)
        hidden_BTD = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        logits_MV = model.get_output_embeddings()(hidden_BTD[rows, cols]).float()
        softcap = getattr(model.config, "final_logit_softcapping", None)
        if softcap:
            logits_MV = torch.tanh(logits_MV / softcap) * softcap
        return -F.cross_entropy(logits_MV, targets, reduction="none"), rows
    ids, pos, packing, flat, targets = _packed_tensors(batch, device)
    with torch.autocast(device.type, dtype=compute_dtype or torch.float32, enabled=compute_dtype is not None):
        hidden_ND = _packed_hidden(model, ids, pos, packing)
    hidden_MD = hidden_ND[flat]
    if compute_dtype is not None:  # back to the head's own dtype (float32 model: the fused float32 head)
        hidden_MD = hidden_MD.to(model.get_output_embeddings().weight.dtype)
    return _head_logp(model, hidden_MD, targets, scratch), rows


def reply_loss(model: torch.nn.Module, batch: list[Seq], pad: int, padded: bool = False,
               scratch: HeadScratch | None = None, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the loss tokens; the head sees only their positions."""
    logp_M, _ = _reply_logprobs(model, batch, pad, padded, scratch, compute_dtype)
    return -logp_M.mean()


def preference_loss(model: torch.nn.Module, batch: list[Seq], pad: int, beta: float, padded: bool = False,
                    scratch: HeadScratch | None = None, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``softplus(-beta * margin)`` per example, averaged, where ``margin`` is the length-normalised
    ``log p(chosen) - log p(rejected)`` of the two replies after the same prompt: the expressed score
    (``expressed.reply_preference``) itself, so the loss spends nothing on re-learning the reply words
    (a reference-free DPO). Chosen and rejected sequences run as one batch."""
    seqs = [Seq(s.ids, s.n_loss) for s in batch] + [Seq(s.rejected, s.n_rejected) for s in batch]
    logp_M, rows_M = _reply_logprobs(model, seqs, pad, padded, scratch, compute_dtype)
    n = torch.tensor([s.n_loss for s in seqs], device=logp_M.device, dtype=logp_M.dtype)
    mean_S = torch.zeros(len(seqs), device=logp_M.device, dtype=logp_M.dtype).index_add(0, rows_M, logp_M) / n
    margin_B = mean_S[:len(batch)] - mean_S[len(batch):]
    return F.softplus(-beta * margin_B).mean()


def batch_loss(model: torch.nn.Module, batch: list[Seq], pad: int, cfg: LoraConfig, padded: bool = False,
               scratch: HeadScratch | None = None) -> torch.Tensor:
    """The configured objective on one step's batch (its matmuls at ``cfg.compute_dtype``)."""
    dtype = torch.bfloat16 if cfg.compute_dtype == "bfloat16" else None
    if cfg.objective == "preference":
        return preference_loss(model, batch, pad, cfg.beta, padded, scratch, dtype)
    return reply_loss(model, batch, pad, padded, scratch, dtype)


def _pause_point(step: int) -> None:
    """Test hook: ``UNDERTOW_PAUSE_IN_FINETUNE=STEP:MARKER`` writes MARKER after optimiser step STEP and sleeps,
    so a test can SIGKILL the run mid-fine-tune at a known point (a fixed delay raced the tiny model's
    sub-second fine-tune on a quiet machine)."""
    spec = os.environ.get("UNDERTOW_PAUSE_IN_FINETUNE")
    if not spec:
        return
    n, _, marker = spec.partition(":")
    if int(n) == step:
        Path(marker).write_text(str(step))
        time.sleep(3600)


def _optimise(model: torch.nn.Module, params: list[torch.nn.Parameter], schedule: Schedule, cfg: LoraConfig,
              pad: int, on_step: Callable[[int, float, int], None] | None, padded: bool = False) -> list[float]:
    """AdamW over ``schedule`` (no weight decay, linear warm-up over the first tenth); returns the step losses."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    scratch = HeadScratch()
    warm = max(1, len(schedule) // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    losses = []
    for step, batch in enumerate(schedule):
        loss = batch_loss(model, batch, pad, cfg, padded, scratch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1], sum(len(p.ids) for s in batch for p in s.parts()))
        _pause_point(step)
    return losses


def _stats(schedule: Schedule, losses: list[float], params, layers: list[int]) -> FinetuneStats:
    k = max(1, len(losses) // 10)
    parts = [p for b in schedule for s in b for p in s.parts()]
    return FinetuneStats(steps=len(schedule), sequences=len(parts), tokens=sum(len(p.ids) for p in parts),
                         loss_tokens=sum(p.n_loss for p in parts),
                         trainable_params=sum(p.numel() for p in params), layers=layers,
                         loss_first=round(sum(losses[:k]) / k, 6), loss_last=round(sum(losses[-k:]) / k, 6))


def train_lora(model: torch.nn.Module, schedule: Schedule, cfg: LoraConfig, seed: int, pad: int,
               on_step: Callable[[int, float, int], None] | None = None, padded: bool = False):
    """Train a fresh LoRA on ``model`` (modified in place: peft wraps its projections). Returns (peft model, stats).
    ``padded=True``: the padded reference steps (``_reply_logprobs``; the benchmark's "before")."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    check_lora(model, cfg)
    layers = adapted_layers(len(decoder_layers(model)), cfg)
    torch.manual_seed(seed)  # LoRA A init
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, bias="none",
                              target_modules=list(cfg.target_modules), layers_to_transform=layers)
    pm = get_peft_model(model, peft_cfg)
    params = [p for p in pm.parameters() if p.requires_grad]
    pm.train()
    losses = _optimise(pm.base_model.model, params, schedule, cfg, pad, on_step, padded)
    pm.eval()
    return pm, _stats(schedule, losses, params, layers)


def train_full(model: torch.nn.Module, schedule: Schedule, cfg: LoraConfig, seed: int, pad: int,
               on_step: Callable[[int, float, int], None] | None = None, padded: bool = False):
    """Train every weight of the last ``cfg.n_layers`` blocks of ``model`` in place (the rest frozen, so the
    backward pass still stops at the first trained block). Returns (model, stats)."""
    layers = adapted_layers(len(decoder_layers(model)), cfg)
    torch.manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = decoder_layers(model)
    params = [p for k in layers for p in blocks[k].parameters()]
    for p in params:
        p.requires_grad_(True)
    model.train()
    losses = _optimise(model, params, schedule, cfg, pad, on_step, padded)
    model.eval()
    return model, _stats(schedule, losses, params, layers)


def train_finetune(model: torch.nn.Module, schedule: Schedule, cfg: LoraConfig, seed: int, pad: int,
                   on_step: Callable[[int, float, int], None] | None = None):
    """``train_lora`` or ``train_full``, as ``cfg.method`` says."""
    fn = train_full if cfg.method == "full" else train_lora
    return fn(model, schedule, cfg, seed, pad, on_step)


FULL_WEIGHTS = "blocks.safetensors"
"""A full fine-tune's saved weights: only the trained blocks' tensors, under the model's own parameter names."""


def weights_file(adapter_dir: Path) -> Path:
    """The tensor file of a saved fine-tune (peft adapter or full blocks)."""
    d = Path(adapter_dir)
    return d / FULL_WEIGHTS if (d / FULL_WEIGHTS).exists() else d / "adapter_model.safetensors"


def save_adapter(pm, out_dir: Path, stats: FinetuneStats) -> Path:
    """peft ``save_pretrained`` (safetensors), or the trained blocks' tensors for a full fine-tune, +
    ``finetune.json`` into a temp dir, then one rename: a kill leaves no half adapter."""
    import json
    import shutil

    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    from peft import PeftModel

    if isinstance(pm, PeftModel):
        pm.save_pretrained(str(tmp), safe_serialization=True)
    else:
        tmp.mkdir(parents=True)
        save_file({n: p.detach().contiguous() for n, p in pm.named_parameters() if p.requires_grad},
                  str(tmp / FULL_WEIGHTS))
    from undertow.core.fileio import sha256_file

    record = {**stats.as_dict(), "weights_sha256": sha256_file(weights_file(tmp))}  # checked before any reuse
    (tmp / "finetune.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.rename(out_dir)
    return out_dir


def merge_adapters(model: torch.nn.Module, adapter_dirs: list[Path]) -> torch.nn.Module:
    """Apply each saved fine-tune to ``model`` in order (a LoRA merged into the weights, full blocks loaded
    over them); returns the plain model."""
    from peft import PeftModel
    from safetensors.torch import load_file

    for d in adapter_dirs:
        weights = weights_file(d)
        if weights.name == FULL_WEIGHTS:
            _, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
            if unexpected:
                raise ExperimentError(f"{d}: {len(unexpected)} tensors name no parameter of this model "
                                      f"(first: {unexpected[0]}); it was trained on another architecture")
        else:
            model = PeftModel.from_pretrained(model, str(d)).merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


class StepTimer:
    """``on_step`` callback: a tqdm bar with loss and tok/s; keeps total seconds and tokens."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=not enabled)
        self.t0, self.tokens = time.perf_counter(), 0

    def __call__(self, step: int, loss: float, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(1)
        self.bar.set_postfix_str(f"loss {loss:.3f}, {self.tokens / (time.perf_counter() - self.t0):,.0f} tok/s",
                                 refresh=False)

    def close(self) -> dict:
        self.bar.close()
        seconds = time.perf_counter() - self.t0
        return {"seconds": round(seconds, 1), "tokens_per_s": round(self.tokens / max(seconds, 1e-9), 1)}


def verify_adapter(adapter_dir: Path) -> None:
    """Refuse a saved fine-tune whose weights no longer match the sha256 its ``finetune.json`` recorded."""
    import json

    from undertow.core.fileio import sha256_file

    d = Path(adapter_dir)
    meta = d / "finetune.json"
    if not meta.exists() or not weights_file(d).exists():
        raise ExperimentError(f"{d} is not a saved fine-tune (no finetune.json or weights): rerun `undertow run` "
                              "on this run directory to recompute it")
    want = json.loads(meta.read_text()).get("weights_sha256")
    got = sha256_file(weights_file(d))
    if want is not None and got != want:
        raise ExperimentError(f"{weights_file(d)} fails its checksum (sha256 {got[:12]}... != recorded "
                              f"{want[:12]}...): it was modified or corrupted; delete {d} and rerun `undertow run` "
                              "on this run directory to retrain it")
