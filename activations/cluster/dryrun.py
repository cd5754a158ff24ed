"""``plan_extraction``: what an extraction will cost, from the config alone (no weights, meta device).

Exact, by running the engine's own planning code on the real rows:

- rows (``select_rows``) and tokens (the tokenizer, ``render_rows``), shards;
- bytes on disk of every hook file: the same keys, shapes and dtypes the engine
  writes, sized with safetensors' header layout (``safetensors_bytes``; tested
  equal to a real store file by file);
- the batches: ``compiled.batch_shapes`` (bucket shapes under ``compile``) /
  ``shared_batches`` per shard, so padded and shared-prompt tokens are the ones
  the engine will compute.

Estimated, from a stated model (``TimeModel``, ``GPUS``):

- time per forward batch = max(GPU, host): GPU = max(FLOPs / (peak x MFU), weight
  bytes / (HBM x efficiency)), FLOPs = 2 x body params x padded tokens + causal
  attention 2 x L x d_attn x T^2 per row; host = launches x host cost per launch
  (HF eager: measured 1.29 s of host time for 29k launches on an H100 box,
  ~44 us each, ~16 per decoder layer). A layer-split replica
  (``devicemap.py``) runs one device at a time: its time is the sum over layers,
  so GPU-hours count every GPU of the rank.
- memory: per device, the weights the device map puts there + the batch's
  activations (token_budget x (6 d_model + 3 d_mlp) x dtype bytes: residual,
  norms, attention out, gate/up/act; SDPA keeps no T x T scores) + 2 GiB of CUDA
  context and allocator slack; per rank on the host, max(one replica at load
  when the rank has one device (a device map streams shards to the GPUs), three
  copies of a shard's pooled outputs: staged, ordered, serialised).

``gpu="cpu"`` times this machine instead: peak = a measured fp32 GEMM at the
batch's shapes (~0.3 s, under the current load of a shared box), MFU 1.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import torch

from ..engine.compiled import batch_shapes
from ..engine.plan import layout_for
from ..engine.positions import parse_positions
from ..engine.render import render_rows
from ..engine.rows import select_rows
from ..engine.shared_prompts import group_by_prompt, shared_batches
from ..errors import DeviceError, ModelLoadError, OfflineError
from ..models.hooks import decoder_path, parse_hooks
from ..models.placement import layer_device_map
from .devicemap import ClusterConfig

SAFETENSORS_DTYPES = {"int64": ("I64", 8, 3), "float32": ("F32", 4, 2), "bfloat16": ("BF16", 2, 1), "float16": ("F16", 2, 0)}
"""store dtype -> (safetensors name, bytes per element, rank in safetensors' order: wider dtypes first)."""
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPE = {4: torch.float32, 2: torch.bfloat16}


@dataclass(frozen=True)
class GPU:
    """One accelerator model, datasheet figures (dense, no sparsity)."""

    name: str
    memory_gib: float
    """Usable device memory, GiB."""
    tflops_16: float
    """bf16/fp16 tensor-core peak, TFLOP/s."""
    tflops_32: float
    """fp32 peak (TF32 tensor cores off, as torch defaults), TFLOP/s."""
    hbm_tbps: float
    """Memory bandwidth, TB/s."""


GPUS = {g.name: g for g in (
    GPU("H100", 79.6, 989.0, 67.0, 3.35), GPU("H200", 139.8, 989.0, 67.0, 4.8),
    GPU("A100-80GB", 79.2, 312.0, 19.5, 2.04), GPU("A100-40GB", 39.4, 312.0, 19.5, 1.56),
    GPU("L40S", 44.5, 362.0, 91.6, 0.86))}



def default_gpu() -> str:
    """What a dry-run plans for when no ``--gpu`` is given: this machine. ``cpu`` without a CUDA device;
    with one, the ``GPUS`` entry its name contains (``NVIDIA H100 80GB HBM3`` -> ``H100``), else ``H100``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name(0).upper().replace(" ", "")
    for key in GPUS:
        base, _, memory = key.partition("-")
        if base in name and memory in name:
            return key
    return "H100"

@dataclass(frozen=True)
class TimeModel:
    """The stated assumptions of the time estimate."""

    mfu: float = 0.45
    """Fraction of peak FLOP/s an eager HF forward reaches on large batches (bf16 GEMMs dominate)."""
    hbm_efficiency: float = 0.8
    """Fraction of datasheet bandwidth a weight read reaches."""
    host_s_per_launch: float = 44e-6
    """Host time per kernel launch in HF eager (measured: 1.29 s / 29k launches, H100 box)."""
    launches_per_layer: int = 16
    """Kernel launches per decoder layer per forward (norms, q/k/v/o, rope, SDPA, gate/up/act/down, hooks)."""
    context_gib: float = 2.0
    """CUDA context + allocator slack per device, GiB."""


class DryRunError(DeviceError):
    """The plan cannot run on the resources given (one line, before anything loads)."""


@dataclass
class DryRunReport:
    """What ``undertow extract --dry-run`` prints; every byte count exact, times and memory estimated."""

    model: str
    architecture: str
    n_params: int
    """Parameters of the whole model (all of it is loaded)."""
    n_params_body: int
    """Parameters of the decoder layers up to the deepest hooked one (what each token runs through)."""
    rows: int
    tokens: int
    """Real tokens (prompt + response), from the tokenizer."""
    tokens_computed: int
    """Padded tokens the forward passes compute (shared prompts once)."""
    shards: int
    bytes_per_hook: dict[str, int]
    """Exact bytes of every hook's shard files together."""
    host_bytes_per_rank: int
    gpu_bytes_per_device: list[int]
    """Estimated peak per device of one rank (weights by the device map + activations + context)."""
    flops: float
    seconds_per_rank: float
    """Estimated wall time of the slowest rank."""
    gpu_hours: float
    gpu: str
    cluster: ClusterConfig
    assumptions: str
    batches: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_on_disk(self) -> int:
        return sum(self.bytes_per_hook.values())

    def lines(self) -> list[str]:
        c = self.cluster
        layout = f"{c.nodes} node(s) x {c.ranks_per_node} rank(s) x {c.gpus_per_rank} {self.gpu}"
        per_dev = ", ".join(f"{b / 2**30:.1f}" for b in self.gpu_bytes_per_device)
        return [f"model {self.model} ({self.architecture}, {self.n_params / 1e9:.2f}B params, "
                f"{self.n_params_body / 1e9:.2f}B up to the deepest hook)",
                f"rows {self.rows:,}  tokens {self.tokens:,} (computed {self.tokens_computed:,} in {self.batches:,} "
                f"batches)  shards {self.shards}",
                f"on disk {self.bytes_on_disk:,} bytes ({self.bytes_on_disk / 1e12:.4f} TB) in "
                f"{len(self.bytes_per_hook)} hook dirs, {max(self.bytes_per_hook.values()):,} bytes the largest",
                f"memory per rank: host {self.host_bytes_per_rank / 2**30:.1f} GiB, GPU per device [{per_dev}] GiB",
                f"time {layout}: {self.seconds_per_rank / 3600:.3f} h wall, {self.gpu_hours:.2f} GPU-hours "
                f"({self.flops / 1e15:.2f} PFLOP)", f"model: {self.assumptions}", *self.notes]


def safetensors_bytes(tensors: list[tuple[str, str, list[int]]]) -> int:
    """Exact size of ``safetensors.torch.save`` of tensors given as (name, dtype, shape): 8-byte length, the
    JSON header (tensors sorted wider dtype first then by name, offsets in that order) padded with spaces
    to a multiple of 8, then the data."""
    ordered = sorted(tensors, key=lambda t: (-SAFETENSORS_DTYPES[t[1]][2], t[0]))
    entries, offset = [], 0
    for name, dtype, shape in ordered:
        st_name, width, _ = SAFETENSORS_DTYPES[dtype]
        n = width * math.prod(shape)
        entries.append(f"{json.dumps(name)}:{{\"dtype\":\"{st_name}\",\"shape\":{json.dumps(shape, separators=(',', ':'))},"
                       f"\"data_offsets\":[{offset},{offset + n}]}}")
        offset += n
    header = len("{" + ",".join(entries) + "}")
    return 8 + header + (-header % 8) + offset


def _hook_file_bytes(positions, n_rows: int, n_tokens: int, d_model: int, dtype: str) -> int:
    """One hook's shard file: per position its tensor + ``stats/<pos>/{count,mean,m2}``."""
    specs = []
    for pos in positions:
        shape = [n_tokens, d_model] if pos.per_token else [n_rows, pos.k, d_model] if pos.kind == "last_k" \
            else [n_rows, d_model]
        specs += [(pos.spec, dtype, shape), (f"stats/{pos.spec}/count", "int64", [1]),
                  (f"stats/{pos.spec}/mean", "float32", [d_model]), (f"stats/{pos.spec}/m2", "float32", [d_model])]
    return safetensors_bytes(specs)


def model_config_and_tokenizer(name: str):
    """(HF config, tokenizer) of a registry name, local directory / GGUF or hub id, reading no weights.

    Embedded GGUFs: the dequantised cache directory when present, else the GGUF's metadata. Hub ids:
    ``hub_config_and_tokenizer``."""
    from pathlib import Path

    from transformers import AutoConfig, AutoTokenizer

    from ..models.registry import EMBEDDED

    path = EMBEDDED[name].locate() if name in EMBEDDED else Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        from undertow.core.digests import cache_root, file_digest

        cached = cache_root() / "dequantized" / file_digest(path)[:24]  # sources.py's copy: JSON, no GGUF parse
        if (cached / "config.json").exists():
            return AutoConfig.from_pretrained(str(cached)), AutoTokenizer.from_pretrained(str(cached))
        return (AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name),
                AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name))
    if path.suffix == ".safetensors":
        path = path.parent
    if not path.exists() and name.count("/") == 1:
        return hub_config_and_tokenizer(name)
    try:
        return AutoConfig.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path))
    except OSError as e:
        if path.exists():
            raise ModelLoadError(f"cannot read the config/tokenizer in {path}: {str(e).splitlines()[0][:160]}") from None
        raise OfflineError(f"the config and tokenizer of {name!r} are not in the local HF cache and the hub is "
                           f"unreachable: `huggingface-cli download {name} --include '*.json' 'tokenizer*'` on a "
                           "connected machine, or pass hf_config= and tokenizer=") from None


