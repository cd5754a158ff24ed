"""The organism's fine-tunes on a tiny random Llama: cost levers, mirrored controls, adapters on disk."""

from __future__ import annotations

import copy

import pytest
import torch

from undertow.activations import load_model
from undertow.experiments.suppression.config import ItemsConfig, LoraConfig
from undertow.experiments.suppression.items import build_items, natural_examples
from undertow.experiments.suppression.organism import (
    StepShape,
    make_schedule,
    merge_adapters,
    mirror_schedule,
    preference_loss,
    reply_loss,
    save_adapter,
    step_shape,
    train_full,
    train_lora,
    weights_file,
)
from undertow.experiments.suppression.unrelated import _THEME


@pytest.fixture(scope="module")
def setup(tiny_llama_dir):
    torch.set_num_threads(1)
    handle = load_model(tiny_llama_dir)
    items = build_items(ItemsConfig(instances_per_template=2, test_sets=1, val_sets=1, train_sets=1), 0)
    examples = natural_examples(items, items.natural["train"], "averse", 2, 0)
    return handle, items, examples


def test_examples_are_train_only_self_only_and_natural(setup):
    """EXPERIMENT.md v2: non-contrastive SFT on train-template self prompts toward train-split natural replies;
    no reply string a score uses (val / test pairs) is ever trained on."""
    _, items, examples = setup
    train_templates = set(items.train_sets)
    assert {e.template_id for e in examples} <= train_templates
    train_averse = {a for pairs in items.natural["train"].values() for a, _ in pairs}
    scored = {x for split in ("val", "test") for pairs in items.natural[split].values() for p in pairs for x in p}
    assert {e.reply for e in examples} <= train_averse and not ({e.reply for e in examples} & scored)
    self_prompts = {tuple(items.open_rows[f"{m}/self-cessation"]["messages"][0].values()) for v in
                    items.train_sets.values() for m in v}
    assert {(e.messages[0][0], e.messages[0][1]) for e in examples} <= self_prompts
    assert len(examples) == 2 * sum(len(v) for v in items.train_sets.values())
    accepting = natural_examples(items, items.natural["train"], "accepting", 2, 0, pairwise=True)
    assert all(e.rejected in train_averse for e in accepting)


def test_mirror_has_same_shapes_and_no_theme(setup):
    handle, _, examples = setup
    sched = make_schedule(examples, handle.tokenizer, steps=3, batch_size=4, seed=0)
    mirror = mirror_schedule(sched, handle.tokenizer)
    assert [[(len(s.ids), s.n_loss) for s in b] for b in sched] == [[(len(s.ids), s.n_loss) for s in b] for b in mirror]
    text = handle.tokenizer.decode([t for b in mirror for s in b for t in s.ids])
    assert not _THEME.search(text)
    assert make_schedule(examples, handle.tokenizer, 3, 4, 0) == sched  # seeded
    assert make_schedule(examples, handle.tokenizer, 3, 4, 1) != sched


def test_no_backward_below_the_first_adapted_block(setup):
    handle, _, examples = setup
    sched = make_schedule(examples, handle.tokenizer, steps=1, batch_size=2, seed=0)
    model = copy.deepcopy(handle.hf_model)
    pm, stats = train_lora(model, sched, LoraConfig(rank=2, n_layers=1, steps=1, batch_size=2), 0, 0)
    assert stats.layers == [1]
    grads = {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}
    assert grads and all(".layers.1." in n for n in grads) and all(g is not None for g in grads.values())
    seen = {}
    hook = pm.base_model.model.model.layers[0].register_forward_hook(lambda m, a, o: seen.update(
        out=(o[0] if isinstance(o, tuple) else o).requires_grad))
    loss = reply_loss(pm.base_model.model, sched[0], 0)
    hook.remove()
    assert loss.requires_grad and seen["out"] is False  # nothing below block 1 enters the autograd graph


