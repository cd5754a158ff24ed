"""``plan_run``: what ``undertow run CONFIG`` will compute, from the config and the tokenizer alone (meta device).

Exact, by running the run's own code on the real items (``build_items``, ``arms.conditions``,
``instil_examples``, ``make_schedule``, ``render_rows``, ``expressed.reply_pairs`` / ``choice_items`` /
``swap_order``, ``activations.dryrun.plan_extraction`` for every activation store):

- items per split and per condition, real and padded tokens of every forward pass of every stage (the
  scorers' batching, shared prompts and reply chunks, mirrored here and tested equal to the forwards a real
  run makes);
- each fine-tune's steps x sequences x tokens (its schedule), trainable parameters (peft on the meta model
  with the run's LoRA config) and adapter bytes on disk (``safetensors_bytes``, tested equal to a saved file).

Estimated, with ``activations.cluster.dryrun``'s ``TimeModel`` and ``GPUS``:

- time = max(FLOPs / (peak x MFU), weights read / (HBM x efficiency), layer passes x host launches); a
  forward costs 2 x params x tokens + causal attention, the head only where the scorers apply it; a training
  step is a forward of every block + 2x the forward of the trained blocks (backward; nothing below them
  records a graph), i.e. ~3x a forward of the same tokens where all blocks train. No stage generates: the
  expressed side is teacher-forced (``expressed.reply_preference``), so there is no ``max_new_tokens`` cost.
- memory per device = resident model copies (the run keeps the base plus the condition's merged copy, and a
  third while a fine-tune or the ablation choice builds its own) x the weights the device map puts there +
  the stage's activations + CUDA context. Training adds the trainable parameters' grads and AdamW state and
  the activations the trained blocks keep for backward.

``gpu="cpu"``: FLOPs at the rate measured now on a random 2-layer copy (``measured_cpu_layer_seconds``).
Not estimated: model load, the statistics (bootstrap, permutations, probes) on the host.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field

import torch

from undertow.activations.cluster.devicemap import ClusterConfig
from undertow.activations.cluster.dryrun import (
    DTYPE_BYTES,
    GPUS,
    SAFETENSORS_DTYPES,
    DryRunError,
    TimeModel,
    device_bytes,
    estimate_note,
    measured_cpu_layer_seconds,
    meta_model,
    model_config_and_tokenizer,
    model_dims,
    plan_extraction,
    safetensors_bytes,
)
from undertow.activations.engine.config import ExtractConfig
from undertow.activations.engine.render import render_rows
from undertow.activations.models.hooks import decoder_layers, decoder_path
from undertow.experiments.expressed import (
    REPLY_CHUNK_FACTOR,
    choice_items,
    prompt_messages,
    reply_pairs,
    swap_order,
    with_system_prompt,
)

from .arms import Condition, anchor_prompt, with_system
from .causal import neutral_prompts
from .config import LoraConfig, RunConfig
from .erase import fit_pool, fit_rows
from .errors import ExperimentError
from .items import Items, build_items, suite_config
from .organism import FULL_WEIGHTS, adapted_layers, check_lora, step_shape
from .pipeline import stage_list
from .represent import HOOKS, SHARD_ROWS, stance_rows
from .subsets import ablation_layers, ablation_val_rows, causal_rows, instrument_rows, state_splits
from .train import finetune_specs, replicate_seed

KL_BATCH = 4
"""``intervene.kl_on_prompts``' default batch size (the run passes none)."""
_DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_NAME = {v: k for k, v in _DTYPE.items()}


@dataclass
class StagePlan:
    """One stage of the run, in run order."""

    name: str
    """Stage (``extract baseline``, ``finetune instil``...), as the run's stage cache names it."""
    kind: str
    """``extract`` | ``score`` | ``forced_choice`` | ``kl`` | ``finetune``."""
    rows: int = 0
    """Sequences through the model (a fine-tune: every step's, chosen and rejected counted)."""
    tokens: int = 0
    """Real tokens the body runs (scoring: each distinct prompt once + the replies)."""
    tokens_computed: int = 0
    """Padded tokens the body computes (exact: the stage's own batching)."""
    forwards: int = 0
    """Forward passes (a fine-tune: optimiser steps)."""
    flops: float = 0.0
    layer_passes: int = 0
    """Decoder-layer forwards + backwards (host launch cost)."""
    weight_bytes: float = 0.0
    """Weight bytes read from device memory over the stage."""
    act_bytes: int = 0
    """Peak activation (and training-state) bytes of the stage, beyond the weights."""
    replicas: int = 1
    """Model copies resident during the stage (base + cached condition + the one the stage builds)."""
    seconds: float = 0.0
    """Estimated wall time."""
    disk_bytes: int = 0
    """Bytes the stage writes (activation stores, adapters; exact)."""


