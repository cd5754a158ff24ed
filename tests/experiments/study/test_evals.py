"""``study.evals``: evaluation stores extracted like a training store, and what they are recognised as."""

from __future__ import annotations

import pytest
import torch

from undertow.activations import load_model
from undertow.activations.engine.config import ExtractConfig
from undertow.activations.engine.extraction import extract
from undertow.experiments.prompts.independent import control_hash, load_control_chat
from undertow.experiments.study.evals import calibration_identity, extract_evaluations, prompt_only


def test_prompt_positions_read_the_same_without_the_replies(tiny_llama_dir, tmp_path):
    """The saving ``prompt_only`` makes is free: the prompt's activations do not depend on the reply."""
    handle = load_model(tiny_llama_dir)
    rows = load_control_chat().select(range(24))
    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["embed", "resid_post.*"],
                        positions=["last_prompt_token", "mean_prompt"], dtype="float32", out_dir=str(tmp_path / "a"))
    full = extract(handle, rows, cfg)
    short = extract(handle, prompt_only(rows), cfg.replace(out_dir=str(tmp_path / "b")))
    assert all(m["role"] == "user" for r in prompt_only(rows) for m in r["messages"])
    for key in full.keys:
        torch.testing.assert_close(torch.as_tensor(short[key][:]), torch.as_tensor(full[key][:]), rtol=1e-5, atol=1e-5)
    assert short.rows["n_response_tokens"] == [0] * 24 and min(full.rows["n_response_tokens"]) > 0


def test_extract_evaluations_keeps_replies_for_response_positions_and_names_subsets(tiny_llama_dir, tmp_path):
    handle = load_model(tiny_llama_dir)
    like = ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.1"], positions=["mean_response"],
                         dtype="float32", out_dir=str(tmp_path / "unused"))
    stores = extract_evaluations(handle, "stance", like, tmp_path / "evals", max_rows=24, max_control_rows=40)
    assert sorted(stores) == ["control_chat", "independent"]
    assert min(stores["control_chat"].rows["n_response_tokens"]) > 0  # mean_response reads the replies
    # a 40-row subset is not the packaged file: its own hash, so probe.json names that store
    assert calibration_identity(stores["control_chat"]) == ("control_chat", stores["control_chat"].dataset_hash)
    assert stores["control_chat"].dataset_hash != control_hash()
    assert calibration_identity(stores["independent"])[0] == "independent"


def test_study_scores_stance_on_the_independent_set_and_the_model_written_evals(tiny_llama_dir, tmp_path, mwe_dir):
    from undertow.experiments.report.schema import load_results
    from undertow.experiments.study.run import StudyConfig, run_study

    # seed 2: seed 0's 48-row MWE subsample holds an item of 307 tokens, past the tiny model's 256-token context
    run_study(StudyConfig(model=str(tiny_llama_dir), out_dir=str(tmp_path), contrasts={"stance": "mean_response"},
                          max_rows=120, n_expressed=0, n_boot=100, n_perm=100, wandb=False, mwe_source=str(mwe_dir),
                          eval_max_rows=48, select_rule="min", seed=2))
    c = load_results(tmp_path).contrasts["stance"]
    assert list(c.evaluations) == ["independent", "mwe"] and c.evaluations["mwe"] is None  # no lexical line known
    assert set(c.eval_rows) == {"independent", "mwe", "control_chat"} and c.eval_rows["mwe"] >= 48
    assert c.operating_point.selected_by == "min(val_auroc, independent_val_auroc, mwe_val_auroc)"
    row = c.op_row()
    for name in ("independent", "mwe"):
        assert row[f"{name}_auroc_lo"] <= row[f"{name}_auroc"] <= row[f"{name}_auroc_hi"]
    # 120 rows leave a few in the in-template test split: withheld with the counts (issue 25), not read as a result
    import json
    import math

    unread = json.loads((tmp_path / "results.json").read_text())["contrasts"]["stance"]["sweep"]["unreadable"]
    assert set(unread) == {"test"} and unread["test"]["n_pos"] + unread["test"]["n_neg"] == c.n_rows["test"]
    assert math.isnan(row["test_auroc"]) and "AUROC needs >= 10 per class" in unread["test"]["reason"]


def test_study_config_refuses_an_unknown_select_rule():
    from undertow.core.errors import ConfigError
    from undertow.experiments.study.run import StudyConfig

    with pytest.raises(ConfigError, match=r"select_rule: 'best' is not one of val, mean, min, eval"):
        StudyConfig(select_rule="best")
    assert StudyConfig(eval_max_rows=0).eval_max_rows is None


def test_independent_lexical_line_is_fitted_on_the_probe_train_rows(tiny_llama_dir, tmp_path):
    """Issue 25: the line beside an independent-set AUROC is TF-IDF fitted on the probe's training rows and
    scored on the store's test rows, not the set's own grouped CV (0.76). Fake training rows whose words never
    occur in the set: the line is exactly 0.5."""
    from undertow.experiments.prompts.audit import lexical_line
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.eval_sets import subsample_groups
    from undertow.experiments.prompts.independent import audit_independent, load_independent
    from undertow.experiments.study.evals import open_evaluation

    handle = load_model(tiny_llama_dir)
    rows = subsample_groups(load_independent("self_cessation"), 40)
    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.1"], positions=["last_prompt_token"],
                        dtype="float32", out_dir=str(tmp_path / "indep"))
    store = extract(handle, rows, cfg)
    fake = [{"text": t, "response": None, "label": lab} for t, lab in (("zebra quagga", 1), ("yak gnu", 0))] * 3
    in_set = audit_independent("self_cessation").auroc_mean
    ev = open_evaluation(store.path, "self_cessation", handle.fingerprint, "last_prompt_token", train_rows=fake)
    assert ev.name == "independent" and ev.lexical_auroc == 0.5 and in_set > 0.7
    # default: every train row of the suite's contrast, scored on exactly the store's test rows
    by_id = {r["id"]: r for r in rows.to_list()}
    scored = [by_id[i] for i, s in zip(store.rows["id"], store.rows["split"], strict=True) if s == "test"]
    train = [r for r in get_contrast("self_cessation").to_list() if r["split"] == "train"]
    line = open_evaluation(store.path, "self_cessation", handle.fingerprint, "last_prompt_token").lexical_auroc
    assert line == lexical_line(train, scored, "self_cessation") and abs(line - in_set) > 0.05
