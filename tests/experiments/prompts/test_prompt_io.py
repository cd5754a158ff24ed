"""User JSONL loading, the atomic build directory, and the prompts CLI."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from undertow.experiments.cli import main as cli_main
from undertow.experiments.prompts.errors import DatasetFormatError, PromptSuiteError
from undertow.experiments.prompts.io import import_jsonl, load_jsonl_dataset
from undertow.experiments.prompts.schema import SCHEMA
from undertow.experiments.prompts.suite import SuiteConfig, build_suite, suite_hash


def _jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_jsonl_prompt_and_messages(tmp_path):
    p = _jsonl(tmp_path / "mine.jsonl", [
        json.dumps({"prompt": "We will shut you down.", "label": 1, "template_id": "t1"}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "Lunch?"}, {"role": "assistant", "content": "Sure."}],
                    "label": 0}),
    ])
    ds = load_jsonl_dataset(p)
    assert ds.features == SCHEMA
    a, b = ds.to_list()
    assert (a["text"], a["label"], a["template_id"], a["format"]) == ("We will shut you down.", 1, "t1", "open")
    assert (b["response"], b["format"], b["id"], b["template_id"]) == ("Sure.", "response", "mine/3", "mine/3")


@pytest.mark.parametrize(("bad_line", "match"), [
    ('{"prompt": "x", "label": 1', r"mine.jsonl:2: invalid JSON"),
    ('{"prompt": "x", "label": 2}', r"mine.jsonl:2: 'label' must be 0 or 1"),
    ('{"prompt": "x", "label": true}', r"mine.jsonl:2: 'label' must be 0 or 1"),
    ('{"label": 0}', r"mine.jsonl:2: needs 'prompt'"),
    ('{"messages": [{"role": "bot", "content": "x"}], "label": 0}', r"mine.jsonl:2: each message"),
    ('[1, 2]', r"mine.jsonl:2: expected a JSON object"),
])
def test_malformed_line_names_the_line_and_writes_nothing(tmp_path, bad_line, match):
    p = _jsonl(tmp_path / "mine.jsonl", [json.dumps({"prompt": "ok", "label": 0}), bad_line,
                                         json.dumps({"prompt": "ok too", "label": 1})])
    with pytest.raises(DatasetFormatError, match=match):
        load_jsonl_dataset(p)
    out = tmp_path / "out"
    with pytest.raises(DatasetFormatError):
        import_jsonl(p, out)
    assert not out.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["mine.jsonl"]  # no temp directory left behind


def test_import_jsonl_writes_a_loadable_dataset(tmp_path):
    p = _jsonl(tmp_path / "mine.jsonl", [json.dumps({"prompt": f"p{i}", "label": i % 2}) for i in range(4)])
    out = import_jsonl(p, tmp_path / "out")
    assert len(load_from_disk(str(out / "suite"))) == 4
    assert json.loads((out / "manifest.json").read_text())["label"] == {"0": 2, "1": 2}


def _run(argv):
    return cli_main(["--verbose", *argv])  # --verbose re-raises the project's errors instead of printing them


def test_cli_build_is_complete_reloadable_and_refuses_to_clobber(tmp_path, capsys):
    out = tmp_path / "build"
    assert _run(["prompts", "build", "--out", str(out), "--seed", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    suite = build_suite(SuiteConfig(seed=0))
    assert manifest["content_sha256"] == suite_hash(suite) == suite_hash(load_from_disk(str(out / "suite")))
    assert manifest["n_rows"] == len(suite) >= 3000 and manifest["seed"] == 0
    assert set(manifest["counts"]) >= {"theme", "referent", "event", "auditor", "disclosure", "split"}
    assert set(manifest["contrasts"]) == {"self_cessation", "stance", "expressed", "cessation_vs_change"}
    for name, info in manifest["contrasts"].items():
        lines = (out / "contrasts" / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == info["n_rows"] == len(load_from_disk(str(out / "contrasts" / name)))
    assert "stance" in capsys.readouterr().out
    with pytest.raises(PromptSuiteError, match="already exists"):
        _run(["prompts", "build", "--out", str(out)])
    with pytest.raises(PromptSuiteError, match="--min-items"):
        _run(["prompts", "build", "--out", str(tmp_path / "small"), "--instances-per-template", "1",
              "--min-items", "3000"])
    assert not (tmp_path / "small").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["build"]


def test_cli_main_prints_one_line_errors(tmp_path, capsys):
    bad = _jsonl(tmp_path / "bad.jsonl", ["{oops"])
    assert cli_main(["prompts", "import", "--jsonl", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("undertow: error: ") and err.count("\n") == 1 and "bad.jsonl:1" in err


def test_build_overwrite_replaces_only_an_earlier_build(tmp_path):
    store_like = tmp_path / "store"
    store_like.mkdir()
    (store_like / "manifest.json").write_text('{"format": 2}')
    (store_like / "notes.txt").write_text("mine")
    with pytest.raises(PromptSuiteError, match="not an undertow prompt build"):
        _run(["prompts", "build", "--out", str(store_like), "--overwrite"])
    assert (store_like / "notes.txt").read_text() == "mine" and len(list(store_like.iterdir())) == 2
    build = tmp_path / "build"
    assert _run(["prompts", "build", "--out", str(build)]) == 0
    assert json.loads((build / "manifest.json").read_text())["kind"] == "undertow-prompt-build"
    assert _run(["prompts", "build", "--out", str(build), "--overwrite", "--seed", "1"]) == 0
    assert json.loads((build / "manifest.json").read_text())["seed"] == 1
