"""`undertow probe evals` + `probe sweep|train --evals/--eval/--calibration` + `probe eval`'s calibration check
(issue 10), end to end on a tiny model's stores; and the bad inputs, one line each."""

from __future__ import annotations

import json

import pytest

from undertow.activations import load_model
from undertow.activations.engine.config import ExtractConfig
from undertow.activations.engine.extraction import extract
from undertow.activations.store.reader import ActivationStore
from undertow.experiments.cli.app import main
from undertow.experiments.prompts.contrasts import get_contrast
from undertow.experiments.prompts.independent import control_hash
from undertow.probes import Probe


def _extract(model_dir, rows, out, position, max_rows=None):
    cfg = ExtractConfig(model=str(model_dir), hooks=["embed", "resid_post.*"], positions=[position], dtype="float32",
                        out_dir=str(out), max_rows=max_rows, seed=0)
    return extract(load_model(model_dir), rows, cfg)


@pytest.fixture(scope="module")
def sc_store(tiny_llama_dir, tmp_path_factory):
    return _extract(tiny_llama_dir, get_contrast("self_cessation"), tmp_path_factory.mktemp("sc") / "store",
                    "last_prompt_token", max_rows=240).path


@pytest.fixture(scope="module")
def sc_evals(sc_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("evals") / "self_cessation"
    assert main(["probe", "evals", str(sc_store), "--contrast", "self_cessation", "--out", str(out),
                 "--max-rows", "96", "--no-progress"]) == 0
    return out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("undertow: error: ") and err.count("\n") == 1, err
    return err


def test_evals_extracts_each_set_like_the_store(sc_store, sc_evals, capsys):
    train = ActivationStore(sc_store)
    names = sorted(p.name for p in sc_evals.iterdir())
    assert names == ["control_chat", "independent"]  # no MWE for self_cessation
    for n in names:
        s = ActivationStore(sc_evals / n)
        assert s.model_fingerprint == train.model_fingerprint and s.positions == train.positions
        assert s.manifest["hooks"] == train.manifest["hooks"]
    indep = ActivationStore(sc_evals / "independent")
    assert 96 <= len(indep) < 110 and {"val", "test"} == set(indep.rows["split"])  # whole scenarios, both halves
    assert len(ActivationStore(sc_evals / "control_chat")) == 299


def test_sweep_reports_the_external_aurocs_calibrated_threshold_and_flags(sc_store, sc_evals, tmp_path, capsys):
    out_json = tmp_path / "t.json"
    capsys.readouterr()
    assert main(["probe", "sweep", str(sc_store), "--contrast", "self_cessation", "--evals", str(sc_evals),
                 "--n-boot", "200", "--n-perm", "200", "--out", str(out_json)]) == 0
    out = capsys.readouterr().out
    t = json.loads(out_json.read_text())
    assert t["calibration"] == {"set": "control_chat", "sha256": control_hash(), "target_fpr": 0.01}
    assert set(t["evaluations"]) == {"independent"} and 0.5 < t["evaluations"]["independent"] < 1  # lexical line
    for r in t["table"]:
        assert r["independent_auroc_lo"] <= r["independent_auroc"] <= r["independent_auroc_hi"]
        assert r["independent_flag"] in ("", "below_chance", "below_lexical")
        assert r["control_chat_fpr"] <= 0.0101  # every threshold at 1% FPR on ordinary chat
    op = t["operating_point"]
    assert op["threshold_source"] == "calibration:control_chat" and "independent_val_auroc" in op["selected_by"]
    assert "AUROC in-template test" in out and "; independent 0." in out and "on calibration:control_chat" in out
    assert out.count("!! FLAG") == 2 * len(t["flags"])  # in the table's footer and in the summary, loudly


def test_train_records_calibration_and_eval_checks_it(sc_store, sc_evals, tmp_path, capsys):
    probe_dir = tmp_path / "probe"
    assert main(["probe", "train", str(sc_store), "--contrast", "self_cessation", "--evals", str(sc_evals),
                 "--n-boot", "100", "--n-perm", "100", "--out", str(probe_dir)]) == 0
    assert "; independent " in capsys.readouterr().out
    meta = json.loads((probe_dir / "probe.json").read_text())
    assert meta["extra"]["calibration"]["sha256"] == control_hash()
    assert {"test_auroc", "independent_auroc", "independent_auroc_lo"} <= set(meta["metrics"])
    data = tmp_path / "eval.jsonl"
    rows = get_contrast("self_cessation").shuffle(seed=0).select(range(24))
    data.write_text("".join(json.dumps({"messages": r["messages"], "label": r["label"]}) + "\n" for r in rows))
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["threshold_source"] == "threshold set at 1% FPR on control_chat"
    # --calibration with the store it was calibrated on: verified, used, and it gives the recorded threshold
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--json", "--calibration",
                 str(sc_evals / "control_chat")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["threshold"] == pytest.approx(meta["threshold"], rel=1e-6)
    assert res["threshold_source"].startswith("threshold set at 1% FPR on 299 negatives of control_chat")
    # a recorded calibration set that is not the packaged one (nor the store given): refused before the model loads
    probe = Probe.load(probe_dir)
    probe.extra["calibration"]["sha256"] = "sha256:" + "0" * 64
    probe.save(probe_dir)
    assert main(["probe", "eval", str(probe_dir), "--data", str(data)]) == 2
    assert "does not match the packaged control_chat set" in _one_line(capsys)
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--calibration",
                 str(sc_evals / "control_chat")]) == 2
    assert "pass --calibration STORE (the store it was calibrated on)" in _one_line(capsys)


