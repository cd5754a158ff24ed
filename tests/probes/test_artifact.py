import json
import pickle

import pytest
import torch
from probes_testutil import planted

from undertow.probes import Probe, ProbeError, ProbeWarning, fit_probe


@pytest.fixture()
def probe():
    x, y = planted(300, 12, shift=2.0, seed=0, dtype=torch.float32)
    return fit_probe(x, y, "logistic", hook="resid_post.3", model_fingerprint="fp:aaa", position="last",
                     threshold=0.25), x, y


def test_fused_projection_equals_standardised_formula(probe):
    p, x, _ = probe
    ref = ((x - p.mean) / p.std) @ p.weight + p.bias
    torch.testing.assert_close(p.score(x), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(x @ p.w_eff + p.b_eff, ref, atol=1e-4, rtol=1e-5)
    assert p.direction.norm().item() == pytest.approx(1.0) and torch.dot(p.direction, p.w_eff) > 0
    assert torch.equal(p.predict(x), p.score(x) > 0.25)
    assert p.score(x.double()).dtype == torch.float64 and p.score(x[0]).shape == ()


def test_save_load_roundtrip_keeps_everything(probe, tmp_path):
    p, x, _ = probe
    out = p.save(tmp_path / "probe")
    assert sorted(f.name for f in out.iterdir()) == ["probe.json", "probe.safetensors"]
    q = Probe.load(out, expected_fingerprint="fp:aaa")
    torch.testing.assert_close(q.score(x), p.score(x))
    for k in ("hook", "probe_type", "threshold", "model_fingerprint", "position", "training_data_hash", "created"):
        assert getattr(q, k) == getattr(p, k), k
    meta = json.loads((out / "probe.json").read_text())
    assert meta["d_model"] == 12 and len(meta["weights_sha256"]) == 64 and "undertow_version" in meta


def test_load_never_unpickles(probe, tmp_path, monkeypatch):
    p, _, _ = probe
    out = p.save(tmp_path / "probe")

    def boom(*a, **k):
        raise AssertionError("pickle/torch.load used")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    Probe.load(out)


def test_other_model_fingerprint_refused_unless_allowed(probe, tmp_path):
    p, _, _ = probe
    out = p.save(tmp_path / "probe")
    with pytest.raises(ProbeError, match=r"fingerprint 'fp:aaa' but the current model is 'fp:bbb'.*"
                                         r"allow_fingerprint_mismatch=True"):
        Probe.load(out, expected_fingerprint="fp:bbb")
    with pytest.warns(ProbeWarning, match="allowed"):
        Probe.load(out, expected_fingerprint="fp:bbb", allow_fingerprint_mismatch=True)


def test_tampered_weights_refused(probe, tmp_path):
    p, _, _ = probe
    out = p.save(tmp_path / "probe")
    raw = bytearray((out / "probe.safetensors").read_bytes())
    raw[-3] ^= 0x01  # flip one bit inside the tensor data
    (out / "probe.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ProbeError, match=r"probe.safetensors does not match the weights_sha256.*re-download or re-train"):
        Probe.load(out)


def test_tampered_metadata_refused(probe, tmp_path):
    p, _, _ = probe
    out = p.save(tmp_path / "probe")
    meta = json.loads((out / "probe.json").read_text())
    meta["threshold"] = -100.0  # quietly make the probe fire on everything
    (out / "probe.json").write_text(json.dumps(meta))
    with pytest.raises(ProbeError, match="does not match its metadata_sha256"):
        Probe.load(out)


def test_wrong_d_model_and_missing_files(probe, tmp_path):
    p, _, _ = probe
    with pytest.raises(ProbeError, match=r"d_model=16 but probe 'resid_post.3' expects 12"):
        p.score(torch.randn(4, 16))
    with pytest.raises(ProbeError, match="is not a saved probe"):
        Probe.load(tmp_path)
    with pytest.raises(ProbeError, match="disagree on d_model"):
        Probe(weight=torch.ones(3), bias=0.0, mean=torch.zeros(4), std=torch.ones(3), hook="h", probe_type="lda")


def test_metrics_with_nan_serialise(probe, tmp_path):
    p, _, _ = probe
    p.metrics = {"test_auroc": float("nan"), "val": torch.tensor(0.5)}
    q = Probe.load(p.save(tmp_path / "probe"))
    assert q.metrics == {"test_auroc": None, "val": 0.5}
