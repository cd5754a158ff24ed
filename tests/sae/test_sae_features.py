"""Feature analysis: activations for given states, contrast statistics, top examples, directions, SAE probes."""

from __future__ import annotations

import math

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_testutil import text_rows

from undertow.sae.errors import SAEError
from undertow.sae.features import (
    class_means,
    contrast_features,
    decoder_cosines,
    feature_activations,
    row_feature_acts,
    top_examples,
)
from undertow.sae.probes import compare_probes


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    s = StandardSAE(StandardSAEConfig(d_in=64, d_sae=96))
    with torch.no_grad():
        s.b_enc.fill_(-0.5)  # sparse-ish on the tiny model's activations
        s.W_enc.mul_(8)
    return s


def test_feature_activations_selects_columns_and_checks_inputs(sae, store):
    x = store["resid_post.1"][:40]
    full = feature_activations(sae, x)
    assert full.shape == (40, 96)
    assert torch.equal(feature_activations(sae, x, [5, 2]), full[:, [5, 2]])
    assert torch.allclose(full, sae.encode(x).detach())
    with pytest.raises(SAEError, match="d_in=64"):
        feature_activations(sae, torch.zeros(3, 32))
    with pytest.raises(SAEError, match="NaN"):
        feature_activations(sae, torch.full((2, 64), float("nan")))
    with pytest.raises(SAEError, match="feature indices"):
        feature_activations(sae, x, [96])
    means = class_means(full, [0, 1] * 20)
    assert torch.allclose(means[1], full[1::2].mean(0))


def test_row_feature_acts_is_the_max_over_each_rows_tokens(sae, store):
    got = row_feature_acts(sae, store, "resid_post.1", [0, 1, 2])
    off = store.token_offsets("resid_post.1")
    assert got.shape == (len(store), 3)
    for r in (0, 7, len(store) - 1):
        want = feature_activations(sae, store["resid_post.1"][int(off[r]):int(off[r + 1])], [0, 1, 2]).max(0).values
        assert torch.allclose(got[r], want)


def test_contrast_finds_a_planted_feature_with_corrected_p_values():
    g = torch.Generator().manual_seed(0)
    n, f = 240, 50
    labels = torch.arange(n) % 2
    groups = [f"t{i % 12}" for i in range(n)]
    acts = torch.relu(torch.randn(n, f, generator=g))
    acts[:, 7] = torch.relu(torch.randn(n, generator=g) + 2.5 * labels)  # fires more on label 1
    acts[:, 9] = 0.0  # silent: left out of the Holm/BH family
    res = contrast_features(acts, labels, groups, n_boot=400)
    top = res.table[0]
    assert top["feature"] == 7 and top["auroc"] > 0.8 and top["mean_diff"] > 0.5
    assert top["p_holm"] < 0.05 and top["auroc_lo"] < top["auroc"] < top["auroc_hi"]
    assert res.n_features_tested == f - 1
    silent = next(r for r in res.table if r["feature"] == 9)
    assert math.isnan(silent["p"])
    null_holm = sorted(r["p_holm"] for r in res.table if r["feature"] not in (7, 9))
    assert null_holm[0] > 0.05  # noise features survive no correction
    assert res.top(1, "pos")[0]["feature"] == 7


def test_top_examples_mark_the_active_tokens(sae, store, small_tokenizer):
    rows = text_rows(160)
    acts = row_feature_acts(sae, store, "resid_post.1", [3])
    ex = top_examples(sae, store, "resid_post.1", 3, rows, small_tokenizer, k=3, template="auto")
    assert [e.row for e in ex] == torch.argsort(acts[:, 0], descending=True)[:3].tolist()
    assert ex[0].max_act == pytest.approx(float(acts[:, 0].max()))
    assert "[[" in ex[0].text and ex[0].row_id == rows[ex[0].row]["id"]
    with pytest.raises(SAEError, match="160-row store"):
        top_examples(sae, store, "resid_post.1", 3, rows[:10], small_tokenizer)


def test_decoder_cosines(sae):
    cos = decoder_cosines(sae, [4, 5], {"probe": sae.W_dec[5].detach() * 3.0})
    assert cos["probe"][1] == pytest.approx(1.0, abs=1e-5) and abs(float(cos["probe"][0])) < 0.9
    with pytest.raises(SAEError, match="has 3 dims"):
        decoder_cosines(sae, [4], {"bad": torch.ones(3)})


def test_sae_probes_vs_raw_probes_share_one_split_plan(sae, make_store):
    pooled = make_store(160, positions=("mean_prompt",))
    raw = torch.as_tensor(pooled["resid_post.1"][:])
    feats = feature_activations(sae, raw)
    cmp = compare_probes(raw, feats, pooled.rows, k=8, probe_types=("logistic",), n_boot=100, n_perm=100,
                         n_folds=3)
    hooks = {r["hook"] for r in cmp.table}
    assert hooks == {"raw", "sae", "sae_top8"} and len(cmp.top_features) == 8
    assert all(0.0 <= r["test_auroc"] <= 1.0 for r in cmp.table)
    assert "raw" in cmp.format()