def hub_config_and_tokenizer(name: str):
    """(HF config, tokenizer) of a hub id: the hub when reachable (``shipped.hub_reachable``: checked once,
    in seconds), else its local cache only. A config neither has comes from the shipped ``config.json``
    (``models/configs``), a tokenizer neither has is an ``EstimatedTokenizer``; one line on stderr says so.
    No config anywhere is an ``OfflineError`` naming the fix."""
    import contextlib
    import sys

    from transformers import AutoConfig, AutoTokenizer

    from ..models.shipped import EstimatedTokenizer, hub_offline, hub_reachable, shipped_config

    online = hub_reachable()
    why = "the Hugging Face hub is unreachable"
    try:
        with contextlib.nullcontext() if online else hub_offline():
            hf_config, source = AutoConfig.from_pretrained(name, local_files_only=not online), "cached"
    except Exception as e:  # noqa: BLE001 - hub and cache lookups raise many types (gated, missing, network)
        hf_config, source = shipped_config(name), "shipped"
        if online:
            why = f"the hub gave no config.json of {name} ({str(e).splitlines()[0][:100]})"
        if hf_config is None:
            raise OfflineError(f"{why} and {name!r} is neither in the local HF cache nor shipped: "
                               f"`huggingface-cli download {name} --include '*.json' 'tokenizer*'` on a connected "
                               "machine, or pass a local directory as model") from None
    if source == "shipped" or not online:  # no weights are read: keep peft's adapter sizing off the hub
        hf_config.name_or_path = ""
    try:
        with contextlib.nullcontext() if online else hub_offline():
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=not online)
    except Exception:  # noqa: BLE001 - as above
        text = getattr(hf_config, "text_config", None) or hf_config
        tokenizer = EstimatedTokenizer(name, text.model_type, text.vocab_size)
    estimated = isinstance(tokenizer, EstimatedTokenizer)
    if source == "shipped" or estimated:
        tokens = (f"an estimated token count ({tokenizer.estimate.tokens_per_word} tokens per whitespace word)"
                  if estimated else "the cached tokenizer")
        print(f"dry-run: {why}: the plan uses the {source} config.json of {name} and {tokens}", file=sys.stderr)
    return hf_config, tokenizer


