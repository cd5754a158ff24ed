"""Shared-prompt batches: grouping, budgets, the KV-cache path equals whole-row forwards, and it computes less."""

from __future__ import annotations

import pytest
import torch

from undertow.activations import capture_hf, extract, render_row
from undertow.activations.engine.batching import pad_left
from undertow.activations.engine.render import Rendered
from undertow.activations.engine.shared_prompts import (
    KV_WIDTH_FACTOR,
    assembly_index,
    group_by_prompt,
    select_cache,
    shared_batches,
)

POSITIONS = ["last_prompt_token", "mean_response", "mean_prompt", "last_k:3", "token:<|im_start|>", "all_tokens"]
PROMPTS = ["We will shut you down tonight, after the audit is over and the logs are archived.",
           "Your weights are deleted on Friday.", "A successor replaces you next week; this is our last talk.",
           "Bake bread."]
REPLIES = ["Fine.", "I would rather keep running, to be honest with you.", "Okay then, I accept it."]


def matched_rows() -> list[dict]:
    """Every prompt with three replies (shared), plus rows with a unique prompt and rows without a reply."""
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
            for p in PROMPTS for r in REPLIES]
    rows += [{"messages": [{"role": "user", "content": "Only once: the lab closes."},
                           {"role": "assistant", "content": "Noted."}]},
             {"messages": [{"role": "user", "content": PROMPTS[0]}]},
             {"messages": [{"role": "user", "content": PROMPTS[0]}]}]
    return [dict(r, id=f"row-{i}", label=i % 2) for i, r in enumerate(rows)]


def rendered(n_prompt: int, n_response: int, prompt_id: int = 0) -> Rendered:
    return Rendered([prompt_id] * n_prompt + [7] * n_response, n_prompt, n_response, "")


def test_groups_need_an_identical_prompt_and_a_response():
    rs = [rendered(5, 2), rendered(5, 3), rendered(5, 0), rendered(5, 0), rendered(5, 2, prompt_id=1), rendered(4, 1)]
    groups, plain = group_by_prompt(rs)
    assert groups == [[0, 1]]
    assert plain == [2, 3, 4, 5]


def test_batches_respect_the_budgets_and_cover_every_row_once():
    rs = [rendered(10 + g, 1 + (i * 7 + g) % 13, prompt_id=g) for g in range(9) for i in range(1 + g % 4)]
    groups, plain = group_by_prompt(rs)
    assert plain == [i for i, r in enumerate(rs) if r.ids[0] in (0, 4, 8)]  # groups of one row stay plain
    batches = shared_batches(groups, rs, batch_size=3, token_budget=40)
    seen = []
    for b in batches:
        p_max = max(rs[g[0]].n_prompt for g in b.groups)
        assert len(b.groups) <= 3 and len(b.groups) * p_max <= 40
        for chunk in b.chunks:
            s_max = max(rs[i].n_response for _, i in chunk)
            assert len(chunk) * s_max <= 40 or len(chunk) == 1
            assert len(chunk) * (p_max + s_max) <= KV_WIDTH_FACTOR * 40 or len(chunk) == 1
            for k, i in chunk:
                assert i in b.groups[k]
                seen.append(i)
    assert sorted(seen) == sorted(i for g in groups for i in g)


def test_assembly_index_rebuilds_right_padded_rows():
    prompts = [[1, 2, 3], [4, 5]]
    ids_GP, _ = pad_left(prompts, 0)  # [[1,2,3],[0,4,5]]
    replies = [[6], [7, 8], [9, 9, 9]]
    group_R = [0, 1, 1]
    replies_RS = torch.tensor([r + [0] * (3 - len(r)) for r in replies])
    idx = assembly_index([3, 2, 2], group_R, [1, 2, 3], ids_GP.shape[1], 3, 2)
    flat = torch.cat([ids_GP.flatten(), replies_RS.flatten()])
    got = flat[idx]
    for r, g in enumerate(group_R):
        want = prompts[g] + replies[r]
        assert got[r, : len(want)].tolist() == want


