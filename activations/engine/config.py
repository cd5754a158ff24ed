"""``ExtractConfig``: everything that defines one extraction run.

YAML files (``experiments/configs/extract_*.yaml``) load with
``ExtractConfig.from_yaml(path)`` (the one typed mechanism, ``typed_config.py``). Fields that change *what* is stored are the
store's identity (``identity()``): a store is only resumed by a config whose
identity matches. Batch size and token budget only change *how fast*, so a
resumed run may change them (after an out-of-memory, say).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from undertow.core.errors import ConfigError
from undertow.core.typed_config import TypedConfig

from ..models.backends import Backend
from ..models.handle import ModelDtype
from ..models.hooks import parse_hooks
from ..models.registry import DEFAULT_MODEL
from .compiled import CompileMode
from .positions import parse_positions
from .render import Template

Layout = Literal["auto", "padded", "packed"]
"""How a plain batch's rows meet the model (``ExtractConfig.layout``)."""
DeepestLayer = Literal["auto", "narrow", "full"]
"""How much of the deepest hooked layer runs (``ExtractConfig.deepest_layer``)."""
CpuLinear = Literal["auto", "onednn", "aten"]
"""Which library computes the linear layers on the CPU (``ExtractConfig.cpu_linear``)."""
StoreDtype = Literal["float32", "fp32", "float16", "fp16", "bfloat16", "bf16"]
"""A store dtype as a config spells it (``ExtractConfig.dtype``, ``StudyConfig.store_dtype``)."""
STORE_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                "bfloat16": "bfloat16", "bf16": "bfloat16"}
"""Store dtype spelling -> the name the store records."""


@dataclass
class RowOptions(TypedConfig):
    """How the rows a command reads are taken: the same options (and generated flags) on every command that
    reads rows (``extract``, ``probe eval``, ``probe evals``, ``study``, ``sae train``, ``sae features``:
    ``experiments.cli.common.add_row_options``); ``ExtractConfig`` holds them as its own fields."""

    truncate: bool = False
    """A row longer than the model's context (``max_position_embeddings``): False refuses it, naming the row;
    True keeps its first tokens up to the limit and records that (row ``truncated_tokens``, shard
    ``truncated``)."""


