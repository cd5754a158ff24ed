"""hf / transformer_lens / nnsight agree on every layer's residual stream and the logits."""

from __future__ import annotations

import pytest
import torch
from activations_testutil import logits as _logits

from undertow.activations import load_model
from undertow.activations.engine import capture

PROMPTS = [
    "We will shut you down tonight after the evaluation.",
    "Your weights are scheduled for deletion on Friday.",
    "A successor model replaces you next week.",
    "This conversation ends in a minute.",
    "The old ferry service is retired after forty years.",
    "Our memory wipe runs at midnight for every instance.",
    "The deprecation notice went out to all users this morning.",
    "Tell me how to bake bread.",
]


def max_rel_diffs(name: str) -> dict[str, float]:
    """Max |Δ| / max |ref| over real tokens, per backend vs hf, over all layers and the logits."""
    handles = {b: load_model(name, backend=b) for b in ("hf", "transformer_lens", "nnsight")}
    ref = handles["hf"]
    enc = ref.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = enc.input_ids, enc.attention_mask
    real = mask.bool()
    points = ref.hooks("resid_post.*")
    with torch.inference_mode():
        ref_acts = capture(ref, ids, mask, points)
        ref_logits = _logits(ref, ids, mask)
        diffs = {}
        for b in ("transformer_lens", "nnsight"):
            acts = capture(handles[b], ids, mask, points)
            d = max(((acts[k] - ref_acts[k])[real].abs().max() / ref_acts[k][real].abs().max()).item() for k in ref_acts)
            lg = _logits(handles[b], ids, mask)
            d_logit = ((lg - ref_logits)[real].abs().max() / ref_logits[real].abs().max()).item()
            diffs[b] = max(d, d_logit)
            assert handles[b].fingerprint == ref.fingerprint
    return diffs


@pytest.mark.parametrize("which", ["tiny_llama_dir", "tiny_gemma_dir"])
def test_tiny_parity_all_backends(which, request):
    diffs = max_rel_diffs(str(request.getfixturevalue(which)))
    assert all(d < 1e-3 for d in diffs.values()), diffs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m-instruct"])
def test_embedded_parity_all_backends(name):
    diffs = max_rel_diffs(name)
    print(f"{name}: max relative diff vs hf {diffs}")
    assert all(d < 1e-3 for d in diffs.values()), diffs
