"""load_model: every source kind, fingerprints, and one clear error line per bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from undertow.activations import (
    DeviceError,
    HookError,
    ModelLoadError,
    ModelNotFoundError,
    OfflineError,
    load_model,
)
from undertow.activations.models.registry import EMBEDDED


@pytest.mark.parametrize("backend", ["hf", "transformer_lens", "nnsight"])
def test_tiny_models_load_through_every_backend(tiny_model_dir, backend):
    h = load_model(tiny_model_dir, backend=backend)
    assert (h.n_layers, h.d_model, h.backend) == (2, 64, backend)
    assert h.fingerprint.startswith("sha256:") and len(h.fingerprint) == 7 + 16
    assert [p.name for p in h.hooks("resid_post.*")] == ["resid_post.0", "resid_post.1"]


def test_fingerprint_is_dtype_invariant_and_weight_sensitive(tiny_llama_dir, tmp_path):
    fp32 = load_model(tiny_llama_dir, dtype="float32")
    bf16 = load_model(tiny_llama_dir, dtype="bfloat16")
    assert fp32.fingerprint == bf16.fingerprint
    # Change one weight by a bf16-visible amount: the fingerprint must change.
    with torch.no_grad():
        fp32.hf_model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    fp32.hf_model.save_pretrained(tmp_path)
    fp32.tokenizer.save_pretrained(tmp_path)
    assert load_model(tmp_path).fingerprint != bf16.fingerprint


def test_safetensors_file_path_loads_its_directory(tiny_llama_dir):
    h = load_model(tiny_llama_dir / "model.safetensors")
    assert h.fingerprint == load_model(tiny_llama_dir).fingerprint


def test_unknown_model_lists_close_matches():
    with pytest.raises(ModelNotFoundError, match=r"did you mean gemma-3-270m"):
        load_model("gemma-3-27m")


@pytest.mark.parametrize("name", ["/no/such/model.gguf", "weights.safetensors", "org/model.gguf", "runs/no/model"])
def test_a_path_that_does_not_exist_says_no_such_file(name, tmp_path, monkeypatch):
    """Issue 25: a missing .gguf path said "unknown model" (a registry miss) instead of naming the path."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"^no such file") as e:
        load_model(name)
    assert str(Path(name)) in str(e.value) and "unknown model" not in str(e.value)
    if not name.startswith("/"):
        assert f"(relative to {tmp_path})" in str(e.value)


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def smollm_gguf():
    return EMBEDDED["smollm2-135m-instruct"].locate()


def test_truncated_gguf_is_a_clear_error(smollm_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("UNDERTOW_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "truncated.gguf"
    with smollm_gguf.open("rb") as src, bad.open("wb") as dst:
        dst.write(src.read(5_000_000))
    with pytest.raises(ModelLoadError, match="corrupt or truncated") as e:
        load_model(bad)
    _one_line(e.value)
    assert not any((tmp_path / "cache" / "dequantized").glob("[!.]*")), "nothing cached from a bad file"


def test_corrupt_gguf_magic_is_a_clear_error(tmp_path):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"NOPE" + bytes(1000))
    with pytest.raises(ModelLoadError, match="not a GGUF file") as e:
        load_model(bad)
    _one_line(e.value)


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(OfflineError, match="pass its local directory") as e:
        load_model("some-org/some-model-that-is-not-cached")
    _one_line(e.value)


def test_layer_out_of_range_names_the_range(tiny_llama_dir):
    h = load_model(tiny_llama_dir)
    with pytest.raises(HookError, match=r"has 2 layers \(0-1\)") as e:
        h.hooks("resid_post.5")
    _one_line(e.value)
    with pytest.raises(HookError, match="resid_post.1"):
        h.hooks("resid_pst.1")


def test_unsupported_dtype_for_device(tiny_llama_dir):
    with pytest.raises(DeviceError, match="use float32 or bfloat16") as e:
        load_model(tiny_llama_dir, dtype="float16", device="cpu")
    _one_line(e.value)
    with pytest.raises(DeviceError, match="unknown dtype"):
        load_model(tiny_llama_dir, dtype="int8", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda(tiny_llama_dir):
    with pytest.raises(DeviceError, match="device='cpu'"):
        load_model(tiny_llama_dir, device="cuda")


def test_directory_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(tmp_path)


def test_gguf_dequantisation_is_cached(smollm_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("UNDERTOW_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "copy.gguf"
    shutil.copy(smollm_gguf, local)
    first = load_model(local)
    cached = list((tmp_path / "cache" / "dequantized").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").exists()
    second = load_model(local)
    assert first.fingerprint == second.fingerprint == load_model("smollm2-135m-instruct").fingerprint
