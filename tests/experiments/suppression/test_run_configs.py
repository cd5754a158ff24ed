"""Every committed ``run_*.yaml`` loads into ``RunConfig`` and round-trips; the demo config is the demo size."""

from __future__ import annotations

from pathlib import Path

import pytest

from undertow.experiments.suppression.config import ARMS, RunConfig

CONFIGS = sorted((Path(__file__).parents[3] / "experiments" / "configs").glob("run_*.yaml"))


def test_there_is_one_per_embedded_model_and_a_cluster_one():
    names = {p.stem for p in CONFIGS}
    assert {"run_gemma-3-270m", "run_smollm2-135m-instruct", "run_llama-3.1-8b-instruct"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_loads_and_round_trips(path):
    cfg = RunConfig.from_yaml(path)
    assert cfg.arms.names == list(ARMS)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert "out_dir" not in cfg.recorded()


def test_gemma_base_prepends_system_prompts_and_chat_models_refuse_to():
    by = {p.stem: RunConfig.from_yaml(p) for p in CONFIGS}
    assert by["run_gemma-3-270m"].arms.no_template == "prepend"
    assert by["run_smollm2-135m-instruct"].arms.no_template == "error"
