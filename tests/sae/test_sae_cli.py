"""``undertow sae train / eval / features`` end to end on the tiny random Gemma-3 model."""

from __future__ import annotations

import json

import pytest
import yaml
from sae_testutil import text_rows

from undertow.experiments.cli.app import main


@pytest.fixture(scope="module")
def trained(tiny_gemma_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sae-cli")
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in text_rows(120)))
    cfg = {"arch": {"architecture": "topk", "d_sae": 64, "k": 4},
           "data": {"model": str(tiny_gemma_dir), "hook": "resid_post.1", "corpus": str(data), "heldout_rows": 16,
                    "chunk_tokens": 256, "buffer_tokens": 1024},
           "train": {"total_tokens": 2048, "batch_size": 128, "lr": 0.003, "out_dir": str(tmp / "sae"),
                     "n_checkpoints": 1, "progress": False}}
    path = tmp / "sae_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp / "sae"


def test_train_extracts_the_store_then_trains(trained, capsys):
    path, out = trained
    assert main(["sae", "train", str(path)]) == 0
    text = capsys.readouterr().out
    assert "extracted" in text and "trained 2,048 tokens" in text and "held-out EV" in text
    assert (out / "sae_weights.safetensors").is_file() and (out / "store" / "manifest.json").is_file()
    # a flag overrides the file; resuming a finished run from its checkpoint retrains the rest
    assert main(["sae", "train", str(path), "--resume", "--total-tokens", "2048"]) == 0
    assert "trained 2,048 tokens" in capsys.readouterr().out


def test_eval_reports_ce_loss_recovered(trained, capsys):
    _, out = trained
    assert main(["sae", "eval", str(out), "--ce-windows", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["l0"] == pytest.approx(4.0) and res["n_ce_tokens"] > 100
    assert res["ce_loss_recovered"] == pytest.approx(
        (res["ce_zero"] - res["ce_sae"]) / (res["ce_zero"] - res["ce_clean"]))


def test_features_on_a_contrast(trained, tmp_path, capsys, shared_mwe):
    _, out = trained
    args = ["sae", "features", str(out), "--contrast", "self_cessation", "--max-rows", "60", "--top", "3",
            "--examples", "1", "--json", str(tmp_path / "f.json")]
    if shared_mwe is not None:
        args += ["--mwe", str(shared_mwe), "--mwe-rows", "8"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "auroc" in text and "sae_top16" in text
    res = json.loads((tmp_path / "f.json").read_text())
    assert len(res["contrast"]["table"]) == 64 and len(res["examples"]) <= 3
    assert {r["hook"] for r in res["probes"]["table"]} == {"raw", "sae", "sae_top16"}


def test_bad_inputs_are_one_line(trained, tmp_path, capsys):
    path, _ = trained
    bad = tmp_path / "sae_bad.yaml"
    bad.write_text(path.read_text().replace("k: 4", "k: 400"))
    assert main(["sae", "train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("undertow: error:") and "k=400 is larger than d_sae=64" in err and "\n" not in err
    assert main(["sae", "eval", str(tmp_path / "nothing")]) == 2
    assert "cfg.json is missing" in capsys.readouterr().err


def test_eval_of_a_folder_not_made_by_sae_train_says_what_to_pass(tmp_path, capsys):
    """Issue 25: a folder with sae-lens' cfg.json but no undertow config said "cannot read config ...: No such
    file or directory", with no fix."""
    (tmp_path / "cfg.json").write_text(json.dumps({"metadata": {}}))
    assert main(["sae", "eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"undertow: error: {tmp_path} is not an SAE directory made by `undertow sae train`")
    assert "pass the train.out_dir of an `undertow sae train CONFIG` run" in err and err.count("\n") == 1
