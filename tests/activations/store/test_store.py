"""The store: lazy memory-mapped views, manifest contents, checksums, atomic writes under a full disk."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

from undertow.activations import ActivationStore, StoreError, StoreWriteError, extract
from undertow.activations.store.lazy import LazyActs
from undertow.core import fileio as store_io


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_llama, tiny_llama_dir, chat_rows):
    from undertow.activations import ExtractConfig

    out = tmp_path_factory.mktemp("s") / "store"
    cfg = ExtractConfig(model=str(tiny_llama_dir), hooks=["resid_post.*"], positions=["last_prompt_token", "last_k:2"],
                        dtype="float16", shard_size=6, batch_size=4, out_dir=str(out))
    return extract(tiny_llama, chat_rows(20), cfg)


def test_lazy_indexing_matches_materialised(store):
    view = store["resid_post.1@last_prompt_token"]
    assert isinstance(view, LazyActs) and len(view) == 20 and view.shape == (20, 64) and view.dtype == torch.float16
    full = view.to_tensor()
    assert torch.equal(view[:], full) and torch.equal(torch.as_tensor(view), full)
    assert np.array_equal(np.asarray(view), full.numpy())
    for index in (3, -1, slice(4, 15), slice(None, None, 3), [17, 2, 2, 9], torch.tensor([0, 19]),
                  np.arange(20) % 3 == 0, (slice(5, 8), 0)):
        assert torch.equal(view[index], full[index]), index
    assert store["resid_post.0@last_k:2"].shape == (20, 2, 64)
    with pytest.raises(IndexError):
        view[20]


def test_keys_hooks_and_views(store):
    assert store.keys == ["resid_post.0@last_prompt_token", "resid_post.0@last_k:2",
                          "resid_post.1@last_prompt_token", "resid_post.1@last_k:2"]
    assert store.hooks == store.keys  # several positions: full keys
    view = store.at("last_prompt_token")
    assert view.hooks == ["resid_post.0", "resid_post.1"] and torch.equal(view["resid_post.0"][:],
                                                                          store["resid_post.0@last_prompt_token"][:])
    with pytest.raises(KeyError, match="ask for 'hook@position' or use store.at"):
        store["resid_post.0"]


def test_manifest_contents(store):
    m = json.loads((store.path / "manifest.json").read_text())
    assert m["complete"] and m["n_shards"] == 4 and [s["rows"] for s in m["shards"]] == [[0, 6], [6, 12], [12, 18], [18, 20]]
    assert m["identity"]["model_fingerprint"].startswith("sha256:") and m["identity"]["dataset_hash"].startswith("sha256:")
    assert m["dtype"] == "float16" and m["undertow_version"] and "out_dir" not in m["config"]
    assert set(m["stats"]) == set(store.keys) and m["nonfinite"] == {}
    assert all(len(f["sha256"]) == 64 for s in m["shards"] for f in s["files"].values())
    store.verify()


def test_verify_catches_a_corrupt_shard(store, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    f = copy / "resid_post.1" / "00002.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="does not match its sha256"):
        ActivationStore(copy).verify()


def test_disk_full_leaves_only_complete_shards(tiny_llama, make_config, chat_rows, monkeypatch):
    cfg = make_config(shard_size=4)
    real_write = store_io.write_all
    calls = {"n": 0}

    def full_disk(f, data):
        calls["n"] += 1
        if calls["n"] == 7:  # 1 = initial manifest, 2-5 = shard 0, 6 = shard 1's first hook, 7 = its second
            f.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(f, data)

    monkeypatch.setattr(store_io, "write_all", full_disk)
    with pytest.raises(StoreWriteError, match=r"shard 1 .*No space left on device.*free disk space.*--resume"):
        extract(tiny_llama, chat_rows(10), cfg)
    out = ActivationStore(cfg.out_dir, allow_incomplete=True)
    assert [s["index"] for s in out.manifest["shards"]] == [0] and len(out) == 4
    assert not list(out.path.rglob("*.tmp-*"))
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(cfg.out_dir)
    monkeypatch.setattr(store_io, "write_all", real_write)
    resumed = extract(tiny_llama, chat_rows(10), cfg, resume=True)
    clean = extract(tiny_llama, chat_rows(10), make_config(shard_size=4, out_dir=cfg.out_dir + "-clean"))
    for key in clean.keys:
        assert torch.equal(resumed[key][:], clean[key][:])
