"""`undertow extract`: dataset names and paths, config overrides, summary line, clean errors."""

from __future__ import annotations

import pytest
import yaml

from undertow.activations import ActivationStore
from undertow.activations.engine.config import ExtractConfig
from undertow.activations.errors import DatasetError
from undertow.core.errors import ConfigError
from undertow.experiments.cli import main as cli_main
from undertow.experiments.cli.common import config_parser
from undertow.experiments.prompts.resolve import resolve_dataset


def test_contrast_name_runs_end_to_end(tmp_path, tiny_llama_dir, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "hooks": ["resid_post.1"],
                                   "positions": ["last_prompt_token", "mean_response"], "dataset": "stance",
                                   "max_rows": 12, "shard_size": 5, "out_dir": str(tmp_path / "s")}))
    assert cli_main(["extract", str(cfg), "--no-progress", "--dtype", "float16", "--hooks", "resid_post.0,resid_post.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("extracted 12 rows") and "tok/s" in out and str(tmp_path / "s") in out
    store = ActivationStore(tmp_path / "s")
    assert store.manifest["dtype"] == "float16" and store.manifest["hooks"] == ["resid_post.0", "resid_post.1"]
    assert set(store.rows["split"]) <= {"train", "val", "test", "control"} and len(store) == 12


def test_unknown_dataset_is_a_clean_error(tmp_path, tiny_llama_dir, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "dataset": "stanse", "out_dir": str(tmp_path / "s")}))
    assert cli_main(["extract", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("undertow: error: unknown contrast 'stanse'") and "stance" in err


def test_a_missing_model_file_says_no_such_file(tmp_path, capsys):
    """Issue 25: `model: /no/such.gguf` said "unknown model" and listed the registry."""
    cfg = tmp_path / "c.yaml"
    missing = tmp_path / "no" / "such.gguf"
    cfg.write_text(yaml.safe_dump({"model": str(missing), "dataset": "suite", "out_dir": str(tmp_path / "s")}))
    assert cli_main(["extract", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"undertow: error: no such file: {missing}; check the path") and err.count("\n") == 1, err
    assert "unknown model" not in err


def test_dataset_paths(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset(str(tmp_path / "missing.jsonl"), 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: invalid JSON"):
        resolve_dataset(str(bad), 0)
    with pytest.raises(DatasetError, match="no dataset"):
        resolve_dataset(None, 0)


def _parse(argv):
    """What `undertow extract` does with argv: defaults from the file, explicit flags on top."""
    ns = config_parser("undertow extract", "", ExtractConfig).parse_args(argv)
    loaded = ExtractConfig.from_yaml(ns.config_file)
    return config_parser("undertow extract", "", ExtractConfig, loaded).parse_args(argv).config


def test_bool_fields_are_flags(tmp_path, tiny_llama_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "share_prompts": True, "seed": 3}))
    assert _parse([str(cfg), "--noshare-prompts"]).share_prompts is False
    assert _parse([str(cfg)]).share_prompts is True
    assert _parse([str(cfg)]).seed == 3  # the file's value is the default...
    assert _parse([str(cfg), "--seed", "0"]).seed == 0  # ...and an explicit flag wins, even one equal to the class default
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "share_prompts": "no"}))
    with pytest.raises(ConfigError, match=r"c.yaml:2: share_prompts: expected true or false"):
        ExtractConfig.from_yaml(cfg)


def test_wrong_typed_fields_fail_before_any_model_loads(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    for body, message in (("hooks: 5\n", "hooks: expected a list"), ("seed: abc\n", "seed: expected an integer"),
                          ("positions: 7\n", "positions: expected a list"), ("batch_size: [1\n", "c.yaml:3: expected")):
        cfg.write_text("model: no-such-model-anywhere\n" + body)
        assert cli_main(["extract", str(cfg), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("undertow: error: ") and message in err and err.count("\n") == 1, err


def test_help_lists_generated_flags(capsys):
    with pytest.raises(SystemExit):
        cli_main(["extract", "--help"])
    out = capsys.readouterr().out
    for flag in ("--hooks", "--max-rows", "--share-prompts", "--resume", "--token-budget"):
        assert flag in out
    assert "Rows per shard file" in out  # help text comes from the field docstring
