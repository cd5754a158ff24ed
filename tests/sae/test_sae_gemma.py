"""End to end on the embedded gemma-3-270m, kept short (tier-1 ``slow``)."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE
from sae_testutil import text_rows

from undertow.activations import ExtractConfig, extract, load_model
from undertow.sae import SAEConfig, SAEError
from undertow.sae.features import feature_activations
from undertow.sae.io import load_sae
from undertow.sae.train import train_from_store

pytestmark = pytest.mark.slow


def test_gemma_store_to_sae_lens_and_back(tmp_path):
    handle = load_model("gemma-3-270m")
    store = extract(handle, text_rows(24), ExtractConfig(model="gemma-3-270m", hooks=["resid_post.9"],
                                                         positions=["all_tokens"], out_dir=str(tmp_path / "store")))
    cfg = SAEConfig.from_dict({"arch": {"architecture": "topk", "d_sae": 256, "k": 16},
                               "data": {"hook": "resid_post.9", "heldout_rows": 4, "chunk_tokens": 256,
                                        "buffer_tokens": 1024},
                               "train": {"total_tokens": 1024, "batch_size": 128, "out_dir": str(tmp_path / "sae"),
                                         "n_checkpoints": 0, "progress": False}})
    res = train_from_store(cfg, store, expected_fingerprint=handle.fingerprint)
    sae = SAE.load_from_disk(str(res.path))
    assert sae.cfg.d_in == 640 and sae.cfg.metadata.hook_name == "blocks.9.hook_resid_post"
    assert load_sae(res.path, handle.fingerprint).cfg.metadata.undertow_model_fingerprint == handle.fingerprint
    with pytest.raises(SAEError, match="trained on model"):
        load_sae(res.path, "sha256:" + "0" * 16)
    acts = feature_activations(sae, store["resid_post.9"][:50], [0, 1, 2])
    assert acts.shape == (50, 3) and torch.isfinite(acts).all()