@dataclass
class ExtractConfig(RowOptions):
    """One activation-extraction run.

    ``extract(handle, dataset, config)`` takes the loaded model and the dataset
    itself; ``model``, ``model_dtype``, ``device`` and ``dataset`` tell the CLI
    what to load (``backend`` is checked against the handle either way). The row
    options (``RowOptions``: ``truncate``) are its first fields.
    """

    model: str = DEFAULT_MODEL
    """Registry name (``undertow models``), local HF directory, .gguf/.safetensors file or hub id."""
    backend: Backend = "hf"
    """``hf`` (forward hooks on the HF modules, the fast path), ``transformer_lens`` or ``nnsight``."""
    hooks: list[str] = field(default_factory=lambda: ["resid_post.*"])
    """Hook names or patterns: ``resid_post.*``, ``resid_post.4-12``, ``mlp_out.6``, ``embed``."""
    positions: list[str] = field(default_factory=lambda: ["last_prompt_token"])
    """Position specs (``positions.py``): last_prompt_token, mean_prompt, mean_response, last_k:N,
    token:<marker>, all_tokens."""
    dtype: StoreDtype = "bfloat16"
    """Store dtype: float32/fp32, float16/fp16 or bfloat16/bf16 (moments are always fp32)."""
    model_dtype: ModelDtype = "float32"
    """Dtype the model runs in (float32 or bfloat16 on CPU; float16 too on CUDA)."""
    device: str | None = None
    """``cpu``, ``cuda``, ``cuda:1``...; None picks CUDA when present (per rank: cuda:LOCAL_RANK)."""
    template: Template = "auto"
    """``auto`` (chat template when the tokenizer has one), ``chat`` (require one) or ``plain`` (Human/Assistant)."""
    batch_size: int = 64
    """Most rows in one forward batch."""
    token_budget: int = 8192
    """Most padded tokens (rows x longest row) in one batch; a longer row runs alone."""
    layout: Layout = "auto"
    """``hf`` backend, plain batches: ``packed`` runs a batch's rows end to end in one row (position ids restarting
    per row), so the projections and MLPs see real tokens only and the attention alone sees them right-padded
    (``activations/models/packed.py``); ``padded`` right-pads them to the batch's longest row. ``auto``: packed
    on the CPU; padded on a GPU (packing adds 4 index ops per attention layer to a forward that is launch-bound
    there with a small model; not measured on a GPU), under ``compile`` (fixed bucket shapes) and on the other
    backends. Values match within float rounding (the same bits on the CPU measured), so a resumed run may
    change it."""
    deepest_layer: DeepestLayer = "auto"
    """``hf`` backend, plain batches: no layer runs after the deepest hooked one and row positions read its points
    at a few tokens a row, so ``narrow`` runs its MLP and its query and output projections at those tokens alone
    (its keys and values still at every token: ``activations/models/narrow.py``); ``full`` runs it whole.
    ``auto``: narrow on the CPU with the eager body; full on a GPU (3 index ops per narrowed module added to a
    forward that is launch-bound there with a small model; not measured on a GPU), under ``compile`` and with
    ``all_tokens`` (every token is read). Stored values are the same (the same bits on the CPU, measured), so a
    resumed run may change it."""
    cpu_linear: CpuLinear = "auto"
    """``hf`` backend on the CPU: ``onednn`` runs the model's float32 linear layers through oneDNN
    (``activations/models/cpu_linear.py``), ``aten`` through PyTorch's default (MKL's sgemm); ``auto`` is
    ``onednn`` where it can run (float32 on the CPU, eager ``hf`` body, a torch build with oneDNN) on an AMD
    processor, else ``aten`` (``models.cpu_linear.onednn_faster_here``). Measured: on AMD EPYC oneDNN ran 2.2x
    MKL per layer and the Gemma-3-270M forward 1.6-1.9x; on an Intel Xeon MKL ran 1.1-1.3x oneDNN. Over a long
    run oneDNN's peak RSS stays at MKL's level because importing undertow bounds its shape caches
    (``bound_onednn_caches``; 4,096 vs 512 rows 1.08-1.11x, MKL 1.10x; unbounded 1.15x). Values differ from
    ``aten``'s by float rounding (3e-6 relative on Gemma-3-270M's last layer), so a resumed run may change it;
    each shard records which ran."""
    share_prompts: bool = True
    """``hf`` backend: run a prompt shared by several rows with responses once and the responses against its
    KV cache (``shared_prompts.py``); same values within float rounding, ~3x fewer tokens computed on the
    stance contrast. False runs every row whole."""
    shard_size: int = 2048
    """Rows per shard file; the unit of atomic writes and of resume. About two shards of pooled outputs are in
    host memory at once (one computing, one being written): rows x keys x slots x d_model x dtype bytes each."""
    out_dir: str = "runs/activations"
    """Store directory."""
    seed: int = 0
    """Seeds the ``max_rows`` subsample (and torch, for determinism)."""
    dataset: str | None = None
    """A saved ``datasets.Dataset`` directory, a .jsonl file, or a suite / contrast name (resolved by the CLI).
    The Python API takes the Dataset object itself."""
    max_rows: int | None = None
    """Keep a seeded random subset of this many rows (in dataset order); None keeps all."""
    compile: CompileMode = "none"
    """Model body: ``none`` (eager), ``compile`` (each decoder layer up to the deepest hook through
    ``torch.compile``; lengths padded up to fixed buckets 16, 24, 32, 48, 64, 96, ... so it compiles once per
    bucket, not per batch: ``compiled.py``) or ``cuda_graphs`` (the same graphs replayed as CUDA graphs; CUDA
    only). Values match eager within float rounding; only speed changes, so a resumed run may change it."""

    def __post_init__(self) -> None:
        if isinstance(self.hooks, str):
            self.hooks = [self.hooks]
        if isinstance(self.positions, str):
            self.positions = [self.positions]
        # `--hooks embed,resid_post.*` and `--hooks embed resid_post.*` are the same list
        self.hooks = [h.strip() for item in self.hooks for h in item.split(",") if h.strip()]
        for pattern in self.hooks:  # syntax only (HookError names the valid forms); layer range once the model loads
            parse_hooks([pattern], None)
        self.positions = [p.spec for p in parse_positions(self.positions)]
        self.dtype = STORE_DTYPES[self.dtype]  # its spelling was checked against StoreDtype
        for name in ("batch_size", "token_budget", "shard_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("share_prompts", "truncate"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.max_rows is not None and (not isinstance(self.max_rows, int) or self.max_rows < 1):
            raise ConfigError(f"max_rows must be a positive integer or null, got {self.max_rows!r}")
        if not str(self.out_dir):
            raise ConfigError("out_dir is empty; give the store a directory")

    def identity(self) -> dict:
        """The config fields that define what the store holds (checked on resume).

        Hooks, rows and model enter the store's identity expanded (hook list, dataset hash,
        model fingerprint) by the engine, so equivalent spellings still match."""
        keep = ("backend", "positions", "dtype", "model_dtype", "template", "shard_size")
        return {k: getattr(self, k) for k in keep}