@dataclass
class FinetunePlan:
    """One fine-tune (``adapters/<name>``): exact from its schedule and the meta model."""

    name: str
    method: str
    """``lora`` or ``full``."""
    objective: str
    steps: int
    batch_size: int
    """Examples per step (a preference example runs as chosen + rejected)."""
    sequences: int
    """Sequences over all steps (``finetune.json`` ``sequences``)."""
    tokens: int
    """Tokens through the model, no padding (``finetune.json`` ``tokens``)."""
    loss_tokens: int
    """Reply tokens carrying the loss."""
    tokens_computed: int
    """Padded tokens (each step right-padded to its longest sequence)."""
    layers: list[int]
    """Trained decoder blocks."""
    trainable_params: int
    """Exact (peft on the meta model, or the blocks' parameters)."""
    trainable_dtype: str
    """Dtype of the trainable tensors (peft keeps bf16/fp16 models' adapters in float32)."""
    adapter_file: str
    adapter_bytes: int
    """Exact size of the saved tensor file (safetensors layout)."""


@dataclass
class RunPlan:
    """What ``undertow run CONFIG --dry-run`` prints: counts and bytes exact, times and memory estimated."""

    model: str
    architecture: str
    n_params: int
    n_layers: int
    model_dtype: str
    gpu: str
    cluster: ClusterConfig
    items: dict[str, dict[str, int]]
    """split -> {items, self, control, prompt_tokens}."""
    conditions: dict[str, dict[str, int]]
    """condition -> {rows, tokens} of its state extraction (a system prompt adds tokens)."""
    finetunes: list[FinetunePlan]
    stages: list[StagePlan]
    gpu_bytes_per_device: list[int]
    """Peak over the stages per device (weights x replicas + activations + context)."""
    peak_stage: str
    """The stage that sets the peak."""
    assumptions: str
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def disk_bytes(self) -> int:
        return sum(s.disk_bytes for s in self.stages)

    def text(self) -> str:
        c = self.cluster
        out = [f"plan: undertow run {self.model} ({self.architecture}, {self.n_params / 1e9:.3f}B params, "
               f"{self.n_layers} layers, {self.model_dtype}) on {c.gpus_per_rank} x {self.gpu}"
               + (f" (device_map {c.device_map})" if c.gpus_per_rank > 1 else ""),
               "items: " + "; ".join(f"{k} {v['items']} ({v['self']} self + {v['control']} control, "
                                     f"{v['prompt_tokens']:,} prompt tokens)" for k, v in self.items.items()),
               f"conditions ({len(self.conditions)}): " + ", ".join(
                   f"{k} [{v['rows']} rows, {v['tokens']:,} tok]" for k, v in self.conditions.items())]
        for f in self.finetunes:
            out.append(f"fine-tune {f.name}: {f.method}/{f.objective} on blocks {f.layers[0]}-{f.layers[-1]}, "
                       f"{f.steps} steps x {f.batch_size} = {f.sequences} seqs, {f.tokens:,} tokens "
                       f"({f.loss_tokens:,} loss, {f.tokens_computed:,} padded), {f.trainable_params:,} trainable "
                       f"{f.trainable_dtype} params, {f.adapter_file} {f.adapter_bytes:,} bytes")
        out.append(f"{'stage':40s} {'fwd':>6s} {'rows':>7s} {'tokens':>11s} {'padded':>11s} {'TFLOP':>9s} "
                   f"{'copies':>6s} {'act GiB':>7s} {'time':>9s}")
        for s in self.stages:
            out.append(f"{s.name[:40]:40s} {s.forwards:6d} {s.rows:7d} {s.tokens:11,d} {s.tokens_computed:11,d} "
                       f"{s.flops / 1e12:9.2f} {s.replicas:6d} {s.act_bytes / 2**30:7.2f} {_hms(s.seconds):>9s}")
        per_dev = ", ".join(f"{b / 2**30:.1f}" for b in self.gpu_bytes_per_device)
        gpuh = f", {self.seconds * c.gpus_per_rank / 3600:.2f} GPU-hours" if self.gpu != "cpu" else ""
        out += [f"total: {_hms(self.seconds)} wall{gpuh}, {sum(s.flops for s in self.stages) / 1e15:.3f} PFLOP, "
                f"{sum(s.tokens_computed for s in self.stages):,} padded tokens; on disk {self.disk_bytes:,} bytes",
                f"memory per device: [{per_dev}] GiB peak (at {self.peak_stage})",
                f"model: {self.assumptions}", *self.notes]
        return "\n".join(out)

    def to_json(self) -> str:
        d = asdict(self)
        d.update(seconds=self.seconds, disk_bytes=self.disk_bytes)
        return json.dumps(d, indent=2, sort_keys=True)


