"""The store as sae-lens' data provider, the on-the-fly provider, and bad stores refused in one line."""

from __future__ import annotations

import pytest
import torch
from sae_testutil import text_rows

from undertow.activations import ExtractConfig, extract, load_model
from undertow.sae.data import model_chunks, open_store_tokens, store_chunks, store_provider
from undertow.sae.errors import SAEError


def test_provider_yields_shuffled_float_batches_of_training_tokens_only(store):
    tokens = open_store_tokens(store, "resid_post.1", d_in=64, heldout_rows=16)
    lo, hi = tokens.train_tokens
    assert hi == tokens.heldout_tokens[0] and tokens.heldout_tokens[1] == store.manifest["tokens"]
    provider = store_provider(tokens, 128, chunk_tokens=64, buffer_tokens=512, seed=1)
    batches = [next(provider) for _ in range(8)]
    assert all(b.shape == (128, 64) and b.dtype == torch.float32 for b in batches)
    train = store["resid_post.1"][lo:hi]
    heldout = tokens.heldout()
    first = torch.cat(batches)

    def dist(a, b):
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")

    # every served vector is a training vector, and none of the held-out-only vectors (BOS is shared) is served
    assert dist(first, train).min(1).values.max() < 1e-5
    held_only = heldout[dist(heldout, train).min(1).values > 1e-3]
    assert len(held_only) > 100 and dist(first, held_only).min() > 1e-3
    # token-wise shuffle: consecutive served vectors are rarely consecutive store tokens
    idx = dist(first[:128], train).argmin(1)
    assert (idx.diff().abs() == 1).float().mean() < 0.2


def test_chunk_order_changes_per_epoch_and_covers_every_token(store):
    tokens = open_store_tokens(store, "resid_post.1", heldout_rows=16)
    lo, hi = tokens.train_tokens
    one = torch.cat(list(store_chunks(tokens, 100, seed=0, epochs=1)))
    two = torch.cat(list(store_chunks(tokens, 100, seed=0, epochs=1, start_epoch=1)))
    assert one.shape[0] == two.shape[0] == hi - lo
    assert not torch.equal(one, two)
    full = store["resid_post.1"][lo:hi]
    assert torch.allclose(one.sum(0), full.sum(0), atol=1e-3)  # a permutation of the same tokens


def test_wrong_d_model_other_model_and_position_are_refused(store, make_store):
    with pytest.raises(SAEError, match="d_model=64 .* d_in=640"):
        open_store_tokens(store, "resid_post.1", d_in=640)
    with pytest.raises(SAEError, match="extracted from model .* not sha256:feedface"):
        open_store_tokens(store, "resid_post.1", expected_fingerprint="sha256:feedface")
    pooled = make_store(40, positions=("last_prompt_token",))
    with pytest.raises(SAEError, match="positions: \\[all_tokens\\]"):
        open_store_tokens(pooled, "resid_post.1")
    with pytest.raises(SAEError, match="leaves no training rows"):
        open_store_tokens(store, "resid_post.1", heldout_rows=len(store))


def test_a_store_with_nans_is_refused(tiny_gemma_dir, tmp_path):
    handle = load_model(str(tiny_gemma_dir))
    with torch.no_grad():
        handle.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    cfg = ExtractConfig(model="tiny", hooks=["resid_post.1"], positions=["all_tokens"], dtype="float32",
                        out_dir=str(tmp_path / "nan"), shard_size=64)
    with pytest.warns(UserWarning, match="non-finite"):
        store = extract(handle, text_rows(8), cfg)
    with pytest.raises(SAEError, match="non-finite values at resid_post.1@all_tokens"):
        open_store_tokens(store, "resid_post.1")


def test_on_the_fly_chunks_match_the_store(tiny, store):
    rows = text_rows(160)[:12]
    got = torch.cat(list(model_chunks(tiny, rows, "resid_post.1", batch_rows=5, seed=0, epochs=1)))
    n = sum(store.rows["n_tokens"][:12])
    assert got.shape == (n, 64)
    want = store["resid_post.1"][:n]
    # the same vectors in another (row-shuffled) order
    assert torch.allclose(got.sum(0), want.sum(0), atol=1e-2)
    assert torch.cdist(got[:50], want, compute_mode="donot_use_mm_for_euclid_dist").min(1).values.max() < 1e-3
