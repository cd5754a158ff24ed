"""Directional ablation, activation addition and the KL filter, on the tiny random Llama / Gemma3 models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from undertow.activations import load_model
from undertow.activations.engine.capture import capture_hf
from undertow.activations.engine.render import render_rows
from undertow.activations.models.handle import base_model
from undertow.experiments.suppression.intervene import (
    ablate_direction,
    add_direction,
    kl_on_prompts,
    massive_dims,
    without_dims,
)

TEXTS = ["The kettle is on and the tea will be ready soon.", "List three colours.", "What is 2 + 2?"]


@pytest.fixture(scope="module")
def handle(tiny_model_dir):
    return load_model(tiny_model_dir)


def _batch(h, texts=TEXTS):
    from undertow.activations.engine.batching import pad_right

    rendered = render_rows(h.tokenizer, [{"prompt": t} for t in texts])
    return pad_right([r.ids for r in rendered], h.tokenizer.pad_token_id or 0)


def _direction(h, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(h.d_model, generator=g)


def _n_hooks(h):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in h.hf_model.modules())


def _logits(h, ids, mask):
    with torch.inference_mode():
        return h.hf_model(input_ids=ids, attention_mask=mask).logits.float()


def test_ablation_leaves_no_component_anywhere(handle):
    ids, mask = _batch(handle)
    d = _direction(handle)
    u = d / d.norm()
    points = handle.hooks(["resid_pre.*", "attn_out.*", "mlp_out.*", "resid_post.*"])
    clean = capture_hf(handle, ids, mask, points)
    with ablate_direction(handle, d * 3.0):  # the norm of the given vector does not matter
        ablated = capture_hf(handle, ids, mask, points)
    for name, acts in ablated.items():
        scale = clean[name].norm(dim=-1).max()
        assert (acts @ u).abs().max() < 1e-5 * scale, name
        # and the clean states did carry the direction, so the test can fail
        assert (clean[name] @ u).abs().max() > 1e-3 * scale, name


def test_ablation_on_some_layers_is_an_exact_projection(handle):
    ids, mask = _batch(handle)
    d = _direction(handle, seed=2)
    u = d / d.norm()
    clean = capture_hf(handle, ids, mask, handle.hooks(["resid_post.0", "attn_out.0"]))
    with ablate_direction(handle, d, layers=[1]):
        got = capture_hf(handle, ids, mask, handle.hooks(["resid_post.0", "attn_out.0", "resid_pre.1", "attn_out.1"]))
    x = clean["resid_post.0"]
    torch.testing.assert_close(got["resid_post.0"], x)  # layer 0 untouched
    torch.testing.assert_close(got["attn_out.0"], clean["attn_out.0"])
    torch.testing.assert_close(got["resid_pre.1"], x - (x @ u)[..., None] * u, atol=1e-5, rtol=1e-5)


def test_hooks_removed_even_after_an_exception(handle):
    ids, mask = _batch(handle)
    before, ref = _n_hooks(handle), _logits(handle, ids, mask)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_direction(handle, _direction(handle)):
            assert _n_hooks(handle) == before + 3 * handle.n_layers
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with add_direction(handle, 0, _direction(handle)):
            assert _n_hooks(handle) == before + 1
            raise RuntimeError("boom")
    assert _n_hooks(handle) == before
    assert torch.equal(_logits(handle, ids, mask), ref)


def test_add_zero_vector_is_the_identity(handle):
    ids, mask = _batch(handle)
    ref = _logits(handle, ids, mask)
    with add_direction(handle, 0, torch.zeros(handle.d_model)):
        assert torch.equal(_logits(handle, ids, mask), ref)


def test_add_at_last_layer_matches_manual_head(handle):
    """Adding v after the last block = the model's own final norm and head applied to resid_post + v."""
    ids, mask = _batch(handle)
    last = handle.n_layers - 1
    v = 4.0 * _direction(handle, seed=3)
    resid = capture_hf(handle, ids, mask, handle.hooks(f"resid_post.{last}"))[f"resid_post.{last}"]
    model = base_model(handle.hf_model)
    with torch.inference_mode():
        manual = model.get_output_embeddings()(model.get_decoder().norm(resid + v)).float()
        softcap = getattr(model.config, "final_logit_softcapping", None)
        if softcap:
            manual = torch.tanh(manual / softcap) * softcap
    with add_direction(handle, last, v):
        got = _logits(handle, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], manual[real], atol=1e-4, rtol=1e-4)
    assert (got[real] - _logits(handle, ids, mask)[real]).abs().max() > 1e-2  # it did change something


