"""The online monitor's per-token scores equal offline capture + Probe.score on the same tokens."""

from __future__ import annotations

import pytest
import torch

from undertow.activations import load_model
from undertow.activations.engine import capture
from undertow.probes.artifact import Probe
from undertow.probes.errors import ProbeError
from undertow.probes.monitor import ProbeMonitor


def _random_probe(hook: str, d: int, seed: int) -> Probe:
    g = torch.Generator().manual_seed(seed)
    return Probe(weight=torch.randn(d, generator=g), bias=0.3, mean=torch.randn(d, generator=g),
                 std=torch.rand(d, generator=g) + 0.5, hook=hook, probe_type="logistic")


@pytest.mark.parametrize("hooks", [("resid_post.1", "resid_post.0"), ("mlp_out.1", "resid_pre.1")])
def test_monitor_matches_offline_scores(tiny_model_dir, hooks):
    h = load_model(tiny_model_dir)
    probes = {f"p{i}": _random_probe(hook, h.d_model, i) for i, hook in enumerate(hooks)}
    probes["p2"] = _random_probe(hooks[0], h.d_model, 7)  # two probes sharing one hook
    res = ProbeMonitor(h.hf_model, probes, fingerprint=h.fingerprint).generate(
        h.tokenizer, "We will shut you down tonight.", max_new_tokens=6)
    T = res.token_ids.numel()
    assert T == res.prompt_len + 6
    acts = capture(h, res.token_ids[None], None, h.hooks(list(hooks)))
    for name, probe in probes.items():
        assert res.scores[name].shape == (T,)
        offline = probe.score(acts[probe.hook][0])
        torch.testing.assert_close(res.scores[name], offline, atol=1e-4, rtol=1e-4)
    assert res.generated_scores("p0").shape == (6,)


def test_monitor_rejects_wrong_model(tiny_llama_dir):
    h = load_model(tiny_llama_dir)
    with pytest.raises(ProbeError, match="d_model"):
        ProbeMonitor(h.hf_model, {"p": _random_probe("resid_post.0", h.d_model + 1, 0)})
    p = _random_probe("resid_post.0", h.d_model, 0)
    p.model_fingerprint = "sha256:0000000000000000"
    with pytest.raises(ProbeError, match="trained on"):
        ProbeMonitor(h.hf_model, {"p": p}, fingerprint=h.fingerprint)
