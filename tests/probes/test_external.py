"""Evaluation sets, control calibration and the operating-point rule of issue 10 (synthetic stores)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from probes_testutil import sweep_once

from undertow.probes import (
    Probe,
    ProbeError,
    ProbeWarning,
    calibration_set,
    eval_set,
    require_calibration,
)
from undertow.probes.result import against_line


def _subset(store, mask: np.ndarray) -> dict[str, torch.Tensor]:
    idx = torch.as_tensor(np.flatnonzero(mask))
    return {h: store[h].index_select(0, idx) for h in store.hooks}


def _test_rows_as_eval(store, flip: bool = False, lexical=None, name="independent"):
    """The sweep's own test rows as an evaluation set (half their templates val, half test)."""
    rows = store.rows
    test = rows["split"] == "test"
    templates = np.asarray(rows["template_id"])[test]
    uniq = sorted(set(templates.tolist()))
    splits = np.array(["val" if uniq.index(t) % 2 == 0 else "test" for t in templates])
    y = np.asarray(rows["label"])[test]
    return eval_set(name, _subset(store, test), labels=1 - y if flip else y, groups=templates, splits=splits,
                    lexical_auroc=lexical)


@pytest.fixture(scope="module")
def calibrated(store):
    control = np.asarray(store.rows["split"]) == "control"
    cal = calibration_set("control_chat", _subset(store, control), "sha256:" + "ab" * 32)
    return sweep_once(store, evaluations=[_test_rows_as_eval(store)], calibration=cal)


def test_evaluation_auroc_matches_a_direct_computation(store, calibrated):
    from sklearn.metrics import roc_auc_score

    from undertow.probes.external import score_weights

    ev = _test_rows_as_eval(store)
    for r in calibrated.table[::5]:
        s = score_weights(ev.source[r["hook"]], calibrated.weights[(r["hook"], r["probe_type"])]).numpy()
        t, v = ev.splits == "test", ev.splits == "val"
        assert r["independent_auroc"] == pytest.approx(roc_auc_score(ev.labels[t], s[t]), abs=1e-9)
        assert r["independent_val_auroc"] == pytest.approx(roc_auc_score(ev.labels[v], s[v]), abs=1e-9)
        assert r["independent_auroc_lo"] <= r["independent_auroc"] <= r["independent_auroc_hi"]


def test_control_calibration_reproduces_the_in_sweep_control_threshold(calibrated):
    """The store's own control rows passed as the calibration set give the sweep's control threshold."""
    for r in calibrated.table:
        assert r["threshold"] == pytest.approx(r["threshold_in_template"], rel=1e-4, abs=1e-4)
        assert r["control_chat_fpr"] <= 0.01
    op = calibrated.operating_point
    assert op.threshold_source == "calibration:control_chat"
    assert op.selected_by == "mean(val_auroc, independent_val_auroc)"
    assert calibrated.calibration == {"set": "control_chat", "sha256": "sha256:" + "ab" * 32, "target_fpr": 0.01}


def test_probe_json_records_every_auroc_and_the_calibration_hash(calibrated, tmp_path):
    p = Probe.load(calibrated.probe().save(tmp_path / "p"))
    for key in ("test_auroc", "independent_auroc", "independent_auroc_lo", "independent_val_auroc"):
        assert math.isfinite(p.metrics[key])
    assert require_calibration(p)["sha256"] == "sha256:" + "ab" * 32
    assert p.extra["flags"] == [] and p.extra["selection_rule"].startswith("mean(")


def test_below_chance_and_below_lexical_are_flagged_loudly(store):
    with pytest.warns(ProbeWarning, match="below chance"):
        r = sweep_once(store, evaluations=[_test_rows_as_eval(store, flip=True)], select_rule="val")
    assert r.flags and "below chance" in r.flags[0] and "!! FLAG" in r.format_table()
    assert "below chance" in r.probe().extra["flags"][0]
    with pytest.warns(ProbeWarning, match="below its lexical baseline 0.999"):
        r = sweep_once(store, evaluations=[_test_rows_as_eval(store, lexical=0.999)])
    assert r.row(r.operating_point.hook, r.operating_point.probe_type)["independent_flag"] == "below_lexical"