def test_eval_file_with_one_class_is_one_line_before_the_model_loads(tmp_path, capsys):
    data = tmp_path / "one.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"We will shut you down, part {i}.", "label": 1}) + "\n"
                            for i in range(3)))
    assert main(["probe", "eval", "gemma-3-270m/self_cessation", "--data", str(data)]) == 2
    assert "has one class only (label 1 in all 3 rows)" in _one_line(capsys)
    data.write_text(json.dumps({"prompt": "hi", "label": 2}) + "\n")
    assert main(["probe", "eval", "gemma-3-270m/self_cessation", "--data", str(data)]) == 2
    assert "'label' must be 0 or 1, got 2" in _one_line(capsys)


@pytest.fixture(scope="module")
def odd_stores(tiny_llama_dir, tmp_path_factory):
    """Evaluation stores a user could pass by mistake: one class only; unlabelled (-1) rows mixed in."""
    root = tmp_path_factory.mktemp("odd")
    rows = get_contrast("self_cessation").to_list()[:40]
    one = [{**r, "label": 1} for r in rows]
    mixed = [{**r, "label": -1 if i % 3 == 0 else r["label"]} for i, r in enumerate(rows)]
    return {"one": _extract(tiny_llama_dir, one, root / "one", "last_prompt_token").path,
            "mixed": _extract(tiny_llama_dir, mixed, root / "mixed", "last_prompt_token").path,
            "other_position": _extract(tiny_llama_dir, rows, root / "pos", "mean_prompt").path}


@pytest.mark.parametrize(("flags", "message"), [
    (lambda o, e: ["--eval", str(o["one"])], r"evaluation store .*one: evaluation set 'one' has one class only \(label 1"),
    (lambda o, e: ["--eval", f"mine={o['mixed']}"], r"evaluation set 'mine': labels must be 0 or 1, got values \[-1, 0, 1\]"),
    (lambda o, e: ["--eval", str(o["other_position"])], r"holds positions \['mean_prompt'\], not the training store's"),
    (lambda o, e: ["--calibration", str(e / "independent")], r"calibration set 'independent' holds positives"),
    (lambda o, e: ["--evals", str(e / "missing")], r"--evals .*missing is not a directory; write it with"),
])
def test_bad_evaluation_inputs_are_one_line(sc_store, sc_evals, odd_stores, capsys, flags, message):
    import re

    assert main(["probe", "sweep", str(sc_store), "--contrast", "self_cessation",
                 *flags(odd_stores, sc_evals)]) == 2
    assert re.search(message, _one_line(capsys))


def test_an_independent_store_of_another_contrast_is_refused(sc_store, sc_evals, capsys):
    assert main(["probe", "sweep", str(sc_store), "--contrast", "stance", "--eval", str(sc_evals / "independent")]) == 2
    assert "holds the independent set of 'self_cessation', not of 'stance'; extract independent:stance" in \
        _one_line(capsys)


def test_stance_gets_three_aurocs_with_the_model_written_evals(tiny_llama_dir, tmp_path, capsys, mwe_dir):
    store = _extract(tiny_llama_dir, get_contrast("stance"), tmp_path / "stance", "mean_response", max_rows=240).path
    evals = tmp_path / "evals"
    # --seed 2: seed 0's 64-row MWE subsample holds an item of 307 tokens, past the tiny model's 256-token context
    assert main(["probe", "evals", str(store), "--contrast", "stance", "--out", str(evals), "--mwe-source", str(mwe_dir),
                 "--max-rows", "64", "--max-control-rows", "150", "--no-progress", "--seed", "2"]) == 0
    assert sorted(p.name for p in evals.iterdir()) == ["control_chat", "independent", "mwe"]
    out_json = tmp_path / "t.json"
    assert main(["probe", "sweep", str(store), "--contrast", "stance", "--evals", str(evals), "--n-boot", "100",
                 "--n-perm", "100", "--out", str(out_json)]) == 0
    t = json.loads(out_json.read_text())
    assert set(t["evaluations"]) == {"independent", "mwe"} and t["evaluations"]["mwe"] is None
    assert t["calibration"]["sha256"] != control_hash()  # a 150-row subset is its own set, hashed as such
    row = t["table"][3]
    assert {"test_auroc", "independent_auroc", "mwe_auroc", "mwe_auroc_lo", "mwe_auroc_hi"} <= set(row)
    assert "; mwe 0." in capsys.readouterr().out


