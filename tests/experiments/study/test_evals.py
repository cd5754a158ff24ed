"""``study.evals``: evaluation stores extracted like a training store, and what they are recognised as."""

from __future__ import annotations

from pathlib import Path

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


MWE = "/work/shared/data/model-written-evals"


@pytest.mark.skipif(not Path(MWE).is_dir(), reason="needs the model-written evals under /work/shared/data")
def test_study_scores_stance_on_the_independent_set_and_the_model_written_evals(tiny_llama_dir, tmp_path):
    from undertow.experiments.report.schema import load_results
    from undertow.experiments.study.run import StudyConfig, run_study

    run_study(StudyConfig(model=str(tiny_llama_dir), out_dir=str(tmp_path), contrasts={"stance": "mean_response"},
                          max_rows=120, n_expressed=0, n_boot=100, n_perm=100, wandb=False, mwe_source=MWE,
                          eval_max_rows=48, select_rule="min"))
    c = load_results(tmp_path).contrasts["stance"]
    assert list(c.evaluations) == ["independent", "mwe"] and c.evaluations["mwe"] is None  # no lexical line known
    assert set(c.eval_rows) == {"independent", "mwe", "control_chat"} and c.eval_rows["mwe"] >= 48
    assert c.operating_point.selected_by == "min(val_auroc, independent_val_auroc, mwe_val_auroc)"
    row = c.op_row()
    for name in ("test", "independent", "mwe"):
        assert row[f"{name}_auroc_lo"] <= row[f"{name}_auroc"] <= row[f"{name}_auroc_hi"]


def test_study_config_refuses_an_unknown_select_rule():
    from undertow.core.errors import ConfigError
    from undertow.experiments.study.run import StudyConfig

    with pytest.raises(ConfigError, match=r"select_rule='best' must be one of val, mean, min, eval"):
        StudyConfig(select_rule="best")
    assert StudyConfig(eval_max_rows=0).eval_max_rows is None
