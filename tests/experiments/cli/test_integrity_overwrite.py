"""``--overwrite`` replaces only an undertow store, and only its own files; a failed first shard blocks nothing."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from undertow.activations import ActivationStore, StoreError, extract
from undertow.activations.errors import DatasetError
from undertow.experiments.cli import main as cli_main


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def extract_cfg(tmp_path, tiny_llama_dir, chat_rows):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(6)))
    cfg = tmp_path / "extract.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "hooks": ["resid_post.1"], "dtype": "float32",
                                   "shard_size": 4, "dataset": str(data)}))
    return cfg


def test_issue_repro_prompt_build_then_extract_overwrite_keeps_every_file(tmp_path, extract_cfg, capsys):
    build = tmp_path / "D"
    assert cli_main(["prompts", "build", "--out", str(build)]) == 0
    before = tree_bytes(build)
    assert "manifest.json" in before and len(before) > 5
    capsys.readouterr()
    for flag in ("--resume", "--overwrite"):
        assert cli_main(["extract", str(extract_cfg), "--out-dir", str(build), flag, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "is not an undertow activation store" in err and "nothing was deleted" in err
        assert "format None" not in err and err.count("\n") == 1
    assert tree_bytes(build) == before


@pytest.mark.parametrize("manifest", [{"tool": "other"}, {"format": "undertow.activations.store/99"}, [1, 2], "x"])
def test_foreign_manifest_refused(tmp_path, tiny_llama, make_config, chat_rows, manifest):
    out = tmp_path / "store"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "notes.txt").write_text("mine")
    before = tree_bytes(out)
    with pytest.raises(StoreError, match="not an undertow activation store.*nothing was deleted"):
        extract(tiny_llama, chat_rows(3), make_config(out_dir=str(out)), overwrite=True)
    assert tree_bytes(out) == before


def test_symlinked_out_dir_refused(tmp_path, tiny_llama, make_config, chat_rows):
    real = tmp_path / "real"
    extract(tiny_llama, chat_rows(3), make_config(out_dir=str(real)))
    before = tree_bytes(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(StoreError, match="is a symlink .*nothing was deleted: pass the real directory"):
        extract(tiny_llama, chat_rows(4), make_config(out_dir=str(link)), overwrite=True)
    assert tree_bytes(real) == before


def test_overwrite_deletes_only_the_stores_own_files(tmp_path, tiny_llama, make_config, chat_rows):
    cfg = make_config(shard_size=2)
    out = tmp_path / "store"
    extract(tiny_llama, chat_rows(6), cfg)
    (out / "notes.txt").write_text("keep me")
    (out / "resid_post.0" / "mine.txt").write_text("keep me too")
    (out / "resid_post.1" / ".00009.safetensors.tmp-1").write_text("not ours: shard 9 is not this store's")
    (out / "resid_post.1" / ".00001.safetensors.tmp-77").write_text("a killed writer's tmp file")
    store = extract(tiny_llama, chat_rows(3), cfg, overwrite=True)
    assert len(store) == 3 and store.manifest["n_shards"] == 2
    assert (out / "notes.txt").read_text() == "keep me" and (out / "resid_post.0" / "mine.txt").exists()
    assert (out / "resid_post.1" / ".00009.safetensors.tmp-1").exists()
    # unlisted, so kept like any file the manifest does not list with its sha256 (issue 25); a resume deletes
    # it
    assert (out / "resid_post.1" / ".00001.safetensors.tmp-77").read_text() == "a killed writer's tmp file"
    assert not (out / "rows" / "00002.jsonl").exists()  # shard 2 of the old 3-shard store went with it


def test_manifest_naming_a_path_outside_is_refused(tmp_path, tiny_llama, make_config, chat_rows):
    out = tmp_path / "store"
    extract(tiny_llama, chat_rows(3), make_config())
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][0]["files"]["resid_post.0"]["path"] = "../victim.txt"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="points outside .*nothing was deleted"):
        extract(tiny_llama, chat_rows(3), make_config(), overwrite=True)
    assert victim.read_text() == "precious"


def test_failed_first_shard_does_not_block_the_corrected_rerun(tmp_path, tiny_llama, make_config, chat_rows):
    rows = chat_rows(5)
    rows[1] = dict(rows[1], messages=[{"role": "user", "content": "shut down " * 300}])  # > 256 positions
    cfg = make_config(positions=["last_prompt_token"])
    with pytest.raises(DatasetError, match=r"dataset row 1 \(id 'row-1'\) has [\d,]+ tokens but the model's "
                                           r"context is 256: shorten the row, or set truncate: true"):
        extract(tiny_llama, rows, cfg)
    assert (tmp_path / "store" / "manifest.json").exists()  # the manifest-only store a failed run leaves...
    assert len(extract(tiny_llama, chat_rows(5), cfg)) == 5  # ...is replaced without --overwrite or --resume
    ActivationStore(cfg.out_dir).verify()


def test_out_dir_checked_before_the_model_loads(tmp_path, capsys):
    foreign = tmp_path / "build"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"suite": 1}')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tmp_path / "no-such-model"), "dataset": "x.jsonl",
                                   "out_dir": str(foreign)}))
    assert cli_main(["extract", str(cfg), "--overwrite", "--no-progress"]) == 2
    assert "is not an undertow activation store" in capsys.readouterr().err  # not the missing model or dataset
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert cli_main(["extract", str(cfg), "--out-dir", str(blocked / "store"), "--no-progress"]) == 2
    assert "choose a writable location (checked before any work)" in capsys.readouterr().err


def test_issue_repro_forged_manifest_overwrite_touches_nothing(tmp_path, extract_cfg, capsys):
    """Issue 25: ``{"format": ...}`` alone beside the user's files turned --overwrite into a delete."""
    out = tmp_path / "DIR"
    for rel, text in [("manifest.json", '{"format": "undertow.activations.store/1"}'),
                      ("rows/00000.jsonl", "{}\n"), ("resid_post.0/mydata.txt", "mine"),
                      ("thesis.tex", "\\documentclass{article}")]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    before = tree_bytes(out)
    assert cli_main(["extract", str(extract_cfg), "--out-dir", str(out), "--overwrite", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == (f"undertow: error: cannot replace {out}: {out}/manifest.json: hooks must be a list, got "
                   "None; nothing was deleted: remove the old store by hand if it is yours, or choose "
                   "another out_dir\n")
    assert tree_bytes(out) == before


@pytest.fixture(scope="module")
def old_store(tmp_path_factory, tiny_llama, tiny_llama_dir, chat_rows):
    """A complete 2-shard store (3 rows) that the CLI cases overwrite with a 3-shard one (5 rows)."""
    from undertow.activations import ExtractConfig

    out = tmp_path_factory.mktemp("old") / "store"
    extract(tiny_llama, chat_rows(3), ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.1"],
                                                    dtype="float32", shard_size=2, out_dir=str(out)))
    return out


def _validly_listed(out, before: dict) -> set[str]:
    """The files ``--overwrite`` may change: those a schema-valid store manifest lists with their size and
    sha256 (and the manifest itself). The oracle of ``tests/activations/store/test_property_overwrite.py``."""
    from undertow.activations.store.manifest_schema import check_manifest

    try:
        m = check_manifest(json.loads(before["manifest.json"]), out / "manifest.json")
    except (KeyError, ValueError, StoreError):
        return set()
    if m.get("format") != "undertow.activations.store/1":
        return set()
    specs = [spec for e in m["shards"] for spec in e["files"].values()]
    specs += [m["stats_file"]] if m["complete"] else []
    return {"manifest.json"} | {s["path"] for s in specs if before.get(s["path"]) is not None
                                and hashlib.sha256(before[s["path"]]).hexdigest() == s["sha256"]
                                and len(before[s["path"]]) == s["bytes"]}


USER = ["thesis.tex", "notes/a.txt", "rows/00002.jsonl", "resid_post.1/00002.safetensors",
        "resid_post.1/mine.txt", "rows/.00000.jsonl.tmp-9"]
LISTED = ["resid_post.1/00000.safetensors", "resid_post.1/00001.safetensors", "rows/00000.jsonl",
          "rows/00001.jsonl", "stats.safetensors"]
FORGE = ["none", "none", "none", "forged", "wrong_sha", "user_path", "outside", "partial"]


@settings(max_examples=30, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(user=st.lists(st.tuples(st.sampled_from(USER), st.binary(max_size=12)), max_size=3),
       damage=st.sampled_from(["none", "none", "flip", "truncate", "delete"]), target=st.sampled_from(LISTED),
       forge=st.sampled_from(FORGE))
def test_cli_overwrite_on_random_trees_keeps_unlisted_files(tmp_path_factory, old_store, tiny_llama_dir,
                                                            chat_rows, monkeypatch, capsys, user, damage,
                                                            target, forge):
    """The real CLI (``extract --overwrite``, tiny model) on a copy of a store with user files, a damaged
    listed file and a forged or edited manifest: exit 0 with every unlisted file's bytes kept, or exit 2 with
    nothing changed."""
    root = tmp_path_factory.mktemp("cli")
    monkeypatch.setenv("UNDERTOW_CACHE", str(root / "cache"))
    out = root / "store"
    shutil.copytree(old_store, out)
    for rel, body in user:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(body)
    f = out / target
    if damage == "flip":
        f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:])
    elif damage in ("truncate", "delete"):
        f.write_bytes(f.read_bytes()[:-3]) if damage == "truncate" else f.unlink()
    m = json.loads((out / "manifest.json").read_text())
    entry = m["shards"][0]["files"]["resid_post.1"]
    if forge == "forged":
        m = {"format": m["format"]}
    elif forge == "wrong_sha":
        entry["sha256"] = "0" * 64
    elif forge == "user_path":  # a manifest that lists a user's file with its true size and sha256
        (out / "thesis.tex").write_bytes(b"my thesis")
        entry.update(path="thesis.tex", bytes=9, sha256=hashlib.sha256(b"my thesis").hexdigest())
    elif forge == "outside":
        entry["path"] = "../outside.txt"
    elif forge == "partial":
        m.update(complete=False, shards=m["shards"][:1])
        m.pop("stats_file")
    (out / "manifest.json").write_text(json.dumps(m))
    (root / "outside.txt").write_text("precious")
    before = tree_bytes(out)
    data = root / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(5)))
    cfg = root / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "hooks": ["resid_post.1"],
                                   "dtype": "float32", "shard_size": 2, "dataset": str(data),
                                   "out_dir": str(out)}))
    capsys.readouterr()
    rc = cli_main(["extract", str(cfg), "--overwrite", "--no-progress"])
    err = capsys.readouterr().err
    event(f"exit {rc}")
    assert (root / "outside.txt").read_text() == "precious"
    if rc == 2:
        assert err.count("\n") == 1 and tree_bytes(out) == before, err
        return
    assert rc == 0, err
    after = tree_bytes(out)
    allowed = _validly_listed(out, before)
    assert [rel for rel, body in before.items() if rel not in allowed and after.get(rel) != body] == []
    assert len(ActivationStore(out)) == 5
