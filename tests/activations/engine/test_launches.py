"""The engine's kernel launches per batch beyond the bare forward stay within a budget (torch.profiler on the
CPU as a proxy for CUDA launches: ``undertow.activations.engine.launches``, as ``scripts/bench_launches.py``).

A change that adds launches on the hot path fails here until the budget is raised on purpose, with the new
count measured and written down. The pooling runs the pure-torch reference (on CUDA the Triton kernel replaces
its pooling, non-finite and moments rows; ``scripts/results/bench_launches.json`` has both).
"""

from __future__ import annotations

import pytest

from undertow.activations import ExtractConfig, load_model
from undertow.activations.engine.launches import Comparison, compare
from undertow.kernels.batch_pool import BatchPool

# Measured (fc813f5's engine): tiny-llama and tiny-gemma3 (2 layers, both resid_post hooked), bf16 model and
# store, last_prompt_token + mean_response, batch 4, shard 8, 8 chat rows (2 batches, 1 shard), reference
# pooling, CPU. Per batch 34 launches beyond the bare forward (pooling 12, moments 9, index tensors 8,
# non-finite checks 5; bench_launches' tiny rows read the same); per shard 66 (moments merge 48, shard
# finish 18); per run none.
BATCH_BUDGET = 34
SHARD_BUDGET = 66
HOOKS = 2


@pytest.fixture(autouse=True)
def reference_pooling(monkeypatch):
    monkeypatch.setenv("UNDERTOW_GATHER_POOL", "ref")


@pytest.fixture(scope="module")
def bf16_models(tiny_llama_dir, tiny_gemma_dir):
    return {name: load_model(str(path), dtype="bfloat16", device="cpu")
            for name, path in (("tiny_llama", tiny_llama_dir), ("tiny_gemma", tiny_gemma_dir))}


@pytest.fixture(scope="module")
def unpatched(bf16_models, chat_rows):
    """``unpatched(model)``: the model's comparison with the engine as it is, measured once for both tests."""
    done: dict[str, Comparison] = {}

    def get(model: str) -> Comparison:
        if model not in done:
            done[model] = measure(bf16_models[model], chat_rows)
        return done[model]

    return get


def measure(handle, chat_rows, layout: str = "padded") -> Comparison:
    """Padded with the deepest layer whole: a GPU's layout (``ExtractConfig.layout``, ``deepest_layer``,
    ``cpu_linear``), where launches cost; packed with it narrowed: the CPU's (the models are bfloat16, so
    ``cpu_linear: auto`` keeps aten)."""
    config = ExtractConfig(model=handle.name, hooks=["resid_post.*"], positions=["last_prompt_token", "mean_response"],
                           dtype="bfloat16", model_dtype="bfloat16", batch_size=4, token_budget=512, shard_size=8,
                           share_prompts=False, layout=layout, deepest_layer="full" if layout == "padded" else "narrow",
                           cpu_linear="aten" if layout == "padded" else "auto", out_dir="unused")
    got = compare(handle, chat_rows(8), config)
    assert (got.n_batches, got.n_shards) == (2, 1)
    assert got.bare["launches"]["forward"] == got.engine["launches"]["forward"] > 0  # like for like
    return got


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma"])
def test_engine_launches_per_batch_within_budget(unpatched, model):
    got = unpatched(model)
    by_source = {k: v / got.n_batches for k, v in got.extra().items()}
    assert got.extra_per_batch() <= BATCH_BUDGET, f"engine launches per batch beyond the bare forward: {by_source}"
    per_shard = sum(got.extra(scope="shard").values()) / got.n_shards
    assert per_shard <= SHARD_BUDGET, f"per shard: {dict(got.extra(scope='shard'))}"
    assert got.unattributed() == 0, "engine code that launches.SOURCES does not name: keep its tables in step"
    assert not got.extra(scope="run"), f"per run: {dict(got.extra(scope='run'))}"


def test_an_extra_op_per_hook_breaks_the_budget(bf16_models, chat_rows, unpatched, monkeypatch):
    """The budget can fail: one more op per hook and batch in the pooling shows as exactly one launch per hook."""
    handle = bf16_models["tiny_llama"]
    before = unpatched("tiny_llama")
    add = BatchPool.add

    def add_plus_zero(self, hook, acts_BTD):
        acts_BTD + 0  # noqa: B018  (the launch under test)
        return add(self, hook, acts_BTD)

    monkeypatch.setattr(BatchPool, "add", add_plus_zero)
    after = measure(handle, chat_rows)
    assert after.extra_per_batch() - before.extra_per_batch() == HOOKS
    assert after.extra_per_batch() > BATCH_BUDGET
    assert after.extra()["hooks"] - before.extra()["hooks"] == HOOKS * after.n_batches  # the hook callback's


def test_packed_layout_adds_no_launch_beyond_its_own_forward(bf16_models, chat_rows, unpatched):
    """The packed layout with the deepest layer narrowed (the CPU's): against the bare forward packed and
    narrowed the same way, the engine adds what it adds to a padded batch; the packing's own gathers (4 per
    attention layer) and the narrowing's (a gather, a zero fill and a scatter per narrowed module) belong to both
    forwards. Measured (tiny Gemma-3, 2 layers): the packed forward launches 13 fewer per batch than the padded
    one (no causal-mask or position-id ops, 8 gathers added); narrowed, 9 more than that."""
    handle = bf16_models["tiny_gemma"]
    packed, padded = measure(handle, chat_rows, "packed"), unpatched("tiny_gemma")
    assert packed.extra_per_batch() == padded.extra_per_batch() <= BATCH_BUDGET, dict(packed.extra())
    assert packed.unattributed() == 0
    assert packed.bare["launches"]["forward"] != padded.bare["launches"]["forward"]  # the packed forward ran
