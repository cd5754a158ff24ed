"""``SAEConfig``: one SAE training run (architecture, data, optimisation), typed, one docstring per field.

The project's one config mechanism (``undertow.core.typed_config.TypedConfig``): YAML files
(``experiments/configs/sae_*.yaml``, sections ``arch:``, ``data:``, ``train:``) load with
``SAEConfig.from_yaml(path)``, values type-checked with file:line errors, unknown keys refused; CLI flags
are generated from the same dataclasses by simple-parsing. Each ``__post_init__`` validates its section,
so a bad value fails on construction with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from undertow.activations.engine.render import Template
from undertow.core.typed_config import TypedConfig

from .errors import SAEConfigError as SAEError

Architecture = Literal["standard", "topk", "batchtopk", "jumprelu"]
"""The sae-lens training architectures undertow exposes (names as sae-lens registers them)."""
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
Normalisation = Literal["none", "expected_average_only_in", "layer_norm"]
"""sae-lens input normalisations."""
NORMALISATIONS: tuple[str, ...] = get_args(Normalisation)
SAEDtype = Literal["float32", "float64", "float16", "bfloat16"]
"""SAE parameter dtypes (sae-lens ``DTYPE_MAP``)."""


@dataclass
class ArchConfig(TypedConfig):
    """Which sae-lens architecture, how wide, how sparse."""

    architecture: Architecture = "topk"
    """``standard`` (ReLU + L1), ``topk``, ``batchtopk`` (saved as JumpReLU) or ``jumprelu``."""
    d_sae: int = 2048
    """Number of features (dictionary size)."""
    k: int = 32
    """Active features per token (``topk``) or per token on average over the batch (``batchtopk``)."""
    topk_threshold_lr: float = 0.01
    """``batchtopk``: EMA rate of the threshold the saved JumpReLU SAE uses (the smallest kept activation);
    short runs need a larger rate (after 32 steps at 0.01 the threshold is still at 27 percent of its value)."""
    l1_coefficient: float = 5.0
    """L1 penalty of ``standard`` SAEs (on inputs normalised to norm sqrt(d_in))."""
    l0_coefficient: float = 2.0
    """Step-L0 penalty of ``jumprelu`` SAEs (DeepMind's loss)."""
    jumprelu_init_threshold: float = 0.01
    """Initial JumpReLU threshold."""
    jumprelu_bandwidth: float = 0.05
    """Bandwidth of JumpReLU's straight-through estimator."""
    normalize_activations: Normalisation = "expected_average_only_in"
    """sae-lens input normalisation: ``expected_average_only_in`` scales inputs to mean norm sqrt(d_in)
    during training and folds the factor into the weights at the end; ``none``; ``layer_norm``."""
    dtype: SAEDtype = "float32"
    """SAE parameter dtype."""

    def __post_init__(self) -> None:
        for name in ("d_sae", "k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SAEError(f"arch.{name} must be a positive integer, got {value!r}")
        if self.architecture in ("topk", "batchtopk") and self.k > self.d_sae:
            raise SAEError(f"k={self.k} is larger than d_sae={self.d_sae}: a {self.architecture} SAE keeps at "
                           "most d_sae features active; lower k or raise d_sae")
        if min(self.l1_coefficient, self.l0_coefficient, self.jumprelu_bandwidth) <= 0:
            raise SAEError("l1_coefficient, l0_coefficient and jumprelu_bandwidth must be > 0")


@dataclass
class DataConfig(TypedConfig):
    """Where the activations come from."""

    model: str = "gemma-3-270m"
    """Registry name or path of the model (loaded for ``source: model`` and for the CE-loss eval)."""
    hook: str = "resid_post.9"
    """undertow hook name the SAE reads (``resid_post.L``, ``mlp_out.L``, ...)."""
    source: Literal["store", "model"] = "store"
    """``store`` (an undertow ActivationStore with the ``all_tokens`` position; no forward pass per step)
    or ``model`` (on the fly through the extraction engine's capture, for corpora too large to keep)."""
    store: str | None = None
    """Store directory for ``source: store``; ``undertow sae train`` extracts it from ``corpus`` when absent."""
    corpus: str = "mix"
    """Training text: ``mix`` (the prompt suite plus Debian prose), ``prose`` (Debian prose only),
    ``suite``, a .jsonl/.json/saved-Dataset path, or ``hub:<dataset id>`` when online."""
    prose_docs: int = 2000
    """Most prose documents (paragraph windows) taken from the Debian packages (``corpus.py``)."""
    max_tokens_per_row: int = 128
    """Prose windows are cut to about this many tokens (characters / 4)."""
    heldout_rows: int = 64
    """Rows at the end of the store kept out of training for evaluation."""
    chunk_tokens: int = 4096
    """Contiguous tokens read per store access (one memory-mapped slice); chunks are visited in a seeded
    random order, then shuffled token-wise by sae-lens' mixing buffer."""
    buffer_tokens: int = 65536
    """sae-lens mixing-buffer size in tokens (memory: buffer_tokens x d_in x 4 bytes; 168 MB at d 640).
    Its refill concatenates per chunk (O(buffer) copies), so chunks should not be much smaller than
    buffer/16."""
    mix_fraction: float = 0.5
    """Fraction of the mixing buffer kept back for mixing with newer chunks."""
    model_batch_rows: int = 16
    """``source: model``: rows per forward batch."""
    template: Template = "auto"
    """Chat template for suite rows (``auto``, ``chat``, ``plain``); prose rows are raw text."""
    seed: int = 0
    """Seeds the chunk order, the mixing buffer and the SAE initialisation."""

    def __post_init__(self) -> None:
        for name in ("chunk_tokens", "buffer_tokens", "model_batch_rows", "prose_docs", "max_tokens_per_row"):
            if getattr(self, name) < 1:
                raise SAEError(f"data.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.heldout_rows < 0:
            raise SAEError(f"data.heldout_rows must be >= 0, got {self.heldout_rows}")
        if not 0 <= self.mix_fraction < 1:
            raise SAEError(f"data.mix_fraction must be in [0, 1), got {self.mix_fraction}")


@dataclass
class TrainConfig(TypedConfig):
    """Optimisation, checkpoints, logging."""

    total_tokens: int = 2_000_000
    """Tokens (activation vectors) to train on."""
    batch_size: int = 1024
    """Tokens per optimiser step."""
    lr: float = 3e-4
    """Adam learning rate."""
    lr_warm_up_steps: int = 0
    """Linear learning-rate warm-up steps."""
    lr_decay_steps: int = 0
    """Steps of linear decay at the end of training."""
    dead_feature_window: int = 200
    """A feature that has not fired for this many steps counts as dead (TopK's aux loss revives them)."""
    feature_sampling_window: int = 500
    """Steps per sparsity-statistics window."""
    n_checkpoints: int = 2
    """Intermediate checkpoints (``out_dir/checkpoints/<tokens>``); resume continues from the newest."""
    device: str = "cpu"
    """Device the SAE trains on."""
    out_dir: str = "runs/sae"
    """Directory of the trained SAE (sae-lens layout) and its checkpoints."""
    log_to_wandb: bool = False
    """Log through sae-lens' wandb logger (offline unless WANDB_MODE says otherwise)."""
    wandb_project: str = "undertow-sae"
    """wandb project name."""
    wandb_log_frequency: int = 10
    """Steps between wandb logs."""
    progress: bool = True
    """tqdm progress bar (sae-lens' own)."""

    def __post_init__(self) -> None:
        for name in ("total_tokens", "batch_size", "dead_feature_window", "feature_sampling_window",
                     "wandb_log_frequency"):
            if getattr(self, name) < 1:
                raise SAEError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.total_tokens < self.batch_size:
            raise SAEError(f"train.total_tokens={self.total_tokens} is below one batch ({self.batch_size})")
        if not self.lr > 0:
            raise SAEError(f"train.lr must be > 0, got {self.lr}")
        if min(self.lr_warm_up_steps, self.lr_decay_steps, self.n_checkpoints) < 0:
            raise SAEError("train.lr_warm_up_steps, lr_decay_steps and n_checkpoints must be >= 0")


@dataclass
class SAEConfig(TypedConfig):
    """One SAE training run: ``arch`` (what), ``data`` (on what), ``train`` (how)."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    """Architecture and sparsity."""
    data: DataConfig = field(default_factory=DataConfig)
    """Activation source and training mix."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, checkpoints and logging."""