def estimate_note(tokenizer) -> str:
    """``; tokens estimated ...`` for a plan's assumptions line when the tokenizer is an estimate, else ``""``."""
    from ..models.shipped import EstimatedTokenizer

    return f"; {tokenizer.description}" if isinstance(tokenizer, EstimatedTokenizer) else ""


def meta_model(hf_config) -> torch.nn.Module:
    """The model's module tree on the meta device: shapes and parameter counts, no memory, no weights."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(hf_config)
    model.tie_weights()  # tied embeddings count once (Gemma, Llama 3.2): parameters() deduplicates shared tensors
    return model


def _param_bytes(module: torch.nn.Module, width: int) -> int:
    return sum(p.numel() for p in module.parameters()) * width


def _host_load_bytes(model: torch.nn.Module, cluster: ClusterConfig, width: int) -> int:
    """Host memory at load: one replica for a one-device rank (loaded, then moved); none for a device map
    (``from_pretrained`` streams each shard to its device)."""
    return _param_bytes(model, width) if cluster.device_map == "none" else 0


def device_bytes(model: torch.nn.Module, cluster: ClusterConfig, width: int) -> list[int]:
    """Weight bytes per device of one rank: whole model on one device, or the layer-split map's groups."""
    if cluster.gpus_per_rank == 1:
        return [_param_bytes(model, width)]
    devices = [f"cuda:{i}" for i in range(cluster.gpus_per_rank)]
    per = dict.fromkeys(devices, 0)
    for module_name, dev in layer_device_map(model, devices).items():
        obj = model.get_submodule(module_name) if module_name else model
        per[dev] += (_param_bytes(obj, width) if isinstance(obj, torch.nn.Module) else obj.numel() * width)
    return list(per.values())