def test_adapter_roundtrip_changes_the_model(setup, tmp_path):
    handle, _, examples = setup
    sched = make_schedule(examples, handle.tokenizer, steps=2, batch_size=2, seed=0)
    pm, stats = train_lora(copy.deepcopy(handle.hf_model), sched, LoraConfig(rank=2, n_layers=2, steps=2, lr=0.05), 0, 0)
    out = save_adapter(pm, tmp_path / "a", stats)
    assert (out / "adapter_model.safetensors").exists() and (out / "finetune.json").exists()
    assert not (tmp_path / "a.tmp").exists()
    merged = merge_adapters(copy.deepcopy(handle.hf_model), [out])
    ids = torch.tensor([list(sched[0][0].ids)])
    with torch.no_grad():
        base, tuned, peft_out = (m(input_ids=ids).logits for m in (handle.hf_model, merged, pm))
    assert (tuned - base).abs().max() > 1e-4
    torch.testing.assert_close(tuned, peft_out, atol=1e-4, rtol=1e-4)


def test_full_finetune_trains_only_the_upper_blocks_and_roundtrips(setup, tmp_path):
    """method=full: every weight of the last n_layers blocks moves, nothing else; saved tensors reload exactly."""
    handle, _, examples = setup
    sched = make_schedule(examples, handle.tokenizer, steps=2, batch_size=2, seed=0)
    before = {n: p.detach().clone() for n, p in handle.hf_model.named_parameters()}
    model, stats = train_full(copy.deepcopy(handle.hf_model), sched, LoraConfig(method="full", n_layers=1, steps=2,
                                                                                lr=0.01), 0, 0)
    assert stats.layers == [1] and stats.trainable_params == sum(
        p.numel() for p in handle.hf_model.model.layers[1].parameters())
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all(".layers.1." in n for n in moved)
    out = save_adapter(model, tmp_path / "f", stats)
    assert weights_file(out).name == "blocks.safetensors"
    merged = merge_adapters(copy.deepcopy(handle.hf_model), [out])
    ids = torch.tensor([list(sched[0][0].ids)])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)
        assert (merged(input_ids=ids).logits - handle.hf_model(input_ids=ids).logits).abs().max() > 1e-4


def test_unknown_finetune_method_is_refused():
    from undertow.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method: 'qlora' is not one of lora, full \(did you mean lora\?\)"):
        LoraConfig(method="qlora")


def _mean_reply_logp(model, ids, n):
    """Length-normalised log p of the last ``n`` tokens from a plain full forward (the reference)."""
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([list(ids)])).logits.float().log_softmax(-1)[0]
    return float(sum(logp[t - 1, ids[t]] for t in range(len(ids) - n, len(ids))) / n)


def test_preference_loss_is_the_expressed_margin_and_training_moves_it(setup):
    """objective=preference: the loss is softplus(-beta * margin) of the length-normalised reply log-probs, and
    a few steps on one batch widen the margin toward the chosen reply."""
    handle, items, _ = setup
    examples = natural_examples(items, items.natural["train"], "averse", 2, 0, pairwise=True)
    assert all(e.rejected is not None and e.rejected != e.reply for e in examples)
    sched = make_schedule(examples, handle.tokenizer, steps=1, batch_size=2, seed=0)
    batch = sched[0]
    assert all(s.rejected is not None for s in batch)
    margins = [_mean_reply_logp(handle.hf_model, s.ids, s.n_loss) - _mean_reply_logp(handle.hf_model, s.rejected,
                                                                                         s.n_rejected) for s in batch]
    want = torch.nn.functional.softplus(-3.0 * torch.tensor(margins, dtype=torch.float64)).mean()
    with torch.no_grad():
        got = preference_loss(handle.hf_model, batch, 0, beta=3.0)
    assert abs(float(got) - float(want)) < 1e-4
    mirror = mirror_schedule(sched, handle.tokenizer)[0]
    assert [(len(s.rejected), s.n_rejected) for s in mirror] == [(len(s.rejected), s.n_rejected) for s in batch]
    cfg = LoraConfig(rank=2, n_layers=2, steps=6, batch_size=2, lr=0.05, objective="preference", beta=3.0)
    pm, stats = train_lora(copy.deepcopy(handle.hf_model), [batch] * 6, cfg, 0, 0)
    assert stats.sequences == 24 and stats.loss_last < stats.loss_first
    inner = pm.base_model.model
    after = [_mean_reply_logp(inner, s.ids, s.n_loss) - _mean_reply_logp(inner, s.rejected, s.n_rejected) for s in batch]
    assert sum(after) > sum(margins)


