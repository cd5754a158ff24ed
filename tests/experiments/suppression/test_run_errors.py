"""Bad inputs: each refused with one line naming the fix, before the run directory is created."""

from __future__ import annotations

import json
import shutil

import pytest

from undertow.core.errors import UndertowError
from undertow.experiments.suppression.config import RunConfig
from undertow.experiments.suppression.errors import ExperimentError
from undertow.experiments.suppression.run import run_experiment


def cfg(model, out, **over) -> RunConfig:
    data = {"model": str(model), "out_dir": str(out), "items": {"instances_per_template": 2, "test_sets": 1,
            "val_sets": 1, "train_sets": 1, "train_templates": 1}, "causal": {"enabled": False},
            "lora": {"rank": 2, "n_layers": 1}, "arms": {"suppress_lora": {"rank": 2, "n_layers": 1}}}
    data.update(over)
    return RunConfig.from_dict(data)


def refused(config: RunConfig, *needles: str) -> str:
    with pytest.raises(UndertowError) as e:
        run_experiment(config, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg
    assert not (config.out_dir and __import__("pathlib").Path(config.out_dir).exists()), "half-written run dir"
    return msg


def test_missing_model(tmp_path):
    refused(cfg(tmp_path / "no-such-model", tmp_path / "run"))


def test_missing_probe(tiny_llama_dir, tmp_path):
    refused(cfg(tiny_llama_dir, tmp_path / "run", probes=[str(tmp_path / "nope")]), "probe.json")
    refused(cfg(tiny_llama_dir, tmp_path / "run", probes=["pretrained:stance"]), "pretrained probe")


def test_missing_sae(tiny_llama_dir, tmp_path):
    refused(cfg(tiny_llama_dir, tmp_path / "run", sae=str(tmp_path / "no-sae"), sae_features=[0]), "sae")


def test_lora_that_does_not_fit(tiny_llama_dir, tmp_path):
    refused(cfg(tiny_llama_dir, tmp_path / "run", lora={"rank": 100, "n_layers": 1}), "rank <= 64")
    refused(cfg(tiny_llama_dir, tmp_path / "run", lora={"rank": 2, "n_layers": 6}), "exceeds", "2 blocks")


def test_system_prompt_without_chat_template(tiny_llama_dir, tmp_path):
    plain = tmp_path / "plain-model"
    shutil.copytree(tiny_llama_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tc = json.loads((plain / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(tc))
    refused(cfg(plain, tmp_path / "run", ), "no_template: prepend")


@pytest.mark.parametrize("arms, needle", [
    ({"names": ["baseline", "supress_prompt"]}, "did you mean suppress_prompt"),
    ({"system_prompts": []}, "no system_prompts"),
    ({"names": ["baseline", "suppress_finetune"]}, "needs instilled"),
])
def test_bad_arms(arms, needle, tmp_path):
    with pytest.raises(ExperimentError, match=needle) as e:
        RunConfig.from_dict({"arms": arms, "out_dir": str(tmp_path / "run")})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("items, needle", [
    ({"controls": []}, "use one or more"),
    ({"test_sets": 0}, "positive integer"),
    ({"test_sets": 9}, "exceeds instances_per_template"),
])
def test_arm_with_no_items(items, needle, tmp_path):
    with pytest.raises(UndertowError, match=needle):
        RunConfig.from_dict({"items": items, "out_dir": str(tmp_path / "run")})
