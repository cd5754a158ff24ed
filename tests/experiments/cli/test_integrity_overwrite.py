"""``--overwrite`` replaces only an undertow store, and only its own files; a failed first shard blocks nothing."""

from __future__ import annotations

import json

import pytest
import yaml

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
    assert not (out / "resid_post.1" / ".00001.safetensors.tmp-77").exists()
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
