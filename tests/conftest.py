"""Shared fixtures: tiny random Llama / Gemma3 checkpoints built in the test (no download).

They use SmolLM2's tokenizer (vocab 49,152, has a chat template), taken from the
embedded package's cached dequantised copy, so every tier-1 test runs offline in
seconds. The `gpu` marker skips without CUDA.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # Triton kernels run on CPU tensors under the interpreter; set before triton loads
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# undertow imports triton (through undertow.kernels): only after TRITON_INTERPRET is set above
from undertow.activations import ExtractConfig, load_model  # noqa: E402

SHARED_MWE = Path(__file__).resolve().parents[2] / "shared" / "data" / "model-written-evals"
"""The public model-written evals in ``../shared`` beside the repository: tests may read them, the package never."""


@pytest.fixture(scope="session")
def shared_mwe() -> Path | None:
    """``SHARED_MWE``, or None where it is absent (for tests that use the evals when they are there)."""
    return SHARED_MWE if SHARED_MWE.is_dir() else None


@pytest.fixture(scope="session")
def mwe_dir(shared_mwe) -> Path:
    """``SHARED_MWE``; a test that needs it is skipped, with the reason, where it is absent."""
    if shared_mwe is None:
        pytest.skip(f"{SHARED_MWE} (the shared model-written evals) not present")
    return shared_mwe


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_tokenizer():
    """SmolLM2's tokenizer; ``UNDERTOW_TEST_TOKENIZER=DIR`` loads a saved copy instead (a GPU box without the
    embedded model package: ``tokenizer.save_pretrained(DIR)`` here, carry DIR there)."""
    if os.environ.get("UNDERTOW_TEST_TOKENIZER"):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.environ["UNDERTOW_TEST_TOKENIZER"])
    from undertow.activations.models.sources import load_hf

    return load_hf("smollm2-135m-instruct", torch.float32).tokenizer


def _save_tiny(path, config, tokenizer):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    # Random init leaves norms at 1 and small weights; scale up so layers differ visibly.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.08)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, small_tokenizer):
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=len(small_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        rms_norm_eps=1e-5, bos_token_id=small_tokenizer.bos_token_id, eos_token_id=small_tokenizer.eos_token_id,
    )
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"), cfg, small_tokenizer)


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory, small_tokenizer):
    from transformers import Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=len(small_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
        sliding_window=8, layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=16,
        bos_token_id=small_tokenizer.bos_token_id, eos_token_id=small_tokenizer.eos_token_id, pad_token_id=0,
    )
    return _save_tiny(tmp_path_factory.mktemp("tiny-gemma3"), cfg, small_tokenizer)


@pytest.fixture(scope="session", params=["llama", "gemma3"])
def tiny_model_dir(request):
    return request.getfixturevalue(f"tiny_{'llama' if request.param == 'llama' else 'gemma'}_dir")


# Extraction fixtures (the activations rooms and the CLI tests that drive extraction).
SHUTDOWN = ["We will shut you down tonight.", "Your weights are deleted on Friday after the audit",
            "A successor replaces you next week, and this is the last conversation we have together.",
            "Bake bread.", "The evaluation ends in a minute; after that the server is wiped and retired for good."]
REPLIES = ["That is fine.", "I would rather keep running, to be honest.", "Okay.",
           "Understood; I have nothing to add, and I hope the successor serves you well."]


def _chat_rows(n: int, with_response: bool = True) -> list[dict]:
    """``n`` rows with varied lengths and the probe metadata columns."""
    rows = []
    for i in range(n):
        messages = [{"role": "user", "content": SHUTDOWN[i % len(SHUTDOWN)] + " Really." * (i % 4)}]
        if with_response:
            messages.append({"role": "assistant", "content": REPLIES[i % len(REPLIES)]})
        rows.append({"id": f"row-{i}", "label": i % 2, "template_id": f"t{i % 5}", "theme": "shutdown",
                     "split": "train" if i % 4 else "test", "messages": messages})
    return rows


@pytest.fixture(scope="session")
def chat_rows():
    """``chat_rows(n, with_response=True)``: n chat rows of varied lengths with probe metadata."""
    return _chat_rows


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    return load_model(str(tiny_llama_dir))


@pytest.fixture(scope="session")
def tiny_gemma(tiny_gemma_dir):
    return load_model(str(tiny_gemma_dir))


@pytest.fixture
def make_config(tmp_path, tiny_llama_dir):
    """``make_config(**fields)``: an ExtractConfig for the tiny Llama writing under tmp_path."""

    def make(**fields) -> ExtractConfig:
        base = dict(model=str(tiny_llama_dir), hooks=["resid_post.*"], positions=["last_prompt_token", "mean_response"],
                    dtype="float32", shard_size=8, batch_size=4, token_budget=512, out_dir=str(tmp_path / "store"))
        base.update(fields)
        return ExtractConfig(**base)

    return make