@dataclass
class _Work:
    """Forward work of one shard."""

    flops: float = 0.0
    tokens_computed: int = 0
    forwards: int = 0
    length_sum: int = 0
    """Sum over forwards of the padded length (mean batch shape = tokens_computed / length_sum rows)."""


def _shard_work(rendered, config, n_layers_run: int, params_body: int, d_attn: int, packed: bool = False) -> _Work:
    """Tokens computed, FLOPs and forward passes of one shard, batched exactly as the engine batches it
    (``packed``: a plain batch's projections and MLPs run on its real tokens only, its attention padded:
    ``ExtractConfig.layout``)."""
    work = _Work()

    def forward(rows: int, length: int, context: int, real: int | None = None) -> None:
        tokens = rows * length if real is None else real
        work.tokens_computed += tokens
        work.length_sum += length
        work.flops += 2.0 * params_body * tokens + 2.0 * n_layers_run * d_attn * rows * length * context
        work.forwards += 1

    groups, plain = [], list(range(len(rendered)))
    if config.share_prompts and config.backend == "hf":
        groups, plain = group_by_prompt(rendered)
    for batch, rows, length in batch_shapes([rendered[i].n_tokens for i in plain], config.batch_size,
                                            config.token_budget, bucketed=config.compile != "none"):
        real = sum(rendered[plain[j]].n_tokens for j in batch) if packed else None
        forward(rows, length, length, real)  # a compiled body computes its bucket shapes (compiled.py)
    for shared in shared_batches(groups, rendered, config.batch_size, config.token_budget):
        n_prompt = max(rendered[g[0]].n_prompt for g in shared.groups)
        forward(len(shared.groups), n_prompt, n_prompt)
        for chunk in shared.chunks:
            longest = max(rendered[i].n_response for _, i in chunk)
            forward(len(chunk), longest, n_prompt + longest)
    return work