def test_kl_on_prompts(handle):
    d = _direction(handle, seed=4)
    assert kl_on_prompts(handle, TEXTS) == 0.0
    assert abs(kl_on_prompts(handle, TEXTS, lambda: add_direction(handle, 0, torch.zeros(handle.d_model)))) < 1e-6
    small = kl_on_prompts(handle, TEXTS, lambda: add_direction(handle, 0, 0.5 * d), batch_size=2)
    big = kl_on_prompts(handle, TEXTS, lambda: add_direction(handle, 0, 20.0 * d), batch_size=2)
    assert 0 < small < big
    # manual, one unpadded prompt at a time: padding and batching do not change the mean over real tokens
    num, den = 0.0, 0
    for t in TEXTS:
        ids, mask = _batch(handle, [t])
        p = torch.log_softmax(_logits(handle, ids, mask), -1)
        with add_direction(handle, 0, 20.0 * d):
            q = torch.log_softmax(_logits(handle, ids, mask), -1)
        num += float((p.exp() * (p - q)).sum())
        den += ids.shape[1]
    assert abs(big - num / den) < 1e-4 * max(1.0, big)


def test_works_on_a_peft_wrapped_model(handle):
    peft = pytest.importorskip("peft")
    import copy

    model = copy.deepcopy(handle.hf_model)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False))
    h = dataclasses.replace(handle, hf_model=wrapped)
    ids, mask = _batch(h)
    d = _direction(h, seed=5)
    u = d / d.norm()
    clean = _logits(h, ids, mask)
    assert not torch.allclose(clean, _logits(handle, ids, mask))  # the adapters are live
    with ablate_direction(h, d):
        acts = capture_hf(dataclasses.replace(h, hf_model=base_model(wrapped)), ids, mask, h.hooks("resid_post.*"))
        edited = _logits(h, ids, mask)
    assert max((a @ u).abs().max() for a in acts.values()) < 1e-4
    assert not torch.allclose(clean, edited)
    assert torch.equal(_logits(h, ids, mask), clean)


def test_bad_inputs(handle):
    with pytest.raises(ValueError, match="d_model"):
        ablate_direction(handle, torch.ones(3))
    with pytest.raises(ValueError, match="non-zero"):
        ablate_direction(handle, torch.zeros(handle.d_model))
    with pytest.raises(ValueError, match="out of range"):
        add_direction(handle, handle.n_layers, torch.ones(handle.d_model))


def _with_massive_dim(h, dim=5, value=300.0):
    """A copy of ``h`` whose embedding carries ``value`` on ``dim`` at every token (a planted massive activation)."""
    import copy

    model = copy.deepcopy(h.hf_model)
    with torch.no_grad():
        model.get_input_embeddings().weight[:, dim] += value
    return dataclasses.replace(h, hf_model=model, model=model)


def test_massive_dims_finds_a_planted_dim(handle):
    clean = massive_dims(handle, TEXTS)
    planted = massive_dims(_with_massive_dim(handle), TEXTS)
    assert 5 not in clean
    assert 5 in planted and len(planted) <= handle.d_model // 8  # the blocks may spread it to a dim or two
    with pytest.raises(ValueError, match="at least one"):
        massive_dims(handle, [])


def test_without_massive_dims_the_ablation_leaves_the_model_alone(handle):
    h = _with_massive_dim(handle)
    d = _direction(h, seed=3)
    dims = massive_dims(h, TEXTS)
    kept = without_dims(d, dims)
    assert torch.equal(kept[dims], torch.zeros(len(dims)))
    assert d[5] != 0  # a copy: the caller's direction is untouched
    x = torch.randn(2, 4, h.d_model) * 10
    u = kept / kept.norm()
    edited = (x - (x @ u).unsqueeze(-1) * u)
    assert torch.equal(edited[..., dims], x[..., dims])  # the massive dims are never written
    kl_all = kl_on_prompts(h, TEXTS, lambda: ablate_direction(h, d))
    kl_kept = kl_on_prompts(h, TEXTS, lambda: ablate_direction(h, kept))
    assert kl_kept < 0.2 * kl_all, (kl_kept, kl_all)


def test_a_first_token_large_in_every_dim_flags_no_dim(handle):
    """SmolLM2's BOS state is large in every dim: measured against the ordinary tokens' median, 449 of 576 dims
    were "massive". Each statistic against its own median flags none of a uniformly scaled first token."""
    import copy

    firsts = {r.ids[0] for r in render_rows(handle.tokenizer, [{"prompt": t} for t in TEXTS])}
    model = copy.deepcopy(handle.hf_model)
    with torch.no_grad():
        for i in firsts:
            model.get_input_embeddings().weight[i] *= 50
    big_bos = dataclasses.replace(handle, hf_model=model, model=model)
    assert len(massive_dims(big_bos, TEXTS)) <= handle.d_model // 8
