"""Verified reads: sizes and headers on open, sha256 on the first full read (memoised), paths confined, verify_store."""

from __future__ import annotations

import json
import re
import shutil
import struct

import pytest
import torch

from undertow.activations import ActivationStore, StoreError, extract
from undertow.activations.store.verify import verify_store
from undertow.core import digests


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_llama, tiny_llama_dir, chat_rows):
    from undertow.activations import ExtractConfig

    out = tmp_path_factory.mktemp("v") / "store"
    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.*"], positions=["last_prompt_token"],
                        dtype="bfloat16", shard_size=4, batch_size=4, out_dir=str(out))
    return extract(tiny_llama, chat_rows(10), cfg).path


@pytest.fixture
def copy(good, tmp_path, monkeypatch):
    monkeypatch.setenv("UNDERTOW_CACHE", str(tmp_path / "cache"))
    dst = tmp_path / "store"
    shutil.copytree(good, dst)
    return dst


def _edit_manifest(store, edit):
    m = json.loads((store / "manifest.json").read_text())
    edit(m)
    (store / "manifest.json").write_text(json.dumps(m))


def test_flipped_shard_byte_fails_the_first_read_naming_shard_and_fix(copy):
    f = copy / "resid_post.1" / "00001.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    store = ActivationStore(copy)  # same size, intact header: opens
    assert store["resid_post.1"][0:2].shape == (2, 64)  # shard 0 is intact
    with pytest.raises(StoreError, match=r"shard 1 \(resid_post.1\)"):
        store["resid_post.1"][[0, 5]]  # a subset read touching shard 1 (a contrast out of a suite store)
    with pytest.raises(StoreError, match=r"shard 1 \(resid_post.1\): resid_post.1/00001.safetensors does not match "
                                         r"its sha256 .*; rerun `undertow extract CONFIG --out-dir "
                                         + re.escape(str(copy)) + r" --resume` to recompute it$"):
        store["resid_post.1"][:]
    store["resid_post.0"][:]  # other hooks still read


def test_inverted_labels_in_rows_file_are_caught(copy):
    f = copy / "rows" / "00000.jsonl"
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    text = "".join(json.dumps(dict(r, label=1 - r["label"]), sort_keys=True) + "\n" for r in rows)
    assert len(text) == f.stat().st_size
    f.write_text(text)
    with pytest.raises(StoreError, match=r"shard 0 \(rows\): rows/00000.jsonl does not match its sha256"):
        _ = ActivationStore(copy).rows


@pytest.mark.parametrize("damage,match", [
    ("truncate", r"shard 2 \(resid_post.0\): resid_post.0/00002.safetensors has [\d,]+ bytes, the manifest lists"),
    ("delete", r"shard 2 \(resid_post.0\): resid_post.0/00002.safetensors is missing; rerun `undertow "
               r"extract CONFIG --out-dir \S+ --resume` to recompute it$"),  # nothing to delete (issue 25)
    ("header", r"shard 2 \(resid_post.0\): resid_post.0/00002.safetensors holds 'last_prompt_token' as BF16 \[1, 128\], "
               r"the manifest says BF16 \[2, 64\]"),
    ("crafted", r"shard 2 \(resid_post.0\): tensor 'last_prompt_token': shape \[3, 64\] x BF16 does not fill"),
])
def test_damaged_shard_is_refused_on_open_and_resume_repairs_it(copy, good, damage, match, tiny_llama,
                                                                 tiny_llama_dir, chat_rows, caplog):
    f = copy / "resid_post.0" / "00002.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[:-10])
    elif damage == "delete":
        f.unlink()
    else:  # a crafted header of the same length: a consistent reshape, or a row count that overruns its bytes
        n = struct.unpack("<Q", data[:8])[0]
        new = b'"shape":[1,128]' if damage == "header" else b'"shape":[3,64] '
        header = data[8:8 + n].replace(b'"shape":[2,64]', new, 1).rstrip(b" ").ljust(n)  # (header is space-padded)
        assert len(header) == n and header != data[8:8 + n]
        f.write_bytes(data[:8] + header + data[8 + n:])
    with pytest.raises(StoreError, match=match):
        ActivationStore(copy)
    from undertow.activations import ExtractConfig

    m = json.loads((copy / "manifest.json").read_text())
    cfg = ExtractConfig(**{**m["config"], "out_dir": str(copy), "batch_size": 4})
    extract(tiny_llama, chat_rows(10), cfg, resume=True)  # the fix the message names; nothing deleted first
    redone = [r.getMessage() for r in caplog.records if r.getMessage().startswith("redoing shard")]
    why = {"truncate": r"has [\d,]+ bytes", "delete": "is missing"}.get(damage, "does not match its sha256")
    want = rf"redoing shard 2 \(rows 8-10\) of \S+: resid_post.0/00002.safetensors {why}"
    assert len(redone) == 1 and re.match(want, redone[0]), redone
    assert f.read_bytes() == (good / "resid_post.0" / "00002.safetensors").read_bytes()
    assert verify_store(copy).ok