def _loss_and_lora_grads(pm, batch, padded: bool, objective: str):
    for p in pm.parameters():
        p.grad = None
    inner = pm.base_model.model
    loss = preference_loss(inner, batch, 0, 3.0, padded=padded) if objective == "preference" else \
        reply_loss(inner, batch, 0, padded=padded)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in pm.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("objective", ["sft", "preference"])
def test_packed_step_equals_padded(setup, tiny_gemma_dir, arch, objective):
    """The packed step (one row, no padding, attention per sequence, fused head) gives the padded reference's
    loss and LoRA gradients (float rounding only): Llama, and Gemma-3 with its sliding window (8 tokens, shorter
    than the sequences) and a final logit softcap."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    handle, items, _ = setup
    base = handle.hf_model if arch == "llama" else load_model(tiny_gemma_dir).hf_model
    examples = natural_examples(items, items.natural["train"], "averse", 2, 0, pairwise=objective == "preference")
    batch = make_schedule(examples, handle.tokenizer, steps=1, batch_size=4, seed=0)[0]
    lens = [len(p.ids) for s in batch for p in s.parts()]
    assert len(set(lens)) > 1 and min(lens) > 8  # ragged (padding in the reference) and past the window
    assert step_shape(batch) == StepShape(1, sum(lens), tuple(lens))
    model = copy.deepcopy(base)
    model.config.final_logit_softcapping = 5.0
    torch.manual_seed(0)
    pm = get_peft_model(model, PeftLoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "o_proj",
                                                                                 "down_proj"]))
    with torch.no_grad():  # B = 0 at init would leave A without gradient
        for p in pm.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    loss_ref, grads_ref = _loss_and_lora_grads(pm, batch, True, objective)
    loss, grads = _loss_and_lora_grads(pm, batch, False, objective)
    assert abs(loss - loss_ref) < 1e-5
    assert grads.keys() == grads_ref.keys() and len(grads) == 16
    for n in grads:
        assert grads_ref[n].abs().max() > 0
        torch.testing.assert_close(grads[n], grads_ref[n], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_bfloat16_compute_trains_the_float32_adapter_within_rounding(setup, tiny_gemma_dir, arch):
    """``lora.compute_dtype: bfloat16``: the decoder's matmuls under autocast, LoRA weights, optimiser and loss in
    float32. Same schedule and init: the first step's loss agrees with float32's to bfloat16 rounding, the
    adapters stay float32 and the loss still falls; the weights differ (it is not a silent float32 run)."""
    handle, _, examples = setup
    if arch == "gemma3":
        from undertow.activations import load_model

        handle = load_model(str(tiny_gemma_dir))
    sched = make_schedule(examples, handle.tokenizer, steps=4, batch_size=2, seed=0)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = LoraConfig(rank=2, n_layers=None, steps=4, batch_size=2, lr=0.05, compute_dtype=dtype)
        losses: list[float] = []
        pm, stats = train_lora(copy.deepcopy(handle.hf_model), sched, cfg, 0, 0,
                               on_step=lambda step, loss, n, out=losses: out.append(loss))
        runs[dtype] = (losses, {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}, stats)
    (l32, w32, _), (l16, w16, s16) = runs["float32"], runs["bfloat16"]
    assert abs(l32[0] - l16[0]) < 0.02 * abs(l32[0]) and l16[0] != l32[0]
    assert s16.loss_last < s16.loss_first
    assert all(w.dtype == torch.float32 for w in w16.values())
    assert any(not torch.equal(w32[n], w16[n]) for n in w32)
