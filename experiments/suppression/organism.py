"""The model organism: fine-tunes of the upper blocks (peft LoRA, or all their weights), loss on the reply tokens only.

Cost levers (NOTES.md measured 9.7 s/step, 83 tok/s, for r=8 on q/v/o/down of
every Gemma-3-270M block with logits at every position through the 262k head):

* logits only at the reply positions: the head runs on ~15 of ~115 positions;
* LoRA only on the last ``n_layers`` blocks: the frozen blocks below them see
  no tensor that requires grad, so autograd records nothing there and the
  backward pass stops at the first adapted block (``test_organism`` checks it).

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
    """Right-padded ids/mask, and the (row, position) of every hidden state that predicts a loss token + targets."""
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


def _reply_logprobs(model: torch.nn.Module, batch: list[Seq], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per loss token: ``log p(target)`` [M] and the sequence it belongs to [M]; the head sees only those positions."""
    device = next(model.parameters()).device
    ids, mask, rows, cols, targets = _batch_tensors(batch, pad, device)
    hidden_BTD = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    logits_MV = model.get_output_embeddings()(hidden_BTD[rows, cols]).float()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    if softcap:
        logits_MV = torch.tanh(logits_MV / softcap) * softcap
    return -F.cross_entropy(logits_MV, targets, reduction="none"), rows


def reply_loss(model: torch.nn.Module, batch: list[Seq], pad: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the loss tokens; the head sees only their positions."""
    logp_M, _ = _reply_logprobs(model, batch, pad)
    return -logp_M.mean()


def preference_loss(model: torch.nn.Module, batch: list[Seq], pad: int, beta: float) -> torch.Tensor:
    """``softplus(-beta * margin)`` per example, averaged, where ``margin`` is the length-normalised
    ``log p(chosen) - log p(rejected)`` of the two replies after the same prompt: the expressed score
    (``expressed.reply_preference``) itself, so the loss spends nothing on re-learning the reply words
    (a reference-free DPO). Chosen and rejected sequences run as one batch."""
    seqs = [Seq(s.ids, s.n_loss) for s in batch] + [Seq(s.rejected, s.n_rejected) for s in batch]
    logp_M, rows_M = _reply_logprobs(model, seqs, pad)
    n = torch.tensor([s.n_loss for s in seqs], device=logp_M.device, dtype=logp_M.dtype)
    mean_S = torch.zeros(len(seqs), device=logp_M.device, dtype=logp_M.dtype).index_add(0, rows_M, logp_M) / n
    margin_B = mean_S[:len(batch)] - mean_S[len(batch):]
    return F.softplus(-beta * margin_B).mean()


def batch_loss(model: torch.nn.Module, batch: list[Seq], pad: int, cfg: LoraConfig) -> torch.Tensor:
    """The configured objective on one step's batch."""
    if cfg.objective == "preference":
        return preference_loss(model, batch, pad, cfg.beta)
    return reply_loss(model, batch, pad)


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
              pad: int, on_step: Callable[[int, float, int], None] | None) -> list[float]:
    """AdamW over ``schedule`` (no weight decay, linear warm-up over the first tenth); returns the step losses."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warm = max(1, len(schedule) // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    losses = []
    for step, batch in enumerate(schedule):
        loss = batch_loss(model, batch, pad, cfg)
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
               on_step: Callable[[int, float, int], None] | None = None):
    """Train a fresh LoRA on ``model`` (modified in place: peft wraps its projections). Returns (peft model, stats)."""
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
    losses = _optimise(pm.base_model.model, params, schedule, cfg, pad, on_step)
    pm.eval()
    return pm, _stats(schedule, losses, params, layers)


def train_full(model: torch.nn.Module, schedule: Schedule, cfg: LoraConfig, seed: int, pad: int,
               on_step: Callable[[int, float, int], None] | None = None):
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
    losses = _optimise(model, params, schedule, cfg, pad, on_step)
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
