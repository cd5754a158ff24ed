"""One clear ProbeError per bad input named in the issue (each message names the fix)."""

import pytest
import torch

from undertow.probes import Probe, ProbeError, fit_probe, sweep, transfer


def _acts(n=40, d=4):
    return {"h": torch.randn(n, d)}


def test_single_class_labels():
    with pytest.raises(ProbeError, match=r"labels contain only class 1 \(40 rows\); a probe needs both classes"):
        sweep(_acts(), [1] * 40, list(range(40)))
    with pytest.raises(ProbeError, match="only class 0"):
        fit_probe(torch.randn(10, 3), [0] * 10)


@pytest.mark.filterwarnings("ignore:no split column")
def test_fewer_rows_or_groups_than_folds():
    with pytest.raises(ProbeError, match=r"only 4 rows in 4 template groups for n_folds=5; lower n_folds"):
        sweep(_acts(4), [0, 1, 0, 1], [0, 1, 2, 3])
    with pytest.raises(ProbeError, match=r"40 rows in 2 template groups for n_folds=5"):
        sweep(_acts(), [0, 1] * 20, [0] * 20 + [1] * 20)


@pytest.mark.filterwarnings("ignore:no split column")
def test_nan_rows_name_count_and_hook():
    acts = _acts()
    acts["h"][[3, 7]] = float("nan")
    with pytest.raises(ProbeError, match=r"hook 'h' has 2 rows with NaN/inf \(rows \[3, 7\]\).*drop_nan=True"):
        sweep(acts, [0, 1] * 20, list(range(40)), n_boot=0, n_perm=0)
    with pytest.raises(ProbeError, match="NaN/inf"):
        fit_probe(acts["h"], [0, 1] * 20)


def test_mismatched_d_model():
    p = fit_probe(torch.randn(20, 4), [0, 1] * 10, hook="resid_post.1")
    with pytest.raises(ProbeError, match=r"d_model=5 but probe 'resid_post.1' expects 4"):
        p.score(torch.randn(3, 5))
    with pytest.raises(ProbeError, match=r"train d_model=4 but test d_model=6"):
        transfer(torch.randn(20, 4), [0, 1] * 10, torch.randn(10, 6), [0, 1] * 5)


def test_probe_for_another_model(tmp_path):
    p = fit_probe(torch.randn(20, 4), [0, 1] * 10, model_fingerprint="gemma-3-270m:abc")
    p.save(tmp_path)
    with pytest.raises(ProbeError, match=r"'gemma-3-270m:abc'.*'smollm2:def'.*allow_fingerprint_mismatch=True"):
        Probe.load(tmp_path, expected_fingerprint="smollm2:def")


def test_tampered_probe_file(tmp_path):
    fit_probe(torch.randn(20, 4), [0, 1] * 10).save(tmp_path)
    f = tmp_path / "probe.safetensors"
    f.write_bytes(f.read_bytes()[:-4] + b"\x00\x00\x80\x7f")  # last float -> inf
    with pytest.raises(ProbeError, match="does not match the weights_sha256"):
        Probe.load(tmp_path)
