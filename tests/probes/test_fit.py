"""Probe fits against scikit-learn oracles (float64, tight tolerances) and planted signals."""

import numpy as np
import pytest
import torch
from probes_testutil import planted
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from undertow.probes import FitConfig, fit_layers
from undertow.probes.fit import fit_types
from undertow.probes.problems import Prepared, ProblemSet, standardisation

F64 = FitConfig(dtype=torch.float64, tol=1e-10, l2=1e-2, max_iter=500)


def _layers(L=3, n=400, d=8):
    xs, ys = zip(*(planted(n, d, shift=1.0 + i, seed=i) for i in range(L)), strict=True)
    return torch.stack(xs), torch.stack(ys)


def test_logistic_matches_sklearn_per_layer():
    X, Y = _layers()
    y = Y[0]  # one label vector for every layer (the layers' own planted labels differ: fine for a fit test)
    fit = fit_layers(X, y, "logistic", config=F64)
    for i in range(X.shape[0]):
        Z = StandardScaler().fit_transform(X[i].numpy())
        sk = LogisticRegression(C=1.0 / (F64.l2 * len(y)), tol=1e-12, max_iter=10_000).fit(Z, y.numpy())
        np.testing.assert_allclose(fit.weight_LD[i].numpy(), sk.coef_[0], atol=1e-6)
        assert fit.bias_L[i].item() == pytest.approx(sk.intercept_[0], abs=1e-6)
    assert bool(fit.converged_L.all())


def test_fold_problem_equals_sklearn_pipeline_on_fold_rows():
    """Per-problem standardisation is folded into the penalty: the fold fit must equal a fresh
    StandardScaler + LogisticRegression on that fold's rows."""
    x, y = planted(300, 6, shift=1.5, seed=4)
    mask = torch.arange(300) % 5 != 0
    mean, std = standardisation(x[None])
    Xs = (x[None] - mean[:, None]) / std[:, None]
    probs = ProblemSet(torch.stack([mask, torch.ones(300, dtype=torch.bool)]), torch.stack([y, y]), ["fold", "all"])
    fit = fit_types(Prepared(Xs, probs, std), ["logistic"], F64)["logistic"]
    sc = StandardScaler().fit(x[mask].numpy())
    sk = LogisticRegression(C=1.0 / (F64.l2 * int(mask.sum())), tol=1e-12, max_iter=10_000)
    sk.fit(sc.transform(x[mask].numpy()), y[mask].numpy())
    ours = (Xs[0] @ fit.w_LKD[0, 0] + fit.b_LK[0, 0]).numpy()
    theirs = sk.decision_function(sc.transform(x.numpy()))
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_lda_matches_sklearn_and_ledoit_wolf():
    x, y = planted(200, 12, shift=1.0, seed=2)
    fit = fit_layers(x[None], y, "lda", config=F64)
    Z = StandardScaler().fit_transform(x.numpy())
    Zc = Z.copy()
    yb = y.numpy().astype(bool)
    Zc[yb] -= Zc[yb].mean(0)
    Zc[~yb] -= Zc[~yb].mean(0)
    alpha = ledoit_wolf_shrinkage(Zc, assume_centered=True)
    mu, std = standardisation(x[None])
    prep = Prepared((x[None] - mu[:, None]) / std[:, None],
                    ProblemSet(torch.ones(1, 200, dtype=torch.bool), y[None], ["all"]), std)
    ours_alpha = fit_types(prep, ["lda"], F64)["lda"].shrinkage_LK[0, 0].item()
    assert ours_alpha == pytest.approx(alpha, abs=1e-9)
    sk = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=alpha).fit(Z, y.numpy())
    w = fit.weight_LD[0].numpy()
    cos = w @ sk.coef_[0] / np.linalg.norm(w) / np.linalg.norm(sk.coef_[0])
    assert cos == pytest.approx(1.0, abs=1e-9)


def test_fixed_shrinkage_lda_matches_sklearn():
    x, y = planted(150, 10, seed=5)
    cfg = FitConfig(dtype=torch.float64, shrinkage=0.3)
    w = fit_layers(x[None], y, "lda", config=cfg).weight_LD[0].numpy()
    sk = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=0.3).fit(StandardScaler().fit_transform(x.numpy()), y.numpy())
    assert w @ sk.coef_[0] / np.linalg.norm(w) / np.linalg.norm(sk.coef_[0]) == pytest.approx(1.0, abs=1e-9)


def test_diff_means_is_raw_class_mean_difference():
    x, y = planted(300, 6, seed=1)
    fit = fit_layers(x[None], y, "diff_means", config=F64)
    dmu = x[y == 1].mean(0) - x[y == 0].mean(0)
    w = fit.w_eff_LD[0]
    assert torch.dot(w, dmu) / w.norm() / dmu.norm() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("ptype", ["diff_means", "lda", "logistic"])
def test_scores_are_logit_like_and_separate_planted_signal(ptype):
    x, y = planted(600, 10, shift=3.0, seed=3, dtype=torch.float32)
    fit = fit_layers(x[None], y, ptype)  # float32 default
    s = fit.score(x[None])[0]
    assert roc_auc_score(y.numpy(), s.numpy()) > 0.95
    p = torch.sigmoid(s)
    assert abs(p.mean().item() - y.mean().item()) < 0.05  # calibrated intercept


def test_float32_logistic_auroc_matches_sklearn():
    X, Y = _layers(L=2, n=500, d=16)
    y = Y[0]
    fit = fit_layers(X.float(), y, "logistic")
    for i in range(2):
        Z = StandardScaler().fit_transform(X[i].numpy())
        sk = LogisticRegression(C=1.0 / (1e-3 * len(y)), max_iter=5000).fit(Z, y.numpy())
        ours = roc_auc_score(y.numpy(), fit.score(X.float())[i].numpy())
        assert ours == pytest.approx(roc_auc_score(y.numpy(), sk.decision_function(Z)), abs=2e-3)


def test_batched_layers_equal_one_at_a_time():
    X, Y = _layers(L=3)
    y = Y[0]
    both = fit_layers(X, y, "logistic", config=F64)
    for i in range(3):
        one = fit_layers(X[i : i + 1], y, "logistic", config=F64)
        torch.testing.assert_close(both.weight_LD[i], one.weight_LD[0], atol=1e-7, rtol=0)