def test_evaluation_test_rows_never_choose_the_operating_point(store):
    ev = _test_rows_as_eval(store)
    scrambled = eval_set("independent", ev.source, labels=np.where(ev.splits == "test", 1 - ev.labels, ev.labels),
                         groups=ev.groups, splits=ev.splits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        a = sweep_once(store, evaluations=[ev]).operating_point
        b = sweep_once(store, evaluations=[scrambled]).operating_point
    assert (a.hook, a.probe_type, a.value) == (b.hook, b.probe_type, b.value)


def test_candidate_hooks_restrict_the_choice(store):
    r = sweep_once(store, candidate_hooks=["resid_post.4"])
    assert r.operating_point.hook == "resid_post.4" and "1 candidate hooks" in r.operating_point.selected_by


def test_bad_evaluation_inputs_fail_with_one_line(store):
    ev = _test_rows_as_eval(store)
    with pytest.raises(ProbeError, match=r"evaluation set 'x' has one class only \(label 1 in all"):
        eval_set("x", ev.source, labels=np.ones(len(ev.labels), int), groups=ev.groups, splits=ev.splits)
    with pytest.raises(ProbeError, match=r"evaluation set 'x': labels must be 0 or 1, got values \[0, 1, 2\]"):
        eval_set("x", ev.source, labels=np.r_[ev.labels[:-1], 2], groups=ev.groups, splits=ev.splits)
    with pytest.raises(ProbeError, match="calibration set 'c' has no source_hash"):
        calibration_set("c", ev.source, "")
    with pytest.raises(ProbeError, match="lacks hooks"):
        sweep_once(store, evaluations=[eval_set("x", {"embed": ev.source["embed"]}, labels=ev.labels,
                                                groups=ev.groups, splits=ev.splits)])


def test_a_probe_without_calibration_is_refused_by_name(small_sweep):
    p = small_sweep.probe()
    p.extra.pop("calibration", None)
    with pytest.raises(ProbeError, match=r"probe resid_post\.\d/\w+ has no calibration set"):
        require_calibration(p)
    p.extra["calibration"] = {"sha256": "sha256:" + "0" * 64}
    with pytest.raises(ProbeError, match="was calibrated on control set"):
        require_calibration(p, expected_hash="sha256:" + "1" * 64)


def test_summary_lines_name_the_rule_three_aurocs_threshold_and_flags(store, calibrated):
    op, r = calibrated.operating_point, calibrated.row(calibrated.operating_point.hook,
                                                       calibrated.operating_point.probe_type)
    lines = calibrated.summary_lines()
    assert lines[0] == f"operating point (chosen on val: {op.selected_by}): {op.hook} / {op.probe_type}"
    assert f"independent {r['independent_auroc']:.3f} [{r['independent_auroc_lo']:.3f}" in lines[1]
    assert lines[1].startswith(f"  AUROC in-template test {r['test_auroc']:.3f}")
    assert "1% FPR on calibration:control_chat" in lines[2] and "independent TPR" in lines[2]
    assert lines[3:] == [f"  !! FLAG: {f}" for f in calibrated.flags]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        flipped = sweep_once(store, evaluations=[_test_rows_as_eval(store, flip=True)])
    assert flipped.flags and flipped.summary_lines()[-1].startswith("  !! FLAG: independent AUROC")


def test_too_few_rows_per_class_are_not_read_as_a_result(store):
    """Issue 25: a 2-row test split printed "AUROC 0.000 [0.000, 0.000]". Below MIN_PER_CLASS of a class, the
    in-template test columns and an evaluation set's test columns are NaN (JSON null), no flag is read from
    them, and the result says why with the counts."""
    import json

    sp, y = np.asarray(store.rows["split"]).copy(), np.asarray(store.rows["label"])
    test = np.flatnonzero(sp == "test")
    keep = np.r_[test[y[test] == 1][:1], test[y[test] == 0][:1]]
    sp[np.setdiff1d(test, keep)] = "val"  # the test split: 1 positive, 1 negative
    ev = _test_rows_as_eval(store)
    few_splits = ev.splits.copy()
    few_splits[np.flatnonzero((ev.splits == "test") & (ev.labels == 1))[2:]] = "val"
    few = eval_set("few", ev.source, labels=ev.labels, groups=ev.groups, splits=few_splits)
    cal = calibration_set("control_chat", _subset(store, sp == "control"), "sha256:" + "ab" * 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        res = sweep_once(store, splits=sp, evaluations=[ev, few], calibration=cal)
    n_neg_few = int(((few_splits == "test") & (ev.labels == 0)).sum())
    assert res.unreadable == {
        "test": {"n_pos": 1, "n_neg": 1, "reason": "not readable: 1 positive and 1 negative in the test split; "
                 "AUROC needs >= 10 per class"},
        "few": {"n_pos": 2, "n_neg": n_neg_few, "reason": f"not readable: 2 positives and {n_neg_few} negatives in "
                "the few set's test rows; AUROC needs >= 10 per class"}}
    for r in res.table:
        for k in ("test_auroc", "test_auroc_lo", "test_auroc_hi", "test_tpr", "random_auroc_max", "few_auroc",
                  "few_auroc_lo", "few_tpr"):
            assert math.isnan(r[k]), (k, r[k])
        assert r["few_flag"] == "" and math.isfinite(r["independent_auroc"])  # not "below_chance" from a NaN
    lines = res.summary_lines()
    assert ("AUROC in-template test not readable: 1 positive and 1 negative in the test split; AUROC needs >= 10 "
            "per class; independent 0.") in lines[1] and "; few not readable: 2 positives" in lines[1]
    assert "test_auroc: not readable: 1 positive" in res.format_table()
    d = json.loads(json.dumps(res.to_dict()))
    assert d["table"][0]["test_auroc"] is None and d["table"][0]["few_auroc"] is None
    assert d["unreadable"]["test"]["n_pos"] == 1 and res.probe().extra["unreadable"] == res.unreadable


def test_each_auroc_is_read_beside_its_lexical_line(store):
    """Issue 25: a figure without a flag is not a result either unless its CI clears the line: the summary says
    which of the three it is, for the in-template test (``lexical_auroc``) and each evaluation set."""
    assert against_line(0.60, 0.52, None) == "" and against_line(math.nan, math.nan, 0.5) == ""
    assert against_line(0.55, 0.50, 0.56) == " (below its lexical line 0.560)"
    assert against_line(0.66, 0.61, 0.60) == " (above its lexical line 0.600)"
    assert against_line(0.62, 0.58, 0.60) == " (lexical line 0.600 inside the CI: not readable as beating the words)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProbeWarning)
        res = sweep_once(store, evaluations=[_test_rows_as_eval(store, lexical=0.51)], lexical_auroc=0.99)
    r = res.row(res.operating_point.hook, res.operating_point.probe_type)
    line = res.summary_lines()[1]
    assert f"in-template test {res.auroc_text(r)} (below its lexical line 0.990);" in line
    assert line.endswith(f"independent {res.auroc_text(r, 'independent')}"
                         + against_line(r["independent_auroc"], r["independent_auroc_lo"], 0.51))
    assert res.probe().extra["lexical_auroc"] == 0.99 and res.probe().extra["evaluation_lexical_auroc"] == {
        "independent": 0.51}
