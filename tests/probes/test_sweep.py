import math
import warnings

import numpy as np
import pytest
import torch
from probes_testutil import sweep_once
from sklearn.metrics import roc_auc_score

from undertow.core.errors import ConfigError
from undertow.probes import COLUMNS, PROBE_TYPES, ProbeError, ProbeWarning, sweep


def test_table_has_every_hook_type_and_column(small_sweep, store):
    r = small_sweep
    assert len(r.table) == len(store.hooks) * len(PROBE_TYPES)
    assert set(COLUMNS) <= set(r.table[0])
    assert r.n_rows["control"] == 150 and r.n_rows["test"] > 100
    assert "resid_post.2" in r.format_table()


def test_planted_signal_is_found_on_validation_and_reported_on_test(small_sweep):
    r = small_sweep
    op = r.operating_point
    assert op.hook in ("resid_post.1", "resid_post.2", "resid_post.3") and op.selected_by == "val_auroc"
    assert op.threshold_source == "control"
    best = r.row(op.hook, op.probe_type)
    assert best["test_auroc"] > 0.85 and best["test_auroc_lo"] < best["test_auroc"] < best["test_auroc_hi"]
    assert best["selectivity"] > 0.25 and best["random_auroc_max"] < best["test_auroc"]
    assert best["p_holm"] < 0.05 and best["p_holm"] >= best["p_value"] and best["p_bh"] <= best["p_holm"]
    assert best["delta_vs_embed"] > 0.1 and best["delta_vs_lexical"] == pytest.approx(best["test_auroc"] - 0.6)
    weak = r.row("resid_post.0", op.probe_type)
    assert weak["test_auroc"] < best["test_auroc"] - 0.1
    assert all(math.isnan(x["p_holm"]) for x in r.table if x["is_embed"])  # baseline, not in the family


def test_test_labels_never_influence_the_choice(store, small_sweep):
    rows = dict(store.rows)
    flipped = rows["label"].copy()
    test = rows["split"] == "test"
    flipped[test] = 1 - flipped[test]
    r = sweep_once(store, labels=flipped)
    a, b = small_sweep.operating_point, r.operating_point
    assert (a.hook, a.probe_type, a.threshold) == (b.hook, b.probe_type, b.threshold)
    assert r.row(a.hook, a.probe_type)["val_auroc"] == small_sweep.row(a.hook, a.probe_type)["val_auroc"]
    flipped_auc = r.row(a.hook, a.probe_type)["test_auroc"]
    assert flipped_auc == pytest.approx(1 - small_sweep.row(a.hook, a.probe_type)["test_auroc"], abs=1e-5)


def test_operating_point_probe_reproduces_test_metrics(store, small_sweep, tmp_path):
    probe = small_sweep.probe(position="last")
    assert probe.model_fingerprint == store.model_fingerprint and probe.training_data_hash.startswith("sha256:")
    test = store.rows["split"] == "test"
    s = probe.score(store[probe.hook][test])
    auc = roc_auc_score(store.rows["label"][test], s.numpy())
    assert auc == pytest.approx(small_sweep.row(probe.hook, probe.probe_type)["test_auroc"], abs=1e-5)
    ctrl = store.rows["split"] == "control"
    assert probe.predict(store[probe.hook][ctrl]).float().mean() <= 0.01 + 1e-9  # calibrated at 1 % FPR
    from undertow.probes import Probe

    loaded = Probe.load(probe.save(tmp_path / "p"), expected_fingerprint=store.model_fingerprint)
    torch.testing.assert_close(loaded.score(store[probe.hook][test]), s)


def test_tensor_path_equals_store_path_and_chunking_is_invisible(store, small_sweep):
    acts = {h: store[h] for h in store.hooks}
    rows = store.rows
    r = sweep(acts, rows["label"], rows["template_id"], rows["split"], embed_hook="embed", n_boot=200, n_perm=200,
              lexical_auroc=0.6, max_chunk_bytes=1)  # one hook per chunk
    for a, b in zip(r.table, small_sweep.table, strict=True):
        assert (a["hook"], a["probe_type"]) == (b["hook"], b["probe_type"])
        for k in ("cv_auroc_mean", "val_auroc", "test_auroc", "p_value", "selectivity", "random_auroc_max"):
            assert a[k] == pytest.approx(b[k], abs=2e-3), k  # float32 solver tolerance, not a different fit
        assert a["threshold"] == pytest.approx(b["threshold"], rel=1e-3)


def test_diff_means_only_and_no_split_falls_back_to_oof(store):
    acts = {h: store[h] for h in ("resid_post.1", "resid_post.2")}
    with pytest.warns(ProbeWarning, match="no split column"):
        r = sweep(acts, store.rows["label"], store.rows["template_id"], probe_types=("diff_means",), n_folds=3)
    assert r.operating_point.selected_by == "cv_auroc_oof" and r.operating_point.threshold_source == "oof"
    assert math.isnan(r.table[0]["test_auroc"]) and r.table[0]["cv_auroc_oof"] > 0.6


def test_drop_nan_drops_rows_from_every_hook(store):
    acts = {h: store[h].clone() for h in ("resid_post.1", "resid_post.2")}
    acts["resid_post.2"][[5, 17, 900]] = float("nan")
    rows = store.rows
    kw = dict(n_boot=50, n_perm=50, probe_types=("lda",))
    with pytest.raises(ProbeError, match=r"hook 'resid_post.2' has 3 rows with NaN/inf \(rows \[5, 17, 900\]\).*drop_nan=True"):
        sweep(acts, rows["label"], rows["template_id"], rows["split"], **kw)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = sweep(acts, rows["label"], rows["template_id"], rows["split"], drop_nan=True, **kw)
    assert any("3 rows with NaN/inf" in str(x.message) for x in w)
    full = sum(np.isin(rows["split"], ["train", "val", "test"])) + 150
    assert sum(r.n_rows.values()) == full - 3


def test_unknown_option_and_missing_hooks_are_clear_errors(store):
    with pytest.raises(ProbeError, match="unknown sweep option"):
        sweep(store, n_fold=5)
    with pytest.raises(ProbeError, match=r"hooks \['nope'\] are not in the store"):
        sweep(store, embed_hook="nope")
    with pytest.raises(ConfigError, match=r"probe_types\[0\]: 'svm' is not one of diff_means, lda, logistic"):
        sweep(store, probe_types=("svm",))


def test_to_dict_is_json_serialisable(small_sweep):
    import json

    d = json.loads(json.dumps(small_sweep.to_dict(), allow_nan=False))
    assert d["operating_point"]["hook"] == small_sweep.operating_point.hook


def test_all_controls_off_and_dataframe(store):
    r = sweep(store, hooks=("resid_post.2",), n_shuffles=0, n_random_directions=0, n_boot=0, n_perm=0)
    row = r.row("resid_post.2", "logistic")
    assert row["test_auroc"] > 0.85 and math.isnan(row["shuffled_auroc"]) and math.isnan(row["p_value"])
    assert math.isnan(row["test_auroc_lo"]) and math.isnan(row["random_auroc_max"])
    assert r.to_dataframe().shape == (3, len(row))


def test_non_convergence_is_reported(store):
    from undertow.probes import FitConfig

    with pytest.warns(ProbeWarning, match=r"logistic did not converge on hooks \['resid_post.1'\].*max_iter"):
        r = sweep(store, hooks=("resid_post.1",), probe_types=("logistic",), fit=FitConfig(max_iter=2),
                  n_boot=0, n_perm=0)
    assert r.table[0]["converged"] is False
