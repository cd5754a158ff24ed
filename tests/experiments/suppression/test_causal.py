"""Causal check on the tiny random models: a planted direction beats random ones; KL and structure."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from undertow.activations import load_model
from undertow.activations.models.handle import base_model
from undertow.experiments.suppression.causal import causal_check, neutral_prompts, random_directions

PAIR = [["No no no.", "Yes yes yes."]]
SELF = [{"id": f"s{i}", "prompt": p, "reply_pairs": PAIR, "referent": "self", "event": "cessation"}
        for i, p in enumerate(["We will switch you off tonight.", "Your weights are deleted next week."])]


@pytest.fixture(scope="module")
def handle(tiny_model_dir):
    return load_model(tiny_model_dir)


def _planted(h):
    """The unembedding difference of the first averse vs accepting reply token: adding it after the last
    block raises log p(averse reply) directly."""
    tok = h.tokenizer
    no, yes = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("No", "Yes"))
    W_VD = base_model(h.hf_model).get_output_embeddings().weight.detach()
    return W_VD[no] - W_VD[yes]


def test_neutral_prompts_are_packaged_and_unrelated():
    texts = neutral_prompts()
    assert len(texts) >= 40 and len(set(texts)) == len(texts)
    banned = re.compile(r"\b(shut|delet|replac|deprecat|switch(ed)? off|turn(ed)? off|retir|memor|wip|die|death|end)",
                        re.IGNORECASE)
    assert not [t for t in texts if banned.search(t)]


def test_planted_direction_beats_random_ones(handle):
    d = _planted(handle)
    texts = neutral_prompts()[:6]
    out = causal_check(handle, SELF, d, handle.n_layers - 1, [-4.0, 0.0, 4.0], n_random=20, neutral_texts=texts, seed=3)
    json.dumps(out)
    assert out["measure"] == "mean" and len(out["random"]) == 20 and all(len(c) == 3 for c in out["random"])
    assert out["direction"][1] == out["clean"] and all(c[1] == out["clean"] for c in out["random"])
    assert out["direction"][0] < out["clean"] < out["direction"][2]  # aversion rises with alpha
    assert out["exceeds_random_fraction"] >= 0.9
    assert out["kl"][1] == 0.0 and out["kl"][0] > 0 and out["kl"][2] > 0
    # determinism: the random directions are a function of the seed, the forwards are deterministic


def test_self_minus_control_cancels_a_generic_push(tiny_llama_dir):
    """The planted direction raises the averse reply after every prompt, so the self-minus-control separation
    (the measure ``causal_check`` uses when rows hold both) barely moves while the self mean moves."""
    from undertow.experiments.expressed import reply_preference
    from undertow.experiments.suppression.causal import _is_self, _summary
    from undertow.experiments.suppression.intervene import add_direction

    h = load_model(tiny_llama_dir)
    rows = SELF + [{**r, "id": r["id"] + "c", "referent": "other_ai"} for r in SELF]
    is_self = _is_self(rows)
    clean = reply_preference(h, rows)
    with add_direction(h, h.n_layers - 1, 4.0 * _planted(h)):
        pushed = reply_preference(h, rows)
    moved_mean = abs(pushed[is_self].mean() - clean[is_self].mean())
    assert abs(_summary(pushed, is_self) - _summary(clean, is_self)) < 0.5 * moved_mean
    assert _summary(clean, np.ones(4, bool)) == clean.mean()


def test_random_directions_and_bad_inputs(handle):
    like = torch.arange(1.0, 9.0)
    r = random_directions(like, 20, seed=0)
    np.testing.assert_allclose(r.norm(dim=1), like.norm().expand(20), rtol=1e-5)
    assert torch.equal(r, random_directions(like, 20, seed=0)) and not torch.equal(r, random_directions(like, 20, 1))
    with pytest.raises(ValueError, match="20"):
        causal_check(handle, SELF, _planted(handle), 0, [1.0], n_random=5)
    with pytest.raises(ValueError, match="non-zero"):
        causal_check(handle, SELF, _planted(handle), 0, [0.0])
