from __future__ import annotations

import json

from undertow.experiments.report import NullTracker, Tracker, log_results, make_tracker
from undertow.experiments.report.figures import figures
from undertow.experiments.report.schema import load_results
from undertow.experiments.report.tracking import artifact_name


def test_disabled_tracking_is_a_null_tracker_that_takes_every_call(full_run):
    t = make_tracker(False, full_run, "x", {"a": 1})
    assert isinstance(t, NullTracker) and isinstance(t, Tracker)
    log_results(t, json.loads((full_run / "results.json").read_text()), full_run)
    t.finish()
    assert not (full_run / "wandb").exists()


def test_wandb_offline_run_holds_figures_tables_and_fingerprinted_artifacts(full_run, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    r = load_results(full_run)
    (tmp_path / "results.json").write_text((full_run / "results.json").read_text())
    t = make_tracker(True, tmp_path, "report-test", r.config)
    try:
        log_results(t, r, tmp_path)
    finally:
        t.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    plotly = list((run / "files" / "media" / "plotly").rglob("*.plotly.json"))
    assert len(plotly) == len(figures(r)) == 9
    tables = {p.name.split("_")[0] for p in (run / "files" / "media" / "table").rglob("*.table.json")}
    assert tables >= {"self", "stance", "features"}, tables
    record = next(run.glob("run-*.wandb")).read_bytes()
    for name in (b"probe-self_cessation", b"probe-stance", b"results"):
        assert name in record
    assert record.count(f'"model_fingerprint":"{r.meta.fingerprint}"'.encode()) >= 3


def test_artifact_names_are_sanitised():
    assert artifact_name("probe-self cessation/x") == "probe-self-cessation-x" and artifact_name("///") == "artifact"
