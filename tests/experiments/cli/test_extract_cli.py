"""`undertow extract`: dataset names and paths, config overrides, summary line, clean errors."""

from __future__ import annotations

import argparse

import pytest
import yaml

from undertow.activations import ActivationStore
from undertow.activations.extract_errors import ConfigError, DatasetError
from undertow.experiments.cli import extract as extract_cli
from undertow.experiments.cli import main as cli_main


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


def test_dataset_paths(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        extract_cli.resolve_dataset(str(tmp_path / "missing.jsonl"), 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: invalid JSON"):
        extract_cli.resolve_dataset(str(bad), 0)
    with pytest.raises(DatasetError, match="no dataset"):
        extract_cli.resolve_dataset(None, 0)


def test_bool_fields_are_flags(tmp_path, tiny_llama_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "share_prompts": True}))
    parser = argparse.ArgumentParser()
    extract_cli.add_arguments(parser)
    assert extract_cli.load_config(parser.parse_args([str(cfg), "--no-share-prompts"])).share_prompts is False
    assert extract_cli.load_config(parser.parse_args([str(cfg)])).share_prompts is True
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "share_prompts": "no"}))
    with pytest.raises(ConfigError, match="share_prompts must be true or false"):
        extract_cli.load_config(parser.parse_args([str(cfg)]))
