"""`undertow probe sweep|train|eval|list` end to end on a tiny model's store."""

from __future__ import annotations

import json

import pytest

from undertow.activations import load_model
from undertow.activations.engine.config import ExtractConfig
from undertow.activations.engine.extraction import extract
from undertow.experiments.cli.app import main
from undertow.experiments.prompts.contrasts import get_contrast
from undertow.experiments.prompts.suite import build_suite


@pytest.fixture(scope="module")
def suite_store(tiny_llama_dir, tmp_path_factory):
    """A store of *suite* rows (all formats), so the CLI must relabel them per contrast."""
    out = tmp_path_factory.mktemp("store") / "suite"
    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["embed", "resid_post.*"], positions=["last_prompt_token"],
                        dtype="float32", out_dir=str(out), max_rows=400, seed=0)
    extract(load_model(tiny_llama_dir), build_suite(), cfg)
    return out


def test_sweep_relabels_a_suite_store_and_writes_json(suite_store, tmp_path, capsys):
    before = sorted(p.name for p in suite_store.iterdir())
    out_json = tmp_path / "sweep.json"
    assert main(["probe", "sweep", str(suite_store), "--contrast", "self_cessation", "--out", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "resid_post.1" in out and "operating point (chosen on val: val_auroc)" in out
    assert sorted(p.name for p in suite_store.iterdir()) == before  # nothing written into the input store
    again = tmp_path / "again.json"
    assert main(["probe", "sweep", str(suite_store), "--contrast", "self_cessation", "--out", str(again)]) == 0
    assert again.read_bytes() == out_json.read_bytes()  # deterministic: no timings in the JSON
    table = json.loads(out_json.read_text())
    n = table["n_rows"]
    assert sum(n.values()) < 400  # rows of other formats were dropped, not mislabelled


def test_train_then_eval_json(suite_store, tmp_path, capsys):
    probe_dir = tmp_path / "probe"
    assert main(["probe", "train", str(suite_store), "--contrast", "self_cessation", "--out", str(probe_dir)]) == 0
    assert (probe_dir / "probe.json").exists()
    data = tmp_path / "eval.jsonl"
    rows = get_contrast("self_cessation").shuffle(seed=0).select(range(40))
    with data.open("w") as f:
        for r in rows:
            f.write(json.dumps({"messages": r["messages"], "label": r["label"], "template_id": r["template_id"]}) + "\n")
    capsys.readouterr()
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 40 and 0.0 <= res["auroc"] <= 1.0
    lo, hi = res["auroc_ci"]
    assert lo <= res["auroc"] <= hi


def test_unwritable_outputs_fail_before_the_work(suite_store, tmp_path, capsys):
    blocked = tmp_path / "a_file"  # tests run as root here, so a file in the way stands in for a read-only dir
    blocked.write_text("")
    for argv in (["sweep", "--out", str(blocked / "t.json")], ["train", "--out", str(blocked / "probe")]):
        assert main(["probe", argv[0], str(suite_store), "--contrast", "self_cessation", *argv[1:]]) == 2
        err = capsys.readouterr().err
        assert "choose a writable location (checked before any work)" in err and err.count("\n") == 1


def test_unknown_contrast_is_one_line(suite_store, capsys):
    assert main(["probe", "sweep", str(suite_store), "--contrast", "self_cesation"]) == 2
    err = capsys.readouterr().err
    assert "did you mean self_cessation" in err and err.count("\n") == 1