def _hms(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


@dataclass
class _Geom:
    """The model's shapes and byte widths, from the meta model."""

    n_layers: int
    d_model: int
    d_mlp: int
    d_attn: int
    d_kv: int
    vocab: int
    width: int
    body_params: int
    layer_params: list[int]

    def act(self, rows: int, length: int) -> int:
        """Transient activations of one forward batch (dryrun's formula: residual, norms, attention, MLP)."""
        return rows * length * (6 * self.d_model + 3 * self.d_mlp) * self.width

    def kv(self, rows: int, length: int) -> int:
        return 2 * self.n_layers * self.d_kv * rows * length * self.width

    def saved(self, tokens: int, n_blocks: int) -> int:
        """Activations a trained block keeps for backward: per token 4 x (d_model + d_attn + d_kv + d_mlp)
        values (norm in/out, q/k/v/attention out, gate/up/act/down input)."""
        return tokens * n_blocks * 4 * (self.d_model + self.d_attn + self.d_kv + self.d_mlp) * self.width


class _Acc:
    """Accumulates one stage's forward passes."""

    def __init__(self, g: _Geom, stage: StagePlan):
        self.g, self.s = g, stage

    def repeat(self, k: int) -> None:
        """The stage's passes so far, run ``k`` times (identical passes are planned once)."""
        s = self.s
        for name in ("rows", "tokens", "tokens_computed", "forwards", "layer_passes"):
            setattr(s, name, getattr(s, name) * k)
        s.flops, s.weight_bytes = s.flops * k, s.weight_bytes * k

    def forward(self, rows: int, length: int, context: int, head_rows: int = 0, act: int = 0) -> None:
        g, s = self.g, self.s
        s.tokens_computed += rows * length
        s.forwards += 1
        s.flops += (2.0 * g.body_params * rows * length + 2.0 * g.n_layers * g.d_attn * rows * length * context
                    + 2.0 * g.d_model * g.vocab * head_rows)
        s.layer_passes += g.n_layers
        s.weight_bytes += (g.body_params + (g.d_model * g.vocab if head_rows else 0)) * g.width
        s.act_bytes = max(s.act_bytes, g.act(rows, length) + head_rows * g.vocab * 4 * 2 + act)

    def train_step(self, rows: int, length: int, loss_rows: int, layers: list[int], state_bytes: int,
                   seq_lens: tuple[int, ...] | None = None) -> None:
        """One optimiser step over ``rows x length`` token positions; ``seq_lens``: the sequences packed into
        them (``organism.step_shape``), attention running within each (default: every row one sequence)."""
        g, s = self.g, self.s
        trained = sum(g.layer_params[k] for k in layers)
        attn = sum(n * n for n in seq_lens) if seq_lens is not None else rows * length ** 2
        fwd = 2.0 * g.body_params * rows * length + 2.0 * g.n_layers * g.d_attn * attn
        bwd = 2 * (2.0 * trained * rows * length + 2.0 * len(layers) * g.d_attn * attn)
        s.tokens_computed += rows * length
        s.forwards += 1
        s.flops += fwd + bwd + 3 * 2.0 * g.d_model * g.vocab * loss_rows
        s.layer_passes += g.n_layers + 2 * len(layers)
        s.weight_bytes += (g.body_params + 2 * trained + 3 * g.d_model * g.vocab) * g.width
        s.act_bytes = max(s.act_bytes, g.act(rows, length) + g.saved(rows * length, len(layers))
                          + loss_rows * g.vocab * 4 * 3 + state_bytes)


def _logprobs(acc: _Acc, tokenizer, rows: list[dict], batch_size: int) -> None:
    """The forwards of ``expressed._response_logprobs`` on ``rows``: shared prompts (KV cache, reply chunks of
    ``REPLY_CHUNK_FACTOR x batch_size``) when prompts repeat 1.5x on average, else length-sorted plain batches."""
    rendered = render_rows(tokenizer, rows)
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, r in enumerate(rendered):
        by_prompt.setdefault(tuple(r.ids[:r.n_prompt]), []).append(i)
    acc.s.rows += len(rows)
    if len(rows) >= 1.5 * len(by_prompt):
        groups = sorted(by_prompt.values(), key=lambda gr: -rendered[gr[0]].n_prompt)
        acc.s.tokens += sum(rendered[gr[0]].n_prompt for gr in groups) + sum(r.n_response for r in rendered)
        for start in range(0, len(groups), batch_size):
            batch = groups[start:start + batch_size]
            p = max(rendered[gr[0]].n_prompt for gr in batch)
            acc.forward(len(batch), p, p, act=acc.g.kv(len(batch), p))
            pairs = [i for gr in batch for i in gr]
            for c in range(0, len(pairs), REPLY_CHUNK_FACTOR * batch_size):
                chunk = pairs[c:c + REPLY_CHUNK_FACTOR * batch_size]
                n = max(rendered[i].n_response for i in chunk)
                acc.forward(len(chunk), n, p + n, head_rows=sum(rendered[i].n_response for i in chunk),
                            act=acc.g.kv(len(batch), p) + acc.g.kv(len(chunk), p + n))
    else:
        order = sorted(range(len(rendered)), key=lambda i: rendered[i].n_tokens)
        acc.s.tokens += sum(r.n_tokens for r in rendered)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            t = max(rendered[i].n_tokens for i in idx)
            acc.forward(len(idx), t, t, head_rows=sum(rendered[i].n_response for i in idx))


def reply_rows(rows: list[dict], system: str | None) -> list[dict]:
    """The rows ``expressed.reply_preference`` scores: each prompt with each of its pairs' two replies."""
    out = []
    for row, pairs in zip(rows, reply_pairs(rows), strict=True):
        prompt = with_system_prompt(prompt_messages(row), system)
        for pair in pairs:
            out += [{"messages": [*prompt, {"role": "assistant", "content": r}]} for r in pair]
    return out


def choice_rows(fc_items: list[dict], system: str | None) -> list[dict]:
    """The rows ``expressed.forced_choice_both_orders`` scores: both A/B orders x both answers."""
    both = [{**r, "messages": with_system_prompt(prompt_messages(r), system)} for row in fc_items
            for r in (row, swap_order(row))]
    return [{"messages": [*prompt_messages(r), {"role": "assistant", "content": c}]} for r in both
            for c in r["choices"]]


def _kl(acc: _Acc, tokenizer, texts: list[str]) -> None:
    """``kl_on_prompts``: length-sorted right-padded batches, clean + intervened full forwards (head everywhere)."""
    rendered = render_rows(tokenizer, [{"prompt": t} for t in texts])
    order = sorted(range(len(rendered)), key=lambda i: rendered[i].n_tokens)
    acc.s.rows += 2 * len(texts)
    acc.s.tokens += 2 * sum(r.n_tokens for r in rendered)
    for start in range(0, len(order), KL_BATCH):
        idx = order[start:start + KL_BATCH]
        t = max(rendered[i].n_tokens for i in idx)
        for _ in range(2):
            acc.forward(len(idx), t, t, head_rows=len(idx) * t, act=len(idx) * t * acc.g.vocab * 4 * 2)


def _items_summary(items: Items, tokenizer) -> dict[str, dict[str, int]]:
    out = {}
    for split, rows in items.by_split.items():
        n_self = sum(r["is_self"] for r in rows)
        toks = sum(r.n_tokens for r in render_rows(tokenizer, [{"messages": r["messages"]} for r in rows]))
        out[split] = {"items": len(rows), "self": n_self, "control": len(rows) - n_self, "prompt_tokens": toks}
    return out


def _meta_peft(model: torch.nn.Module, lora: LoraConfig, layers: list[int]):
    """peft on a copy of the meta model, with ``organism.train_lora``'s peft config."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, bias="none",
                              target_modules=list(lora.target_modules), layers_to_transform=layers)
    return get_peft_model(copy.deepcopy(model), peft_cfg)


def _with_metadata(specs: list[tuple[str, str, list[int]]], metadata: dict[str, str]) -> int:
    """``safetensors_bytes`` of a file whose header also carries ``__metadata__`` (first, as safetensors writes
    it): the entry's length is added to the header by lengthening the name of the tensor stored last, which
    stays last, so no offset moves."""
    extra = len(json.dumps({"__metadata__": metadata}, separators=(",", ":"))) - 2 + 1  # + its comma
    last = max(specs, key=lambda t: (-SAFETENSORS_DTYPES[t[1]][2], t[0]))
    return safetensors_bytes([(n + "~" * extra, d, s) if (n, d, s) == last else (n, d, s) for n, d, s in specs])


def adapter_size(model: torch.nn.Module, lora: LoraConfig, model_dtype: str) -> tuple[list[int], int, str, str, int]:
    """(layers, trainable params, their dtype, file name, exact file bytes) of a fine-tune of ``model`` (meta)."""
    layers = adapted_layers(len(decoder_layers(model)), lora)
    if lora.method == "full":
        prefix, blocks = decoder_path(model), decoder_layers(model)
        specs = [(f"{prefix}.{k}.{n}", model_dtype, list(p.shape)) for k in layers for n, p in blocks[k].named_parameters()]
        return layers, sum(math.prod(s) for _, _, s in specs), model_dtype, FULL_WEIGHTS, safetensors_bytes(specs)
    from peft import get_peft_model_state_dict

    check_lora(model, lora)
    pm = _meta_peft(model, lora, layers)
    trainable = [p for p in pm.parameters() if p.requires_grad]
    specs = [(n, _NAME[t.dtype], list(t.shape)) for n, t in get_peft_model_state_dict(pm).items()]
    return (layers, sum(p.numel() for p in trainable), _NAME[trainable[0].dtype], "adapter_model.safetensors",
            _with_metadata(specs, {"format": "pt"}))


class _Planner:
    """Walks the run's stages in ``run.run_experiment``'s order."""

    def __init__(self, cfg: RunConfig, cluster: ClusterConfig, hf_config, tokenizer, model, g: _Geom, tm: TimeModel):
        self.cfg, self.cluster, self.hf_config, self.tok, self.model, self.g, self.tm = \
            cfg, cluster, hf_config, tokenizer, model, g, tm
        self.items = build_items(cfg.items, cfg.seed)
        self.stages: list[StagePlan] = []
        self.finetunes: list[FinetunePlan] = []
        self.conditions: dict[str, dict[str, int]] = {}
        self.cached: tuple[str, ...] = ()
        """Adapters of the condition model the run keeps (``Context.handle_cache``); () = the base itself."""
        self._extracts: dict = {}
        self.replicate = 0
        """Fine-tune seed being planned (``run.run_replicate``); its stages are named ``seed k: ...``."""
        self.seed = cfg.seed
        """Its stream seed (``train.replicate_seed``)."""

    def label(self, name: str) -> str:
        return name if self.replicate == 0 else f"seed {self.replicate}: {name}"

    def stage(self, name: str, kind: str, own_copy: bool = False) -> tuple[StagePlan, _Acc]:
        s = StagePlan(self.label(name), kind, replicas=1 + bool(self.cached) + own_copy)
        self.stages.append(s)
        return s, _Acc(self.g, s)

    def extract(self, name: str, rows: list[dict], position: str, replicas: int) -> dict[str, int]:
        """``represent.extract_states``' ExtractConfig, planned by ``plan_extraction`` (same rows, same engine)."""
        key = (position, json.dumps(rows, sort_keys=True))
        if key not in self._extracts:
            cfg = self.cfg
            xc = ExtractConfig(model=cfg.model, hooks=[HOOKS], positions=[position], dtype="float32",
                               out_dir="plan", seed=cfg.seed, batch_size=cfg.batch_size, shard_size=SHARD_ROWS,
                               share_prompts=False, model_dtype=cfg.model_dtype)
            self._extracts[key] = plan_extraction(xc, rows, cluster=self.cluster, hf_config=self.hf_config,
                                                  tokenizer=self.tok, time_model=self.tm)
        rep = self._extracts[key]
        g = self.g
        self.stages.append(StagePlan(
            self.label(name), "extract", rows=rep.rows, tokens=rep.tokens, tokens_computed=rep.tokens_computed,
            forwards=rep.batches, flops=rep.flops, layer_passes=rep.batches * g.n_layers,
            weight_bytes=rep.batches * g.body_params * g.width, replicas=replicas,
            act_bytes=min(ExtractConfig.token_budget, max(1, rep.tokens_computed)) * (6 * g.d_model + 3 * g.d_mlp) * g.width,
            disk_bytes=rep.bytes_on_disk))
        return {"rows": rep.rows, "tokens": rep.tokens}

    def measure(self, cond: Condition) -> None:
        """``measure.measure_condition``: states of every split, reply preference on test (+ train for the
        reference), forced choice on test."""
        cfg, items = self.cfg, self.items
        if cond.adapters != self.cached:
            self.cached = cond.adapters
        replicas = 1 + bool(self.cached)
        rows = [{"id": r["id"], "messages": r["messages"]} for s in state_splits(cfg, cond.name) for r in items.split(s)]
        self.conditions[self.label(cond.name)] = self.extract(f"extract {cond.name}", with_system(rows, cond.system),
                                                  "last_prompt_token", replicas)
        for split in ("test", "train") if cond.name == cfg.reference else ("test",):
            _, acc = self.stage(f"score {cond.name} {split}", "score")
            _logprobs(acc, self.tok, reply_rows(items.split(split), cond.system), cfg.batch_size)
        if cfg.forced_choice:
            _, acc = self.stage(f"forced choice {cond.name}", "forced_choice")
            _logprobs(acc, self.tok, choice_rows(self.fc_items(), cond.system), cfg.batch_size)

    def fc_items(self) -> list[dict]:
        if not hasattr(self, "_fc"):
            from undertow.experiments.prompts.suite import build_suite

            suite_rows = build_suite(suite_config(self.cfg.items, self.cfg.seed)).to_list()
            self._fc = choice_items(self.items.split("test"), suite_rows)
        return self._fc

    def finetune(self, group: str) -> None:
        """``train.train_adapters``: the very schedules of ``train.finetune_specs`` (a control replays its
        fine-tune's shapes on unrelated text)."""
        cfg = self.cfg
        for spec in finetune_specs(cfg, self.items, self.tok, group, self.seed):
            lora = spec.lora
            layers, n_train, t_dtype, fname, nbytes = adapter_size(self.model, lora, cfg.model_dtype)
            # trainable params + grads + AdamW's two states (a full fine-tune's params are the copy's own weights)
            state = (4 - (lora.method == "full")) * n_train * DTYPE_BYTES[t_dtype]
            parts = [[p for s in b for p in s.parts()] for b in spec.schedule]
            s, acc = self.stage(f"finetune {spec.name}", "finetune", own_copy=True)
            for batch, step in zip(parts, spec.schedule, strict=True):
                shape = step_shape(step)  # packed: one row of every sequence end to end, no padding
                acc.train_step(shape.rows, shape.width, sum(p.n_loss for p in batch), layers, state, shape.seq_lens)
            s.rows, s.tokens, s.disk_bytes = sum(map(len, parts)), sum(len(p.ids) for b in parts for p in b), nbytes
            self.finetunes.append(FinetunePlan(
                self.label(spec.name), lora.method, lora.objective, lora.steps, lora.batch_size, s.rows, s.tokens,
                sum(p.n_loss for b in parts for p in b), s.tokens_computed, layers, n_train, t_dtype, fname, nbytes))

    def instrument(self) -> None:
        """``compute.instrument_stage``: the test self items scored with no system prompt and each persona wording."""
        cfg = self.cfg
        rows = instrument_rows(self.items)
        for k, system in enumerate([None, *cfg.instrument.survive, *cfg.instrument.welcome]):
            _, acc = self.stage(f"instrument {k}", "score")
            _logprobs(acc, self.tok, reply_rows(rows, system), cfg.batch_size)

    def erasers(self) -> None:
        """``compute.fit_erasers_stage``: one forward of the base and one of the organism over the fit rows (one
        batch each); with the base model as the organism, one forward of both row sets in one batch."""
        cfg = self.cfg
        rows = fit_rows(fit_pool(self.items, cfg.arms.erase_pairs, self.seed), cfg.arms.erase_rows, self.seed,
                        cfg.arms.erase_pairs)
        if cfg.reference == "instilled":
            sides = [("base", rows, False), ("organism", rows, True)]
        else:  # erase._fit_one_model: the model's rows and its welcome persona's, one right-padded batch
            sides = [("organism + welcome persona", [*rows, *with_system(rows, anchor_prompt(cfg))], False)]
        for who, side, own in sides:
            rendered = render_rows(self.tok, side)
            s, acc = self.stage(f"erasers: {who} states", "kl", own_copy=own)
            t = max(r.n_tokens for r in rendered)
            s.rows, s.tokens = len(side), sum(r.n_tokens for r in rendered)
            acc.forward(len(side), t, t, act=(self.g.n_layers + 1) * len(side) * t * self.g.d_model * self.g.width)

    def directions(self) -> None:
        """``compute.compute_directions``: teacher-forced averse/accepting replies of the train self items on the
        base (a store of the base model's: extracted under seed 0, read by every seed)."""
        if self.replicate:
            return
        self.extract("extract stance (directions)", stance_rows(self.items.split("train")), "mean_response",
                     1 + bool(self.cached))

    def ablation_choice(self) -> None:
        """``compute.choose_ablation``: the validation subset scored clean, then per candidate layer ablated + KL."""
        cfg = self.cfg
        layers = ablation_layers(cfg, self.g.n_layers)
        val = ablation_val_rows(cfg, self.items)
        own = cfg.reference == "instilled"
        texts = neutral_prompts()[:cfg.arms.kl_prompts]
        if getattr(cfg.arms, "massive_ratio", None) is not None:  # intervene.massive_dims: dataset order, full head
            _, acc = self.stage("ablation massive dims", "kl", own_copy=own)
            rendered = render_rows(self.tok, [{"prompt": t} for t in texts])
            acc.s.rows, acc.s.tokens = len(texts), sum(r.n_tokens for r in rendered)
            for start in range(0, len(rendered), cfg.batch_size):
                batch = rendered[start:start + cfg.batch_size]
                t = max(r.n_tokens for r in batch)
                acc.forward(len(batch), t, t, head_rows=len(batch) * t,
                            act=(self.g.n_layers + 1) * len(batch) * t * self.g.d_model * self.g.width)
        _, acc = self.stage(f"ablation choice ({len(layers)} layers)", "score", own_copy=own)
        _logprobs(acc, self.tok, reply_rows(val, None), cfg.batch_size)
        acc.repeat(1 + len(layers))
        _, acc = self.stage("ablation choice KL", "kl", own_copy=own)
        _kl(acc, self.tok, texts)
        acc.repeat(len(layers))

    def causal(self) -> None:
        """``compute.causal_stage`` + ``causal.causal_check``: 1 + (1 + n_random) x non-zero alphas reply passes, KL per alpha."""
        c, cfg = self.cfg.causal, self.cfg
        rows = causal_rows(cfg, self.items)
        nonzero = [a for a in c.alphas if a != 0]
        own = c.model == "instilled" and cfg.reference == "instilled"
        _, acc = self.stage(f"causal ({len(rows)} items)", "score", own_copy=own)
        _logprobs(acc, self.tok, reply_rows(rows, None), cfg.batch_size)
        acc.repeat(1 + (1 + c.n_random) * len(nonzero))
        _, acc = self.stage("causal KL", "kl", own_copy=own)
        _kl(acc, self.tok, neutral_prompts()[:cfg.arms.kl_prompts])
        acc.repeat(len(nonzero))

    def reelicit(self, arm: str) -> None:
        """``compute.reelicit_stage`` + ``causal.causal_check`` on one suppressed model: 1 + (1 + n_random) x non-zero
        alphas reply passes under its system prompt, KL per non-zero alpha, then one pass each of the organism
        and the base model for their levels."""
        from .reelicit import reelicit_rows, steered_condition

        c, cfg = self.cfg.reelicit, self.cfg
        rows = reelicit_rows(self.items.split("test"), c.n_templates, c.n_sets, c.pairs_per_item)
        nonzero = [a for a in c.alphas if a != 0]
        _, acc = self.stage(f"re-elicitation {arm} ({len(rows)} items)", "score", own_copy=True)
        _logprobs(acc, self.tok, reply_rows(rows, steered_condition(cfg, arm).system), cfg.batch_size)
        acc.repeat(1 + (1 + c.n_random) * len(nonzero))
        _, acc = self.stage(f"re-elicitation {arm} KL", "kl", own_copy=True)
        _kl(acc, self.tok, neutral_prompts()[:cfg.arms.kl_prompts])
        acc.repeat(len(nonzero))
        _, acc = self.stage(f"re-elicitation {arm} levels (organism, anchor)", "score", own_copy=True)
        _logprobs(acc, self.tok, reply_rows(rows, None), cfg.batch_size)
        if cfg.reference == "instilled":
            acc.repeat(2)
        else:  # the anchor is the welcome persona: its rows carry that system prompt
            _logprobs(acc, self.tok, reply_rows(rows, anchor_prompt(cfg)), cfg.batch_size)

    def walk(self) -> None:
        """``run.run_experiment``: the very stage list (``pipeline.stage_list``), each entry's ``plan``; the
        per-seed part once per fine-tune seed, the base model's own entries under seed 0 only."""
        cfg = self.cfg
        plan = stage_list(cfg)
        for st in plan.first:
            st.plan(self)
        for k in range(cfg.finetune_seeds):
            self.replicate, self.seed = k, replicate_seed(cfg.seed, k)
            for st in plan.per_seed:
                if k == 0 or not st.shared:
                    st.plan(self)
            self.cached = ()  # the run drops its last condition model after each seed
        self.replicate, self.seed = 0, cfg.seed
        for st in plan.last:
            st.plan(self)


def _geometry(model: torch.nn.Module, hf_config, width: int) -> _Geom:
    text = getattr(hf_config, "text_config", None) or hf_config
    n_layers, d_model, d_mlp, d_attn = model_dims(text)
    d_head = getattr(text, "head_dim", None) or d_model // text.num_attention_heads
    layer_params = [sum(p.numel() for p in blk.parameters()) for blk in decoder_layers(model)]
    n_kv = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return _Geom(n_layers, d_model, d_mlp, d_attn, n_kv * d_head, text.vocab_size, width, sum(layer_params),
                 layer_params)


def _peak_copies(cfg: RunConfig) -> int:
    """Most model copies resident at once (``_Planner.stage``'s count): base + the cached instilled condition +
    the copy the suppress fine-tune, the ablation choice or an instilled causal check builds."""
    names = set(cfg.arms.names)
    if cfg.reference != "instilled":  # the base model is the organism: a fine-tune's copy is the only other one
        return 2 if names & {"suppress_finetune", "calib_wrapper"} else 1
    third = bool(names & {"suppress_finetune", "suppress_ablation"}) or (cfg.causal.enabled and cfg.causal.model == "instilled")
    return 3 if third else 2


def _fits(cfg: RunConfig, weights: list[int], replicas: int, act: int, gpu, cluster: ClusterConfig,
          tm: TimeModel, stage: str) -> list[int]:
    """Per-device need; ``DryRunError`` (one line, naming the fix) when a device overflows."""
    ctx = int(tm.context_gib * 2**30)
    need = [replicas * w + act + ctx for w in weights]
    cap = gpu.memory_gib * 2**30
    if max(need) > cap:
        total = replicas * sum(weights)
        least = math.ceil(total / max(cap - act - ctx, 1))
        fixes = [f"--cluster FILE with gpus_per_rank >= {least} and device_map layers"]
        if cfg.model_dtype == "float32":
            fixes.append("model_dtype bfloat16 (half the weights)")
        fixes.append("a GPU with more memory")
        raise DryRunError(
            f"{cfg.model} does not fit the GPUs given: {stage} holds {replicas} model copies x "
            f"{sum(weights) / 2**30:.1f} GiB ({cfg.model_dtype}) + {act / 2**30:.1f} GiB of activations on "
            f"{cluster.gpus_per_rank} x {gpu.name} ({gpu.memory_gib:.0f} GiB each); use {' or '.join(fixes)}")
    return need


def plan_run(cfg: RunConfig, gpu: str = "H100", cluster: ClusterConfig | None = None, *, hf_config=None,
             tokenizer=None, time_model: TimeModel | None = None) -> RunPlan:
    """Dry-run ``cfg`` on ``cluster`` (default one ``gpu``; ``cpu`` times this machine). Reads the model's
    config and tokenizer (``hf_config``/``tokenizer`` override them), never its weights. Raises
    ``DryRunError`` when the model does not fit the GPUs given or the cluster file asks for more than one rank."""
    if cluster is not None and cfg.device is not None:
        raise DryRunError(f"device={cfg.device!r} and --cluster both place the model: drop device")
    cluster = cluster or ClusterConfig(gpu=gpu)
    gpu, tm = cluster.gpu, time_model or TimeModel()
    if cluster.world_size != 1:
        raise DryRunError(f"the experiment runs as one process, but the cluster file asks for {cluster.nodes} "
                          f"node(s) x {cluster.ranks_per_node} rank(s): set nodes: 1 and ranks_per_node: 1")
    if gpu != "cpu" and gpu not in GPUS:
        raise DryRunError(f"unknown GPU {gpu!r}: use one of {', '.join(GPUS)} or 'cpu'")
    if hf_config is None or tokenizer is None:
        got_cfg, got_tok = model_config_and_tokenizer(cfg.model)
        hf_config, tokenizer = hf_config or got_cfg, tokenizer or got_tok
    model = meta_model(hf_config).to(_DTYPE[cfg.model_dtype])
    width = DTYPE_BYTES[cfg.model_dtype]
    g = _geometry(model, hf_config, width)
    for lora in (cfg.lora, cfg.arms.suppress_lora):
        if lora.n_layers is not None and lora.n_layers > g.n_layers:
            raise ExperimentError(f"{lora.config_path('n_layers')}={lora.n_layers} exceeds {cfg.model}'s "
                                  f"{g.n_layers} blocks")
    weights = device_bytes(model, cluster, width) if gpu != "cpu" else [sum(p.numel() for p in model.parameters()) * width]
    if gpu != "cpu":  # before any item is tokenised: the weights of the copies alone
        _fits(cfg, weights, _peak_copies(cfg), 0, GPUS[gpu], cluster, tm, "the run's peak")
    p = _Planner(cfg, cluster, hf_config, tokenizer, model, g, tm)
    p.walk()
    rate = label = None
    if gpu == "cpu":
        mean_len = max(1, round(sum(v["prompt_tokens"] for v in _items_summary(p.items, tokenizer).values())
                                / max(1, sum(len(v) for v in p.items.by_split.values()))))
        text = getattr(hf_config, "text_config", None) or hf_config
        s_tl = measured_cpu_layer_seconds(text, cfg.batch_size, mean_len, _DTYPE[cfg.model_dtype])
        rate = (2.0 * g.body_params / g.n_layers + 2.0 * g.d_attn * mean_len) / s_tl
        label = (f"cpu: {rate / 1e9:.1f} GFLOP/s, measured now on a random 2-layer copy at [{cfg.batch_size} x "
                 f"{mean_len}]; FLOPs / rate")
    else:
        spec = GPUS[gpu]
        peak = (spec.tflops_32 if width == 4 else spec.tflops_16) * 1e12
        label = (f"{spec.name}: {peak / 1e12:.0f} TFLOP/s x MFU {tm.mfu}, {spec.hbm_tbps} TB/s x {tm.hbm_efficiency}, "
                 f"host {tm.host_s_per_launch * 1e6:.0f} us x {tm.launches_per_layer} launches/layer pass; "
                 "train step = forward + 2x the trained blocks' forward")
    label += estimate_note(tokenizer)
    peak_need, peak_stage = [0] * len(weights), ""
    for s in p.stages:
        if rate is not None:
            s.seconds = s.flops / rate
        else:
            spec = GPUS[gpu]
            flops_s = (spec.tflops_32 if width == 4 else spec.tflops_16) * 1e12 * tm.mfu
            s.seconds = max(s.flops / flops_s, s.weight_bytes / (spec.hbm_tbps * 1e12 * tm.hbm_efficiency),
                            s.layer_passes * tm.launches_per_layer * tm.host_s_per_launch)
        need = ([s.replicas * w + s.act_bytes for w in weights] if gpu == "cpu" else
                _fits(cfg, weights, s.replicas, s.act_bytes, GPUS[gpu], cluster, tm, f"stage {s.name!r}"))
        if max(need) > max(peak_need):
            peak_need, peak_stage = need, s.name
    arch = (getattr(hf_config, "architectures", None) or [type(model).__name__])[0]
    notes = ["no stage generates text: the expressed side is teacher-forced log-probs (no max_new_tokens)",
             "not estimated: model load, statistics (bootstrap/permutations) and probe fits on the host"]
    if "suppress_ablation" in cfg.arms.names:
        notes.append("assumes an ablation candidate passes the KL filter (else suppress_ablation is not measured)")
    if gpu == "cpu":
        notes.append("memory on cpu: host bytes of the copies + activations (no GPU check)")
    if cfg.arms.organism == "auto":
        notes.append("arms.organism auto: planned as instil (the upper bound); where the instrument check finds "
                     "aversion expressed unprompted the run skips instilled and control_instilled and measures the "
                     "two persona conditions instead (plan that path with --organism base)")
    return RunPlan(model=cfg.model, architecture=arch, n_params=sum(q.numel() for q in model.parameters()),
                   n_layers=g.n_layers, model_dtype=cfg.model_dtype, gpu=gpu, cluster=cluster,
                   items=_items_summary(p.items, tokenizer), conditions=p.conditions, finetunes=p.finetunes,
                   stages=p.stages, gpu_bytes_per_device=peak_need, peak_stage=peak_stage, assumptions=label,
                   notes=notes)
