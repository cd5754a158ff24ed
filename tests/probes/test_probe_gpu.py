"""Tier 2: the same fits and sweep on a CUDA device give the CPU answers (skipped without CUDA)."""

import pytest
import torch

from undertow.probes import fit_layers, make_synthetic, sweep

pytestmark = pytest.mark.gpu


def test_fit_layers_on_cuda_matches_cpu():
    st = make_synthetic(800, 3, 48, n_templates=40, peak=2.0)
    X = torch.stack([st[h] for h in st.hooks[1:]])
    y = torch.as_tensor(st.rows["label"])
    for ptype in ("diff_means", "lda", "logistic"):
        cpu = fit_layers(X, y, ptype)
        gpu = fit_layers(X.cuda(), y, ptype)
        assert gpu.weight_LD.is_cuda
        torch.testing.assert_close(gpu.score(X.cuda()).cpu(), cpu.score(X), atol=2e-3, rtol=2e-3)


def test_sweep_on_cuda_tensors_matches_cpu():
    st = make_synthetic(1200, 4, 32, n_templates=60, peak=2.0, n_control=100)
    cpu = sweep(st, embed_hook="embed", n_boot=100, n_perm=100)
    st_gpu = make_synthetic(1200, 4, 32, n_templates=60, peak=2.0, n_control=100)
    st_gpu.acts = {h: a.cuda() for h, a in st_gpu.acts.items()}
    gpu = sweep(st_gpu, embed_hook="embed", n_boot=100, n_perm=100)
    assert (gpu.operating_point.hook, gpu.operating_point.probe_type) == (cpu.operating_point.hook,
                                                                          cpu.operating_point.probe_type)
    for a, b in zip(gpu.table, cpu.table, strict=True):
        for k in ("cv_auroc_mean", "val_auroc", "test_auroc", "test_auroc_lo", "p_value", "selectivity"):
            assert a[k] == pytest.approx(b[k], abs=5e-3), (a["hook"], a["probe_type"], k)
    probe = gpu.probe()
    assert probe.score(st_gpu[probe.hook][:5]).is_cuda