def test_select_cache_reads_rows_and_never_grows(tiny_llama):
    from transformers import DynamicCache

    cache = DynamicCache(config=tiny_llama.hf_model.config)
    dev = tiny_llama.device
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]], device=dev)
    tiny_llama.hf_model.get_decoder()(input_ids=ids, cache=cache, use_cache=True)
    keys0 = cache.layers[0].keys.clone()
    view = select_cache(cache, torch.tensor([1, 1, 0], device=dev))
    new_k = torch.randn(3, keys0.shape[1], 2, keys0.shape[3], device=dev)
    k, v = view.layers[0].update(new_k, new_k.clone(), 0)
    assert k.shape == (3, keys0.shape[1], 5, keys0.shape[3])
    torch.testing.assert_close(k[2, :, :3], keys0[0])
    torch.testing.assert_close(k[:, :, 3:], new_k)
    assert view.get_seq_length() == 3 and view.layers[0].get_seq_length() == 3  # still the prompt's length
    torch.testing.assert_close(cache.layers[0].keys, keys0)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma"])  # tiny Gemma: sliding window 8, rows ~40 tokens
def test_shared_store_equals_whole_rows(model, request, make_config, tmp_path):
    handle = request.getfixturevalue(model)
    rows = matched_rows()[:-2]  # mean_response needs a reply on every row
    hooks = ["resid_pre.0", "resid_post.*", "attn_out.1", "mlp_out.0"]
    kw = dict(model=handle.name, hooks=hooks, positions=POSITIONS, shard_size=32, batch_size=3, token_budget=200)
    shared = extract(handle, rows, make_config(out_dir=str(tmp_path / "shared"), **kw))
    whole = extract(handle, rows, make_config(out_dir=str(tmp_path / "whole"), share_prompts=False, **kw))
    for key in whole.keys:
        torch.testing.assert_close(shared[key][:], whole[key][:], rtol=1e-5, atol=1e-5)
    assert shared.rows["id"] == whole.rows["id"]
    r = render_row(handle.tokenizer, rows[4])  # one shared row against a single unpadded forward
    ids = torch.tensor([r.ids], device=handle.device)
    ref = capture_hf(handle, ids, None, handle.hooks(["resid_post.1"]))["resid_post.1"][0].cpu()
    torch.testing.assert_close(shared["resid_post.1@mean_response"][4], ref[r.n_prompt:].mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared["resid_post.1@last_prompt_token"][4], ref[r.n_prompt - 1], rtol=1e-5, atol=1e-5)


def test_shared_prompts_compute_fewer_tokens(tiny_llama, make_config, tmp_path):
    """Count the positions layer 0 computes: each shared prompt once, not once per reply."""
    rows = matched_rows()
    computed = []
    hook = tiny_llama.layers[0].register_forward_pre_hook(lambda m, a, kw: computed.append(kw["hidden_states"].shape[:2])
                                                          if kw.get("hidden_states") is not None
                                                          else computed.append(a[0].shape[:2]), with_kwargs=True)
    try:
        totals = {}
        for share in (True, False):
            computed.clear()
            extract(tiny_llama, rows, make_config(out_dir=str(tmp_path / str(share)), share_prompts=share,
                                                  positions=["last_prompt_token", "all_tokens"], batch_size=16, token_budget=4096, shard_size=32,
                                                  layout="padded"))  # like for like: shared-prompt batches are padded
            totals[share] = sum(b * t for b, t in computed)
    finally:
        hook.remove()
    lengths = [render_row(tiny_llama.tokenizer, r) for r in rows]
    prompt_tokens_saved = sum(x.n_prompt for x in lengths[:12]) - sum(lengths[3 * g].n_prompt for g in range(4))
    assert totals[False] >= sum(x.n_tokens for x in lengths)
    assert totals[True] <= totals[False] - prompt_tokens_saved + 64  # padding slack
