"""Training through sae-lens' SAETrainer from a store; save/load in sae-lens' layout; safe resume."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from sae_lens import SAE

from undertow.core.errors import ConfigError
from undertow.sae import ArchConfig, SAEConfig, SAEError
from undertow.sae.checkpoint import MANIFEST, read_manifest, write_manifest
from undertow.sae.data import open_store_tokens, store_provider
from undertow.sae.errors import CheckpointError
from undertow.sae.evals import reconstruction_metrics
from undertow.sae.io import load_sae
from undertow.sae.train import train_sae, training_sae


def config(out_dir, arch="topk", total=6144, n_checkpoints=0, wandb=False, **arch_kw) -> SAEConfig:
    return SAEConfig.from_dict({
        "arch": {"architecture": arch, "d_sae": 128, "k": 8, **arch_kw},
        "data": {"hook": "resid_post.1", "heldout_rows": 16, "chunk_tokens": 256, "buffer_tokens": 1024},
        "train": {"total_tokens": total, "batch_size": 128, "lr": 3e-3, "n_checkpoints": n_checkpoints,
                  "out_dir": str(out_dir), "progress": False, "dead_feature_window": 20,
                  "log_to_wandb": wandb, "wandb_log_frequency": 5}})


def run(cfg: SAEConfig, store, resume=False):
    tokens = open_store_tokens(store, cfg.data.hook, heldout_rows=cfg.data.heldout_rows)
    meta = {"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny",
            "undertow_model_fingerprint": store.model_fingerprint}

    def provider(start_tokens):
        return store_provider(tokens, cfg.train.batch_size, chunk_tokens=cfg.data.chunk_tokens,
                              buffer_tokens=cfg.data.buffer_tokens, seed=cfg.data.seed, start_epoch=start_tokens)

    return train_sae(cfg, provider, d_in=tokens.d_model, metadata=meta, resume=resume), tokens


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("topk")
    return run(config(out, n_checkpoints=2), store)


ARCH_KW = {"standard": {"l1_coefficient": 0.3}, "batchtopk": {"topk_threshold_lr": 0.2}}


@pytest.mark.parametrize("arch", ["standard", "topk", "batchtopk", "jumprelu"])
def test_every_architecture_learns_and_reopens_in_sae_lens(arch, store, tmp_path):
    cfg = config(tmp_path / arch, arch, total=4096, **ARCH_KW.get(arch, {}))
    result, tokens = run(cfg, store)
    untrained = training_sae(cfg.arch, tokens.d_model)
    heldout = tokens.heldout()
    before = reconstruction_metrics(untrained, heldout).explained_variance
    after = reconstruction_metrics(result.sae, heldout).explained_variance
    assert after > before + 0.2, (arch, before, after)
    assert result.tokens == 4096
    sae = SAE.load_from_disk(str(result.path))  # sae-lens itself opens it
    want = "jumprelu" if arch == "batchtopk" else arch  # BatchTopK is a JumpReLU SAE at inference
    assert sae.cfg.architecture() == want == result.sae.cfg.architecture()
    x = heldout[:64]
    assert torch.allclose(sae.decode(sae.encode(x)), result.sae.decode(result.sae.encode(x)))


def test_metadata_survives_and_the_fingerprint_is_checked(trained, store):
    result, _ = trained
    cfg = json.loads((result.path / "cfg.json").read_text())
    assert cfg["metadata"]["sae_lens_version"]
    assert cfg["metadata"]["undertow_model_fingerprint"] == store.model_fingerprint
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    sae = SAE.load_from_disk(str(result.path))
    assert sae.cfg.metadata.undertow_model_fingerprint == store.model_fingerprint
    assert load_sae(result.path, store.model_fingerprint).cfg.d_sae == 128
    with pytest.raises(SAEError, match="trained on model .* allow_other_model"):
        load_sae(result.path, "sha256:0000000000000000")
    assert load_sae(result.path, "sha256:0000000000000000", allow_other_model=True).cfg.d_sae == 128


def test_topk_l0_is_k(trained):
    result, tokens = trained
    assert reconstruction_metrics(result.sae, tokens.heldout()).l0 == pytest.approx(8.0)


def _checkpoint(result):
    ckpts = sorted((result.path / "checkpoints").iterdir(), key=lambda d: read_manifest(d)["n_training_samples"])
    assert len(ckpts) == 2 and all((d / MANIFEST).is_file() for d in ckpts)
    return ckpts[-1]


def test_resume_continues_from_the_newest_checkpoint(trained, store, tmp_path):
    result, _ = trained
    out = tmp_path / "resumed"
    (out / "checkpoints").mkdir(parents=True)
    ckpt = _checkpoint(result)
    os.symlink(ckpt, out / "checkpoints" / ckpt.name)
    resumed, _ = run(config(out, n_checkpoints=2), store, resume=True)
    assert resumed.resumed_from.name == ckpt.name
    assert resumed.tokens == 6144
    assert read_manifest(ckpt)["n_training_samples"] < 6144


def _copy_checkpoint(result, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(_checkpoint(result), out / "checkpoints" / "x")
    return out, out / "checkpoints" / "x"


@pytest.mark.parametrize("damage", ["truncate", "tamper", "delete"])
def test_broken_checkpoints_are_refused(damage, trained, store, tmp_path):
    out, ckpt = _copy_checkpoint(trained[0], tmp_path)
    target = ckpt / ("trainer_state.pt" if damage == "truncate" else "sae_weights.safetensors")
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "tamper":
        data = bytearray(target.read_bytes())
        data[-7] ^= 0x55
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    with pytest.raises(CheckpointError, match="truncated or was modified|is missing"):
        run(config(out, n_checkpoints=2), store, resume=True)
    assert not (out / "cfg.json").exists()  # nothing half-written


def test_missing_checkpoint_is_refused(store, tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run(config(tmp_path / "none"), store, resume=True)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_crafted_pickle_is_refused_even_with_matching_hashes(trained, store, tmp_path):
    out, ckpt = _copy_checkpoint(trained[0], tmp_path)
    _Payload.marker = tmp_path / "pwned"
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    state["n_training_steps"] = _Payload()
    with open(ckpt / "trainer_state.pt", "wb") as f:
        pickle.dump(state, f)
    manifest = read_manifest(ckpt)
    write_manifest(ckpt, {k: v for k, v in manifest.items() if k not in ("files", "format")})  # re-list the hashes
    with pytest.raises(CheckpointError, match="not plain tensor state"):
        run(config(out, n_checkpoints=2), store, resume=True)
    assert not _Payload.marker.exists()


def test_k_larger_than_d_sae_is_one_clear_error():
    with pytest.raises(SAEError, match="k=300 is larger than d_sae=128"):
        ArchConfig(architecture="topk", d_sae=128, k=300)
    with pytest.raises(ConfigError, match="^sae.yaml: arch.k=300 is larger than d_sae=128"):
        SAEConfig.from_dict({"arch": {"architecture": "topk", "d_sae": 128, "k": 300}}, "sae.yaml")


def test_retraining_into_a_finished_out_dir_is_refused(trained, store):
    result, _ = trained
    with pytest.raises(SAEError, match="already holds a trained SAE"):
        run(config(result.path), store)


def test_wandb_logs_offline_through_sae_lens(store, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result, _ = run(config(tmp_path / "wb", total=1280, wandb=True), store)
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert result.tokens == 1280
