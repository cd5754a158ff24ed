"""End to end on the real Gemma-3-270M (base model, plain format), kept short."""

from __future__ import annotations

import pytest
import torch

from undertow.activations import capture_hf, extract, load_model, render_row


@pytest.mark.slow
def test_gemma_store_matches_single_prompt_forward(make_config, chat_rows):
    handle = load_model("gemma-3-270m")
    rows = chat_rows(6)
    store = extract(handle, rows, make_config(model="gemma-3-270m", hooks=["resid_post.*"], dtype="bfloat16",
                                              positions=["last_prompt_token", "mean_response"], batch_size=3))
    assert len(store.keys) == 36 and store["resid_post.17@mean_response"].shape == (6, 640)
    r = render_row(handle.tokenizer, rows[4])
    acts = capture_hf(handle, torch.tensor([r.ids]), None, handle.hooks("resid_post.17"))["resid_post.17"][0]
    for pos, want in (("last_prompt_token", acts[r.n_prompt - 1]), ("mean_response", acts[r.n_prompt:].mean(0))):
        got = store[f"resid_post.17@{pos}"][4].float()
        assert ((got - want).abs().max() / want.abs().max()).item() < 2 ** -7, pos  # one bf16 ulp
    assert store.nonfinite == {}
