"""Fixtures for the extraction engine tests: a loaded tiny model and small chat datasets."""

from __future__ import annotations

import pytest

from undertow.activations import ExtractConfig, load_model

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
