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


@pytest.fixture(scope="module")
def store_16(tiny_llama_dir, tmp_path_factory):
    """16 rows of one contrast: a test split of 1 positive and 1 negative."""
    out = tmp_path_factory.mktemp("store16") / "sc"
    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["embed", "resid_post.*"], positions=["last_prompt_token"],
                        dtype="float32", out_dir=str(out), max_rows=16, seed=0)
    extract(load_model(tiny_llama_dir), get_contrast("self_cessation"), cfg)
    return out


def test_too_few_rows_are_not_read_as_an_auroc(store_16, tmp_path, capsys):
    """Issue 25: `probe train` on 16 rows printed "AUROC in-template test 0.000 [0.000, 0.000]" from a 2-row test
    split, and `probe eval` on 8 rows printed "auroc": 1.0, "auroc_ci": [1.0, 1.0]."""
    import re

    probe_dir = tmp_path / "probe"
    assert main(["probe", "train", str(store_16), "--contrast", "self_cessation", "--out", str(probe_dir)]) == 0
    out = capsys.readouterr().out
    why = r"not readable: (\d+) positives? and (\d+) negatives? in the test split; AUROC needs >= 10 per class"
    assert re.search("AUROC in-template test " + why, out) and "[0.000, 0.000]" not in out, out
    meta = json.loads((probe_dir / "probe.json").read_text())
    assert meta["metrics"]["test_auroc"] is None and meta["metrics"]["test_auroc_lo"] is None
    u = meta["extra"]["unreadable"]["test"]
    assert re.fullmatch(why, u["reason"]).groups() == (str(u["n_pos"]), str(u["n_neg"]))
    data = tmp_path / "eight.jsonl"
    rows = get_contrast("self_cessation").shuffle(seed=0).select(range(8))
    data.write_text("".join(json.dumps({"messages": r["messages"], "label": r["label"]}) + "\n" for r in rows))
    n_pos = sum(r["label"] for r in rows)
    assert main(["probe", "eval", str(probe_dir), "--data", str(data), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["auroc"] is None and res["auroc_ci"] is None and (res["n_pos"], res["n_neg"]) == (n_pos, 8 - n_pos)
    assert res["reason"] == (f"not readable: {n_pos} positives and {8 - n_pos} negatives in {data}; AUROC needs "
                             ">= 10 per class")
    assert main(["probe", "eval", str(probe_dir), "--data", str(data)]) == 0
    assert f"AUROC not readable: {n_pos} positives and {8 - n_pos} negatives" in capsys.readouterr().out


def test_list_shows_each_probe_flag_beside_its_auroc(capsys):
    """As the README's probe table: each evaluation AUROC probe.json records, with its flag beside it, or, with
    no flag, whether its CI clears the set's lexical line."""
    from undertow.probes.pretrained import list_pretrained, load_pretrained

    assert main(["probe", "list"]) == 0
    lines = {ln.split()[0]: ln + ";" for ln in capsys.readouterr().out.splitlines()}

    def beside(flag: str, lex: float | None, lo: float) -> str:
        if flag == "below_chance":
            return " !! below chance"
        if flag == "below_lexical":
            return f" !! below its lexical line {lex:.3f}"
        if lex is None:
            return ""
        return (f" (above its lexical line {lex:.3f})" if lo > lex
                else f" (lexical line {lex:.3f} inside the CI: not readable as beating the words)")

    seen = set()
    for name in list_pretrained():
        p = load_pretrained(*name.split("/"))
        m = p.metrics
        test = f"AUROC in-template test {m['test_auroc']:.3f} [{m['test_auroc_lo']:.3f}, {m['test_auroc_hi']:.3f}]"
        lex = p.extra.get("lexical_auroc")
        below = "" if lex is None else "below_chance" if m["test_auroc"] < 0.5 else "below_lexical" * (m["test_auroc"] < lex)
        assert test + beside(below, lex, m["test_auroc_lo"]) + ";" in lines[name], name
        for n, lex in p.extra["evaluation_lexical_auroc"].items():
            ci = f"{n} {m[n + '_auroc']:.3f} [{m[n + '_auroc_lo']:.3f}, {m[n + '_auroc_hi']:.3f}]"
            assert ci + beside(m[n + "_flag"], lex, m[n + "_auroc_lo"]) + ";" in lines[name], (name, n)
            seen.add(beside(m[n + "_flag"], lex, m[n + "_auroc_lo"])[:4])  # " !! ", " (ab", " (le" or ""
    assert len(seen) >= 2, seen  # the shipped probes show more than one kind of reading


def test_a_recorded_auroc_reads_beside_its_line_or_says_why_not():
    """``probe list``'s cell for one figure: flag, reading against the line, or nothing to read (null AUROC)."""
    from types import SimpleNamespace

    from undertow.experiments.cli.probe import _recorded_auroc

    def cell(metrics: dict, extra: dict, name: str = "test") -> str:
        return _recorded_auroc(SimpleNamespace(metrics=metrics, extra=extra), name)

    ci = {"test_auroc_lo": 0.58, "test_auroc_hi": 0.70}
    assert cell({"test_auroc": 0.64, **ci}, {"lexical_auroc": 0.615}) == (
        "0.640 [0.580, 0.700] (lexical line 0.615 inside the CI: not readable as beating the words)")
    assert cell({"test_auroc": 0.64, **ci}, {"lexical_auroc": 0.5}) == "0.640 [0.580, 0.700] (above its lexical line 0.500)"
    assert cell({"test_auroc": 0.60, **ci}, {"lexical_auroc": 0.615}) == "0.600 [0.580, 0.700] !! below its lexical line 0.615"
    assert cell({"test_auroc": 0.45, **ci}, {}) == "0.450 [0.580, 0.700] !! below chance"
    assert cell({"test_auroc": None, "test_auroc_lo": None, "test_auroc_hi": None}, {"lexical_auroc": 0.6}) == "- [-, -]"
    assert cell({}, {"unreadable": {"test": {"reason": "not readable: 2 rows"}}}) == "not readable: 2 rows"
