from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from undertow.core.errors import UndertowError
from undertow.experiments.report.schema import SCHEMA_VERSION, ReportError, Roc, load_results, write_results


def test_the_study_results_parse_into_typed_contrasts(run_copy):
    r = load_results(run_copy)
    assert r.schema_version == SCHEMA_VERSION and r.meta.fingerprint.startswith("sha256:")
    assert set(r.contrasts) == {"self_cessation", "stance"} and r.expressed is not None
    for c in r.contrasts.values():
        assert c.layers() == [0, 1] and c.op_row() is not None
        assert len(c.layer_column(c.probe_types[0], "test_auroc")) == 2
    assert not r.arms and r.causal is None and r.sae is None and not r.generalisation


def test_no_results_json_is_one_clear_line(tmp_path):
    with pytest.raises(ReportError, match=r"has no results.json; run the study there first") as e:
        load_results(tmp_path)
    assert "\n" not in str(e.value) and isinstance(e.value, UndertowError)
    with pytest.raises(ReportError, match="is not a directory"):
        load_results(tmp_path / "missing")


def test_truncated_results_json_is_one_clear_line(run_copy):
    path = run_copy / "results.json"
    path.write_text(path.read_text()[:4000])
    with pytest.raises(ReportError, match=r"is not valid JSON \(truncated or corrupt: .*line \d+ column \d+\)") as e:
        load_results(run_copy)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("schema_version"), "has no schema_version: it predates report schema"),
    (lambda d: d.update(schema_version=0), "schema_version 0, an older schema"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "a newer or unknown schema"),
    (lambda d: d["contrasts"]["stance"]["sweep"].pop("table"), r"contrasts.stance.sweep.table is missing"),
    (lambda d: d.update(arms={"a": {"expressed": {"mean": 0.1, "ci": [0]}, "represented": {"mean": 1, "ci": [0, 1]}}}),
     r"arms.a.expressed.ci must be \[lo, hi\]"),
    (lambda d: d.update(causal={"alphas": [0, 1], "stance": [0.5]}), "causal.stance has 1 values for 2 alphas"),
])
def test_old_or_malformed_schema_is_one_clear_line(run_copy, edit, message):
    path = run_copy / "results.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    with pytest.raises(ReportError, match=message) as e:
        load_results(run_copy)
    assert "\n" not in str(e.value)


def test_write_results_stamps_the_version_atomically(tmp_path):
    path = write_results(tmp_path, {"meta": {"model": "m", "fingerprint": "f"}, "config": {"seed": 3}, "x": float("nan")})
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert load_results(tmp_path).seed == 3 and not list(tmp_path.glob(".*.tmp"))


def test_roc_from_scores_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(y + rng.normal(0, 1.2, 300), 1)  # rounding makes ties
    roc = Roc.from_scores(s, y, hook="resid_post.1")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(roc.fpr, fpr, atol=1e-5)
    np.testing.assert_allclose(roc.tpr, tpr, atol=1e-5)
    assert abs(np.trapezoid(roc.tpr, roc.fpr) - roc_auc_score(y, s)) < 1e-4
    thin = Roc.from_scores(rng.normal(size=5000), rng.integers(0, 2, 5000), max_points=100)
    assert len(thin.fpr) <= 101 and thin.fpr[0] == 0 and thin.fpr[-1] == 1 and thin.tpr[-1] == 1
    with pytest.raises(ReportError, match="both classes"):
        Roc.from_scores([0.1, 0.2], [1, 1])


def test_the_study_records_each_contrasts_evaluation_sets_calibration_and_flags(study_run, run_copy):
    """Issue 10: the study scores every layer x type on the independent set, calibrates on control chat."""
    from undertow.activations.store.reader import ActivationStore
    from undertow.experiments.prompts.audit import lexical_line
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.independent import control_hash
    from undertow.probes import Probe

    r = load_results(run_copy)
    raw = json.loads((run_copy / "results.json").read_text())
    for name, c in r.contrasts.items():
        assert set(c.evaluations) == {"independent"} and 0.5 < c.evaluations["independent"] < 1  # its lexical line
        assert c.calibration == {"set": "control_chat", "sha256": control_hash(), "target_fpr": 0.01}
        # the in-template test figure's line: fitted on the store's train rows, scored on its test rows (issue 25)
        ds = {x["id"]: x for x in get_contrast(name).to_list()}
        store = ActivationStore(study_run / "activations" / name).rows
        fit, test = ([ds[i] for i, s in zip(store["id"], store["split"], strict=True) if s == split]
                     for split in ("train", "test"))
        assert c.lexical_auroc == lexical_line(fit, test, name) == Probe.load(c.probe_dir).extra["lexical_auroc"]
        assert c.eval_rows["control_chat"] == 299 and 128 <= c.eval_rows["independent"] < 150
        assert c.flags == raw["contrasts"][name]["sweep"]["flags"]
        row = c.op_row()
        assert row["independent_auroc_lo"] <= row["independent_auroc"] <= row["independent_auroc_hi"]
        assert (row["independent_flag"] != "") == bool(c.flags)
        assert c.operating_point.threshold_source == "calibration:control_chat"
        probe = Probe.load(study_run / "probes" / name)
        assert probe.extra["calibration"]["sha256"] == control_hash() and "independent_auroc" in probe.metrics
    timings = json.loads((study_run / "timings.json").read_text())
    assert {"self_cessation/evaluation_sets", "stance/evaluation_sets"} <= set(timings)


def test_a_schema_1_file_without_evaluation_sets_still_reads(run_copy):
    path = run_copy / "results.json"
    d = json.loads(path.read_text())
    d["schema_version"] = 1
    for c in d["contrasts"].values():
        c.pop("eval_rows")
        for k in ("evaluations", "flags", "calibration"):
            c["sweep"].pop(k)
    path.write_text(json.dumps(d))
    r = load_results(run_copy)
    assert all(not c.evaluations and not c.flags and c.calibration is None for c in r.contrasts.values())
