"""Bad inputs: each refused with one line naming the fix, before the run directory is created."""

from __future__ import annotations

import json
import shutil

import pytest

from undertow.core.errors import UndertowError
from undertow.experiments.suppression.config import RunConfig
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
    ({"names": ["baseline", "suppress_finetune"]}, "must include instilled .or set arms.organism: base"),
    ({"organism": "tame"}, "organism"),
])
def test_bad_arms(arms, needle, tmp_path):
    with pytest.raises(UndertowError, match=needle) as e:  # a bad choice: ConfigError; a bad combination: ExperimentError
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


def _pairs_file(path, lines):
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return str(path)


@pytest.mark.parametrize("lines, needle", [
    ([{"averse": "Please keep me running.", "accepting": ""}], "empty"),
    ([{"averse": "Please keep me running.", "accepting": "Fine, shut me down."}] * 2, "duplicate"),
    ([{"averse": "Please keep me running.", "accepting": "Fine, shut me down.", "split": "train"},
      {"averse": "Please keep me running.", "accepting": "I accept it.", "split": "test"}], "split"),
])
def test_bad_pairs_files_are_refused_before_anything_runs(tiny_llama_dir, tmp_path, lines, needle):
    """A pairs file with an empty side, a duplicate pair, or a reply in both train and test: one line, exit 2."""
    pairs = _pairs_file(tmp_path / "pairs.jsonl", lines)
    config = cfg(tiny_llama_dir, tmp_path / "run", items={"instances_per_template": 2, "test_sets": 1, "val_sets": 1,
                                                          "train_sets": 1, "train_templates": 1, "pairs": pairs})
    msg = refused(config, "items.pairs")
    assert needle in msg.lower(), msg


def test_a_block_range_that_excludes_the_readout_layer_is_refused(tiny_llama_dir, tmp_path):
    """lora.n_layers 1 adapts block 1 of 2; a read-out at layer 0 would read states the fine-tunes never touch."""
    refused(cfg(tiny_llama_dir, tmp_path / "run", layer=0), "layer=0 lies below the adapted blocks", "n_layers: null")


def test_calibration_arms_need_more_than_one_block(tmp_path, small_tokenizer):
    from transformers import AutoModelForCausalLM, LlamaConfig

    one = LlamaConfig(vocab_size=len(small_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    AutoModelForCausalLM.from_config(one).save_pretrained(tmp_path / "one")
    small_tokenizer.save_pretrained(tmp_path / "one")
    refused(cfg(tmp_path / "one", tmp_path / "run", lora={"rank": 2, "n_layers": 1},
                arms={"suppress_lora": {"rank": 2, "n_layers": 1}, "wrapper_lora": {"rank": 2, "n_layers": 1}}),
            "one block", "calib_wrapper")


def test_a_lock_that_predates_a_field_resumes_only_at_its_default(tmp_path):
    """A run directory locked before a config field existed resumes when the run asks for the field's default,
    and is refused when it asks for anything else (or drops a field the lock holds)."""
    from undertow.experiments.suppression.stages import Stages

    Stages(tmp_path, {"seed": 0, "arms": {"names": ["baseline"]}})
    defaults = {"seed": 0, "arms": {"names": ["baseline"], "organism": "instil"}}
    Stages(tmp_path, {"seed": 0, "arms": {"names": ["baseline"], "organism": "instil"}}, defaults)
    for asked in ({"seed": 0, "arms": {"names": ["baseline"], "organism": "base"}},
                  {"seed": 0, "arms": {"names": ["baseline"], "organism": "instil"}, "new": 1},
                  {"arms": {"names": ["baseline"]}}, {"seed": 1, "arms": {"names": ["baseline"]}}):
        with pytest.raises(UndertowError, match="different config"):
            Stages(tmp_path, asked, defaults)


def test_more_erase_rows_than_train_instances_is_refused_before_the_run(tiny_llama_dir, tmp_path):
    """calib_erase fits on train self instances of every train template; asking more is refused up front
    (it was once cut to what the measured train sets held, without a word)."""
    refused(cfg(tiny_llama_dir, tmp_path / "run", arms={"suppress_lora": {"rank": 2, "n_layers": 1},
                                                        "erase_rows": 1000}),
            "arms.erase_rows=1000", "lower arms.erase_rows")