@pytest.mark.parametrize("path", ["../other/resid_post.0/00000.safetensors", "/etc/passwd", "resid_post.0/../../x"])
def test_paths_outside_the_store_are_refused(copy, path):
    _edit_manifest(copy, lambda m: m["shards"][0]["files"]["resid_post.0"].update(path=path))
    with pytest.raises(StoreError, match="points outside"):
        ActivationStore(copy)


def test_symlink_out_of_the_store_is_refused(copy, tmp_path):
    outside = tmp_path / "outside.safetensors"
    f = copy / "resid_post.0" / "00000.safetensors"
    shutil.move(f, outside)
    f.symlink_to(outside)
    with pytest.raises(StoreError, match="resolves outside"):
        ActivationStore(copy)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.update(n_shards="x"), "n_shards must be an integer, got 'x'"),
    (lambda m: m.pop("keys"), "keys must be an object, got None"),
    (lambda m: m["shards"][1].update(rows=[0, 4]), r"shards\[1\].rows is \[0, 4\] but shard 1 holds rows \[4, 8\]"),
    (lambda m: m["shards"][0]["files"].pop("__rows__"), r"shards\[0\].files lacks \['__rows__'\]"),
    (lambda m: m["shards"][0]["files"]["resid_post.0"].update(sha256="zz"), "not 64 hex digits"),
    (lambda m: m.update(dtype="int8"), "dtype 'int8' is not one of"),
])
def test_hand_edited_manifest_is_one_error(copy, edit, match):
    _edit_manifest(copy, edit)
    with pytest.raises(StoreError, match=match):
        ActivationStore(copy)


def test_warm_reads_hash_nothing(copy, monkeypatch):
    hashed = []
    real = digests.sha256_file
    monkeypatch.setattr(digests, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    store = ActivationStore(copy)
    x = store["resid_post.1"][:]
    store.rows  # noqa: B018 - reads and checks the rows files
    assert len(hashed) == 3 + 3  # three shard files of the hook, three rows files
    hashed.clear()
    again = ActivationStore(copy)  # a new process would read the same memo file
    assert torch.equal(again["resid_post.1"][:], x) and again.rows == store.rows and hashed == []


def test_verify_store_reports_per_shard(copy):
    f = copy / "resid_post.1" / "00001.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    report = verify_store(copy)
    assert not report.ok and [s.ok for s in report.shards] == [True, False, True]
    bad = [fc for fc in report.shards[1].files if fc.problem]
    assert [fc.path for fc in bad] == ["resid_post.1/00001.safetensors"] and "sha256" in bad[0].problem
    lines = report.lines()
    assert lines[0].endswith(": ok") and "does not match its sha256" in lines[1] and "1 bad, 3 shards" in lines[-1]
    with pytest.raises(StoreError, match=r"shard 1 \(resid_post.1\)"):
        ActivationStore(copy).verify()


def test_store_verify_cli(copy, capsys):
    from undertow.experiments.cli import main as cli_main

    assert cli_main(["store", "verify", str(copy)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 + 1 + 1 and out[-1].startswith(f"{copy}: OK, 3 shards")
    (copy / "rows" / "00002.jsonl").write_text("{}\n{}\n")
    assert cli_main(["store", "verify", str(copy)]) == 2
    out = capsys.readouterr().out
    assert "shard     2 rows 8-10: rows/00002.jsonl" in out and "1 bad, 3 shards" in out


@pytest.mark.parametrize("tamper", ["shard", "labels"])
def test_issue_repro_probe_sweep_on_a_tampered_suite_store_is_one_line_exit_2(tmp_path, tiny_llama, tiny_llama_dir,
                                                                              monkeypatch, capsys, tamper):
    from undertow.activations import ExtractConfig
    from undertow.experiments.cli import main as cli_main
    from undertow.experiments.prompts.suite import build_suite

    monkeypatch.setenv("UNDERTOW_CACHE", str(tmp_path / "cache"))
    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.*"], dtype="bfloat16", shard_size=32,
                        out_dir=str(tmp_path / "suite"), max_rows=96, seed=0)
    store = extract(tiny_llama, build_suite(), cfg).path
    if tamper == "shard":
        f = store / "resid_post.1" / "00001.safetensors"
        data = bytearray(f.read_bytes())
        data[-5] ^= 0x40
        f.write_bytes(bytes(data))
    else:
        f = store / "rows" / "00001.jsonl"  # two rows' metadata swapped (their labels with it): same size
        lines = f.read_text().splitlines(keepends=True)
        k = next(i for i in range(1, len(lines)) if json.loads(lines[i])["event"] != json.loads(lines[0])["event"])
        lines[0], lines[k] = lines[k], lines[0]
        f.write_text("".join(lines))
    assert cli_main(["probe", "sweep", str(store), "--contrast", "self_cessation"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shard 1" in err and "does not match its sha256" in err
