"""Evaluation through sae-lens' evals: an exact SAE must score EV 1 and CE loss recovered 1."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_testutil import text_rows

from undertow.activations import load_model
from undertow.sae.errors import SAEError
from undertow.sae.evals import ce_metrics, evaluate_sae, pack_tokens, reconstruction_metrics


def exact_sae(d: int) -> StandardSAE:
    """relu(x) - relu(-x) = x: features [I, -I], a lossless SAE of d_sae = 2d."""
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_reconstruction_metrics_of_exact_and_zero_saes():
    x = torch.randn(500, 16) * 2 + 0.5  # both signs: every feature of the pair fires somewhere
    res = reconstruction_metrics(exact_sae(16), x, batch=128)
    assert res.explained_variance == pytest.approx(1.0, abs=1e-6)
    assert res.l0 == pytest.approx(16.0) and res.dead_fraction == pytest.approx(0.0) and res.n_tokens == 500
    silent = exact_sae(16)
    with torch.no_grad():
        silent.b_enc.fill_(-100.0)  # nothing fires: reconstruction is b_dec = 0
    res = reconstruction_metrics(silent, x)
    mean_only = 1 - float((x ** 2).sum(1).mean() / x.var(0, unbiased=False).sum())  # predicting 0, not the mean
    assert res.l0 == 0 and res.dead_fraction == 1.0 and res.explained_variance == pytest.approx(mean_only, abs=1e-4)
    with pytest.raises(SAEError, match="needs \\[N, 16\\]"):
        reconstruction_metrics(silent, torch.zeros(4, 8))


@pytest.fixture(scope="module")
def tl(tiny_gemma_dir):
    return load_model(str(tiny_gemma_dir), backend="transformer_lens").model


def test_ce_of_an_exact_sae_recovers_everything(tl):
    tokens = pack_tokens(tl.tokenizer, text_rows(30), 32, 4)
    assert tokens.shape == (4, 32)
    res = ce_metrics(exact_sae(64), tl, tokens, "blocks.1.hook_resid_post", batch=2)
    assert res["ce_sae"] == pytest.approx(res["ce_clean"], rel=1e-4)
    assert abs(res["ce_zero"] - res["ce_clean"]) > 0.01 and res["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    # the clean number is the model's own loss over the kept (non-special) predicted tokens
    loss = tl(tokens, return_type="loss", loss_per_token=True)
    keep = ~torch.isin(tokens, torch.tensor([tl.tokenizer.bos_token_id, tl.tokenizer.eos_token_id,
                                             tl.tokenizer.pad_token_id]))[:, :-1]
    assert res["ce_clean"] == pytest.approx(float(loss[keep].mean()), rel=1e-5)
    assert res["n_ce_tokens"] == int(keep.sum())
    full = evaluate_sae(exact_sae(64), torch.randn(50, 64), tl, tokens, "blocks.1.hook_resid_post")
    assert full.ce_loss_recovered == pytest.approx(1.0, abs=1e-3) and full.explained_variance > 0.999


def test_too_few_heldout_tokens_is_one_line(tl):
    with pytest.raises(SAEError, match="fewer than one 4096-token window"):
        pack_tokens(tl.tokenizer, text_rows(2), 4096, 1)
