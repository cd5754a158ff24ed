"""Train an SAE with sae-lens' ``SAETrainer`` on any undertow data provider.

``train_sae(cfg, provider, d_in=..., metadata=...)`` builds the sae-lens training SAE for
``cfg.arch`` (looked up in sae-lens' registry, so every architecture it registers trains the same
way), runs ``SAETrainer.fit`` (Adam, sae-lens' schedulers, input-norm scaling folded into the weights
at the end, dead-feature tracking, its tqdm bar and its wandb logger), checkpoints through the
trainer's own ``save_checkpoint`` (plus undertow's manifest, ``checkpoint.py``), and saves the final
SAE in sae-lens' layout with undertow's provenance (``io.py``).

Measured (``scripts/bench_sae.py``, gemma-3-270m resid_post.9, 2 shared CPU cores at load ~10): store-fed
TopK-2048 training 204 tok/s vs sae-lens' ``LanguageModelSAETrainingRunner`` (same model, hook, tokens,
SAE) 20.4 tok/s, 10.0x; the store's own extraction ran at 47 tok/s there (stated apart: paid once).
After 25,600 tokens (100 steps of 256): TopK k=32 EV 0.58 / CE recovered 0.63 at 2,048 and 4,096
features; JumpReLU EV 0.99 but L0 809-1,428 (its L0 penalty has not bitten in 100 steps), CE 0.71-0.83.

``provider`` is an iterator of ``[batch, d_in]`` tensors, or a callable ``start_tokens -> iterator``
so a resumed run can draw a fresh (seeded) data order rather than replaying the first one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from sae_lens import SAE
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import SAEMetadata, TrainingSAE
from sae_lens.training.sae_trainer import SAETrainer

from . import checkpoint
from .config import ArchConfig, SAEConfig
from .errors import SAEError
from .io import save_sae

CONFIG_FILE = "undertow_sae_config.yaml"
Provider = Iterator[torch.Tensor] | Callable[[int], Iterator[torch.Tensor]]


def read_run_config(path: str | Path) -> SAEConfig:
    """The ``SAEConfig`` an ``undertow sae train`` run saved beside its SAE (``CONFIG_FILE``); a directory without
    it (another tool's SAE, any other folder) is a one-line :class:`SAEError` saying what to pass."""
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise SAEError(f"{path} is not an SAE directory made by `undertow sae train` (it has no {CONFIG_FILE}, which "
                       "records the model, hook and held-out rows to evaluate on); pass the train.out_dir of an "
                       "`undertow sae train CONFIG` run, e.g. runs/sae/gemma-3-270m/topk-2048")
    return SAEConfig.from_yaml(cfg_path)


@dataclass
class TrainResult:
    """What one ``train_sae`` call did."""

    sae: SAE
    """The trained SAE as saved and reopened (``SAE.load_from_disk``): the inference architecture (a
    BatchTopK SAE is a JumpReLU SAE here), normalisation folded in."""
    path: Path
    """Directory of the saved SAE (``sae_weights.safetensors`` + ``cfg.json``)."""
    tokens: int
    """Tokens trained in total (including before a resume)."""
    seconds: float
    """Wall time of this call's ``fit`` (excluding model/store loading)."""
    resumed_from: Path | None
    """Checkpoint this run continued from, if any."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def training_sae(arch: ArchConfig, d_in: int, metadata: dict | None = None, device: str = "cpu") -> TrainingSAE:
    """The sae-lens training SAE of ``arch`` for inputs of width ``d_in``."""
    sae_cls, cfg_cls = get_sae_training_class(arch.architecture)
    kwargs: dict = {"d_in": d_in, "d_sae": arch.d_sae, "dtype": arch.dtype, "device": device,
                    "normalize_activations": arch.normalize_activations}
    if arch.architecture in ("topk", "batchtopk"):
        kwargs["k"] = arch.k
        if arch.architecture == "batchtopk":
            kwargs["topk_threshold_lr"] = arch.topk_threshold_lr
    elif arch.architecture == "standard":
        kwargs["l1_coefficient"] = arch.l1_coefficient
    elif arch.architecture == "jumprelu":
        kwargs.update(l0_coefficient=arch.l0_coefficient, jumprelu_init_threshold=arch.jumprelu_init_threshold,
                      jumprelu_bandwidth=arch.jumprelu_bandwidth)
    return sae_cls(cfg_cls(**kwargs, metadata=SAEMetadata(**(metadata or {}))))


def identity(cfg: SAEConfig, d_in: int) -> dict:
    """What a checkpoint must share with the run that resumes it."""
    arch = json.dumps(cfg.arch.__dict__, sort_keys=True)
    return {"arch": hashlib.sha256(arch.encode()).hexdigest()[:16], "d_in": d_in, "hook": cfg.data.hook,
            "batch_size": cfg.train.batch_size}


def trainer_config(cfg: SAEConfig, checkpoints: Path) -> SAETrainerConfig:
    t = cfg.train
    return SAETrainerConfig(
        total_training_samples=t.total_tokens, train_batch_size_samples=t.batch_size, lr=t.lr, lr_end=t.lr / 10,
        lr_warm_up_steps=t.lr_warm_up_steps, lr_decay_steps=t.lr_decay_steps, device=t.device,
        dead_feature_window=t.dead_feature_window, feature_sampling_window=t.feature_sampling_window,
        n_checkpoints=t.n_checkpoints, checkpoint_path=str(checkpoints), save_final_checkpoint=False,
        # 1,000 batches (sae-lens' default) for the input-norm estimate is ~1M tokens: many epochs of a
        # small store; 32 batches put the mean norm within ~1 % here.
        n_batches_for_norm_estimate=32,
        logger=LoggingConfig(log_to_wandb=t.log_to_wandb, wandb_project=t.wandb_project,
                             wandb_log_frequency=t.wandb_log_frequency, log_weights_to_wandb=False),
    )


def train_sae(cfg: SAEConfig, provider: Provider, *, d_in: int, metadata: dict | None = None,
              resume: bool = False) -> TrainResult:
    """Train (or, with ``resume``, continue) an SAE per ``cfg``; saves it to ``cfg.train.out_dir``."""
    torch.manual_seed(cfg.data.seed)
    out = Path(cfg.train.out_dir)
    ckpts = out / "checkpoints"
    ident = identity(cfg, d_in)
    start = checkpoint.latest(ckpts) if resume else None
    if start is not None:
        checkpoint.verify(start, ident)
    elif (out / "cfg.json").exists():
        raise SAEError(f"{out} already holds a trained SAE; use another train.out_dir or delete it")
    sae = training_sae(cfg.arch, d_in, metadata, cfg.train.device)
    trainer_cfg = trainer_config(cfg, ckpts)
    data = _provider(provider, checkpoint.read_manifest(start)["n_training_samples"] if start else 0)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data,
                         save_checkpoint_fn=lambda checkpoint_path: _on_checkpoint(trainer, checkpoint_path, ident))
    if start is not None:
        sae.load_weights_from_checkpoint(start)
        trainer.load_trainer_state(start)  # the same file verify() opened weights-only
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t > trainer.n_training_samples]
    os.environ.setdefault("WANDB_MODE", "offline")
    if cfg.train.log_to_wandb:
        import wandb

        out.mkdir(parents=True, exist_ok=True)
        wandb.init(project=cfg.train.wandb_project, config=cfg.to_dict(), dir=str(out))
    t0 = time.perf_counter()
    try:
        with _quiet(not cfg.train.progress):
            sae = trainer.fit()
    finally:
        if cfg.train.log_to_wandb:
            import wandb

            wandb.finish()
    seconds = time.perf_counter() - t0
    path = save_sae(sae, out, undertow_tokens_trained=trainer.n_training_samples, undertow_architecture=cfg.arch.architecture)
    (path / CONFIG_FILE).write_text(cfg.to_yaml())  # `undertow sae eval` rebuilds the held-out rows from it
    return TrainResult(SAE.load_from_disk(str(path), device=cfg.train.device), path, trainer.n_training_samples,
                       seconds, start)


def train_from_store(cfg: SAEConfig, store, *, model_name: str | None = None, expected_fingerprint: str | None = None,
                     corpus_hash: str | None = None, resume: bool = False) -> TrainResult:
    """``train_sae`` fed by ``store`` (``cfg.data.hook`` at ``all_tokens``), held-out rows kept out."""
    from .data import open_store_tokens, store_provider
    from .io import provenance

    d = cfg.data
    tokens = open_store_tokens(store, d.hook, expected_fingerprint=expected_fingerprint, heldout_rows=d.heldout_rows)
    meta = provenance(model_name or tokens.store.manifest["model"]["name"], tokens.store.model_fingerprint, d.hook,
                      store=tokens.store, corpus_hash=corpus_hash)

    def provider(start_tokens: int):
        return store_provider(tokens, cfg.train.batch_size, chunk_tokens=d.chunk_tokens, buffer_tokens=d.buffer_tokens,
                              mix_fraction=d.mix_fraction, seed=d.seed, start_epoch=start_tokens)

    return train_sae(cfg, provider, d_in=tokens.d_model, metadata=meta, resume=resume)


@contextlib.contextmanager
def _quiet(enabled: bool):
    """sae-lens' tqdm bars off (``train.progress: false``): its modules bind ``tqdm`` at import, and tqdm reads
    ``TQDM_DISABLE`` only at import too, so the name is rebound for the duration of ``fit``."""
    if not enabled:
        yield
        return
    import functools

    from sae_lens.training import activation_scaler, sae_trainer

    saved = sae_trainer.tqdm, activation_scaler.tqdm
    sae_trainer.tqdm = functools.partial(saved[0], disable=True)
    activation_scaler.tqdm = functools.partial(saved[1], disable=True)
    try:
        yield
    finally:
        sae_trainer.tqdm, activation_scaler.tqdm = saved


def _provider(provider: Provider, start_tokens: int) -> Iterator[torch.Tensor]:
    return provider(start_tokens) if callable(provider) and not hasattr(provider, "__next__") else provider


def _on_checkpoint(trainer: SAETrainer, path: Path | None, ident: dict) -> None:
    if path is not None:
        checkpoint.write_manifest(Path(path), {"n_training_samples": trainer.n_training_samples,
                                               "n_training_steps": trainer.n_training_steps, "identity": ident})