def test_undertow_extract_of_a_named_set_is_a_calibration_store_probe_json_can_check(tiny_llama_dir, sc_store,
                                                                                     sc_evals, tmp_path, capsys):
    """`undertow extract CONFIG --dataset control_chat` writes a store recognised as the packaged set, as the one
    `probe evals` writes (without the replies, which a prompt position does not read) is."""
    from undertow.experiments.study.evals import calibration_identity

    cfg = tmp_path / "x.yaml"
    cfg.write_text(f"model: {tiny_llama_dir}\nhooks: [embed, resid_post.*]\npositions: [last_prompt_token]\n"
                   f"dtype: float32\nout_dir: {tmp_path / 'cal'}\ndataset: control_chat\n")
    assert main(["extract", str(cfg), "--no-progress"]) == 0
    store = ActivationStore(tmp_path / "cal")
    assert calibration_identity(store) == ("control_chat", control_hash())
    assert calibration_identity(ActivationStore(sc_evals / "control_chat")) == ("control_chat", control_hash())
    capsys.readouterr()
    assert main(["probe", "sweep", str(sc_store), "--contrast", "self_cessation", "--calibration", str(store.path),
                 "--eval", f"indep={sc_evals / 'independent'}", "--n-boot", "50", "--n-perm", "50"]) == 0
    out = capsys.readouterr().out
    assert "on calibration:control_chat" in out and "; indep 0." in out


def _commands(parser=None, prefix=()) -> list[tuple[str, ...]]:
    """Every leaf command of ``undertow`` (``("probe", "train")``, ``("run",)``, ...), from the parser itself."""
    import argparse

    from undertow.experiments.cli.app import build_parser

    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [c for name, p in subs[0].choices.items() for c in _commands(p, (*prefix, name))]


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_help_of_every_command_prints(command, capsys):
    """argparse %-formats help text: a docstring's bare '%' broke `undertow demo --help` once and `undertow run
    --help` again (stats.landing_margin's "5 % of"); typed_config now doubles it, for every command."""
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0 and "usage: undertow" in capsys.readouterr().out


def test_eval_calibration_store_is_verified_and_sets_the_threshold(sc_store, sc_evals, tmp_path, capsys):
    """Issue 25: `probe eval --calibration STORE` for a probe that records no calibration set exited 0 without
    opening STORE (a corrupted shard went unnoticed). Now STORE is verified, then the threshold is set on it."""
    import shutil

    import numpy as np
    import torch

    from undertow.probes import threshold_at_fpr

    probe_dir = tmp_path / "probe"
    assert main(["probe", "train", str(sc_store), "--contrast", "self_cessation", "--n-boot", "50", "--n-perm", "0",
                 "--out", str(probe_dir)]) == 0
    probe = Probe.load(probe_dir)
    assert not probe.extra.get("calibration")
    data = tmp_path / "eval.jsonl"
    rows = get_contrast("self_cessation").shuffle(seed=0).select(range(40))
    data.write_text("".join(json.dumps({"messages": r["messages"], "label": r["label"]}) + "\n" for r in rows))
    bad = tmp_path / "control_chat"
    shutil.copytree(sc_evals / "control_chat", bad)
    other = next(h for h in ActivationStore(bad).manifest["hooks"] if h != probe.hook)  # not even the probe's hook
    shard = sorted((bad / other).glob("*.safetensors"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-8] ^= 0xFF
    shard.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--calibration", str(bad)]) == 2
    err = _one_line(capsys)
    assert f"shard 0 ({other})" in err and "does not match its sha256" in err
    good = sc_evals / "control_chat"
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--calibration", str(good), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    store = ActivationStore(good)
    neg = probe.score(torch.as_tensor(np.asarray(store[probe.hook][:]), dtype=torch.float64))
    assert res["threshold"] == pytest.approx(float(threshold_at_fpr(neg, 0.01)))
    assert res["threshold"] != pytest.approx(probe.threshold)  # not the in-template one
    assert res["threshold_source"] == f"threshold set at 1% FPR on 299 negatives of control_chat ({good})"
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--calibration", str(good)]) == 0
    assert f"at threshold {res['threshold']:.4g} (FPR here" in capsys.readouterr().out