MEASURE_TOKENS = 256
"""At most this many tokens in the batch ``measured_cpu_layer_seconds`` times (rows cut, the mean length kept):
the cost per token is what it reports. Llama-3.3-70B's copy in bfloat16 on an Intel Xeon without native
bfloat16, offline: timing the whole mean batch ([22 x 107]) read 28.9 ms per token-layer and the dry-run took
9 min 37 s; at [4 x 107] 30.0 ms, 1 min 26 s; at [2 x 107] 30.6 ms (1.06x), 1 min 7 s (most of the rest:
building the copy and counting 4,320 rows' tokens). A dry-run on a login node should answer in about a minute."""
MEASURE_SECONDS = 20.0
"""Stop timing repeats once the warm-up and the timed forwards have taken this long (one timed forward then)."""


def measured_batch(rows: int, length: int, max_tokens: int = MEASURE_TOKENS) -> tuple[int, int]:
    """The ``[rows, length]`` batch ``measured_cpu_layer_seconds`` times for a mean batch of ``[rows, length]``."""
    return max(1, min(rows, max_tokens // max(length, 1))), length


def measured_cpu_layer_seconds(text_config, rows: int, length: int, dtype: torch.dtype) -> float:
    """Seconds per token per decoder layer on this CPU: the body forward of a 2-layer random-weight copy of the
    config (vocab shrunk: the embedding is a lookup) on a ``[rows, length]`` batch (``measured_batch``), median
    of up to 3 after a warm-up (fewer past ``MEASURE_SECONDS``). It runs under whatever else loads the machine
    now, as the extraction will."""
    import copy

    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(text_config)
    cfg.num_hidden_layers, cfg.vocab_size = 2, 256
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(cfg.layer_types[:2])
    model = AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
    body = model.get_decoder()
    ids = torch.randint(0, 256, (rows, length))
    times = []
    with torch.inference_mode():
        while len(times) < 4 and not (len(times) >= 2 and sum(times) > MEASURE_SECONDS):
            t0 = time.perf_counter()
            body(input_ids=ids, use_cache=False)
            times.append(time.perf_counter() - t0)
    timed = sorted(times[1:])
    return timed[len(timed) // 2] / (rows * length * 2)


def model_dims(cfg) -> tuple[int, int, int, int]:
    """(n_layers, d_model, d_mlp, d_attn = heads x head_dim) of a decoder config."""
    d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads * d_head


def _check_fits(name: str, weights_B: list[int], act_bytes: int, gpu: GPU, cluster: ClusterConfig,
                tm: TimeModel) -> list[int]:
    need = [w + act_bytes + int(tm.context_gib * 2**30) for w in weights_B]
    if max(need) > gpu.memory_gib * 2**30:
        total = sum(weights_B) / 2**30
        least = math.ceil(sum(weights_B) / max(gpu.memory_gib * 2**30 - act_bytes - tm.context_gib * 2**30, 1))
        raise DryRunError(
            f"{name} does not fit the GPUs given: {total:.1f} GiB of weights + {act_bytes / 2**30:.1f} GiB of "
            f"activations over {cluster.gpus_per_rank} x {gpu.name} ({gpu.memory_gib:.0f} GiB each) per rank; "
            f"set cluster.gpus_per_rank >= {least} with device_map 'layers' or 'auto', or lower token_budget")
    return need


def plan_extraction(config, dataset, gpu: str = "H100", cluster: ClusterConfig | None = None, *, hf_config=None,
                    tokenizer=None, time_model: TimeModel | None = None) -> DryRunReport:
    """Dry-run ``config`` (an ``ExtractConfig``) on ``dataset`` (a Dataset or list of rows) for ``cluster``
    (default: one rank, one ``gpu``). Reads the model's config and tokenizer (``hf_config``/``tokenizer``
    override them: a replica, or a machine without the hub), never its weights. Raises ``DryRunError`` when
    the model does not fit the GPUs given."""
    if cluster is None:
        cluster = ClusterConfig(gpu=gpu)
    gpu = cluster.gpu
    tm = time_model or TimeModel()
    if hf_config is None or tokenizer is None:
        got_cfg, got_tok = model_config_and_tokenizer(config.model)
        hf_config, tokenizer = hf_config or got_cfg, tokenizer or got_tok
    model = meta_model(hf_config)
    text = getattr(hf_config, "text_config", None) or hf_config
    n_layers, d_model, d_mlp, d_attn = model_dims(text)
    points = parse_hooks(config.hooks, n_layers)
    deepest = max(p.depth for p in points)
    layers = model.get_submodule(decoder_path(model))
    params_body = sum(_param_bytes(layers[i], 1) for i in range(deepest + 1))
    width = DTYPE_BYTES[config.model_dtype]
    if gpu != "cpu" and gpu in GPUS:  # before any row is tokenised
        act_bytes = config.token_budget * (6 * d_model + 3 * d_mlp) * width
        _check_fits(config.model, device_bytes(model, cluster, width), act_bytes, GPUS[gpu], cluster, tm)
    positions = parse_positions(config.positions)
    # the engine's layout on the device planned: a rank split over several GPUs computes on several devices
    packed = layout_for(config, config.backend, "cpu" if gpu == "cpu" else "cuda",
                        one_device=gpu == "cpu" or cluster.gpus_per_rank <= 1) == "packed"
    source = select_rows(dataset, config.max_rows, config.seed)
    n_shards = math.ceil(len(source) / config.shard_size)
    bytes_per_hook = {p.name: 0 for p in points}
    shard_work, tokens, shard_out_max = [], 0, 0
    for k in range(n_shards):
        lo, hi = k * config.shard_size, min((k + 1) * config.shard_size, len(source))
        rendered = render_rows(tokenizer, source.get(lo, hi), config.template,
                               offsets=any(p.kind == "token" for p in positions), first_index=lo)
        n_tok = sum(r.n_tokens for r in rendered)
        tokens += n_tok
        file_bytes = _hook_file_bytes(positions, hi - lo, n_tok, d_model, config.dtype)
        for name in bytes_per_hook:
            bytes_per_hook[name] += file_bytes
        shard_out_max = max(shard_out_max, file_bytes * len(points))
        shard_work.append(_shard_work(rendered, config, deepest + 1, params_body, d_attn, packed))
    report = _report(config, hf_config, model, cluster, tm, gpu, source, tokens, n_shards, bytes_per_hook,
                     shard_out_max, shard_work, (deepest + 1, d_model, d_mlp, width))
    report.assumptions += estimate_note(tokenizer)
    return report


def _forward_seconds(work: _Work, flops_per_s: float, weight_bytes: int, bw: float, n_layers_run: int,
                     tm: TimeModel, host: bool) -> float:
    """max(GPU, host) per forward, summed (GPU = max(compute, weight read))."""
    if not work.forwards:
        return 0.0
    gpu_s = max(work.flops / flops_per_s, work.forwards * weight_bytes / bw if bw else 0.0)
    host_s = work.forwards * n_layers_run * tm.launches_per_layer * tm.host_s_per_launch if host else 0.0
    return max(gpu_s, host_s)


def _report(config, hf_config, model, cluster, tm, gpu_name, source, tokens, n_shards, bytes_per_hook, shard_out_max,
            shard_work, dims) -> DryRunReport:
    n_layers_run, d_model, d_mlp, width = dims
    layers = model.get_submodule(decoder_path(model))
    body_weight_bytes = sum(_param_bytes(layers[i], width) for i in range(n_layers_run))
    act_bytes = config.token_budget * (6 * d_model + 3 * d_mlp) * width
    if gpu_name == "cpu":
        tokens_c, lengths, forwards = (sum(getattr(w, f) for w in shard_work) for f in
                                       ("tokens_computed", "length_sum", "forwards"))
        length = max(1, round(lengths / max(forwards, 1)))
        rows = max(1, round(tokens_c / max(lengths, 1)))
        text = getattr(hf_config, "text_config", None) or hf_config
        timed_rows, _ = measured_batch(rows, length)
        per_token_layer = measured_cpu_layer_seconds(text, timed_rows, length, _DTYPE[width])
        seconds = [w.tokens_computed * n_layers_run * per_token_layer for w in shard_work]
        label = (f"cpu: {per_token_layer * 1e6:.1f} us per token-layer, measured now on a random 2-layer copy at "
                 f"[{timed_rows} x {length}] (the mean batch is [{rows} x {length}])")
        return _finish(config, hf_config, model, cluster, source, tokens, n_shards, bytes_per_hook, shard_out_max,
                       shard_work, seconds, [0], label, width, n_layers_run, gpu_name)
    else:
        if gpu_name not in GPUS:
            raise DryRunError(f"unknown GPU {gpu_name!r}: use one of {', '.join(GPUS)} or 'cpu'")
        g = GPUS[gpu_name]
        per_device = _check_fits(config.model, device_bytes(model, cluster, width), act_bytes, g, cluster, tm)
        peak = (g.tflops_32 if width == 4 else g.tflops_16) * 1e12
        flops_per_s, bw, host = peak * tm.mfu, g.hbm_tbps * 1e12 * tm.hbm_efficiency, True
        label = (f"{g.name}: {peak / 1e12:.0f} TFLOP/s x MFU {tm.mfu}, {g.hbm_tbps} TB/s x {tm.hbm_efficiency}, "
                 f"host {tm.host_s_per_launch * 1e6:.0f} us x {tm.launches_per_layer} launches/layer/forward")
    seconds = [_forward_seconds(w, flops_per_s, body_weight_bytes, bw, n_layers_run, tm, host) for w in shard_work]
    return _finish(config, hf_config, model, cluster, source, tokens, n_shards, bytes_per_hook, shard_out_max,
                   shard_work, seconds, per_device, label, width, n_layers_run, gpu_name)


def _finish(config, hf_config, model, cluster, source, tokens, n_shards, bytes_per_hook, shard_out_max, shard_work,
            seconds, per_device, label, width, n_layers_run, gpu_name) -> DryRunReport:
    from .distributed import rank_shards

    layers = model.get_submodule(decoder_path(model))
    arch = (getattr(hf_config, "architectures", None) or [type(model).__name__])[0]
    per_rank = [sum(seconds[k] for k in rank_shards(n_shards, r, cluster.world_size)) for r in range(cluster.world_size)]
    wall = max(per_rank) if per_rank else 0.0
    notes = [] if cluster.gpus_per_rank == 1 else [
        f"layer-split over {cluster.gpus_per_rank} GPUs per rank: one computes at a time, all are counted"]
    return DryRunReport(
        model=config.model, architecture=arch, n_params=sum(p.numel() for p in model.parameters()),
        n_params_body=sum(_param_bytes(layers[i], 1) for i in range(n_layers_run)),
        rows=len(source), tokens=tokens, tokens_computed=sum(w.tokens_computed for w in shard_work), shards=n_shards,
        bytes_per_hook=bytes_per_hook, host_bytes_per_rank=max(_host_load_bytes(model, cluster, width), 3 * shard_out_max),
        gpu_bytes_per_device=per_device, flops=sum(w.flops for w in shard_work), seconds_per_rank=wall,
        gpu_hours=wall * cluster.gpus / 3600 if gpu_name != "cpu" else 0.0, gpu=gpu_name, cluster=cluster,
        assumptions=label, batches=sum(w.forwards for w in shard_work), notes=notes)


def load_cluster(path) -> ClusterConfig:
    """The ClusterConfig of a cluster file (its ``extract:`` key, naming the extraction YAML, is skipped)."""
    from pathlib import Path

    import yaml

    from undertow.core.errors import ConfigError

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.pop("extract", None)
        return ClusterConfig(**data)
    except (OSError, yaml.YAMLError, TypeError, AttributeError) as e:
        raise ConfigError(f"cannot read cluster config {path}: {str(e).splitlines()[0]}") from None



def load_cluster_yaml(path):
    """(ExtractConfig, ClusterConfig) from a cluster file (``experiments/configs/clusters/*.yaml``): its
    ``extract:`` names the extraction YAML (relative to the file), the other keys are ClusterConfig fields.
    Where the work runs stays out of the extraction config, which defines what is stored."""
    from pathlib import Path

    import yaml

    from undertow.core.errors import ConfigError

    from ..engine.config import ExtractConfig

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read cluster config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or "extract" not in data:
        raise ConfigError(f"cluster config {path}: needs `extract: <extraction YAML>` and ClusterConfig fields")
    return ExtractConfig.from_yaml(path.parent / data["extract"]), load_cluster(path)
