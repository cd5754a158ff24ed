"""``--overwrite`` on random folder trees with random manifests: a file the old manifest does not validly
list keeps its bytes, and a refusal touches nothing (issue 25).

Each case builds a store folder: user files at random paths (the store's own layout paths among them: a
killed run's unlisted shard, or not the store's at all), a ``manifest.json`` that is valid, forged
(``{"format": ...}`` alone), partial, foreign, not JSON, or lists files with wrong sizes or hashes, paths
outside the folder or through a symlink; sometimes a rank part and a stats file. Then it runs the mechanism
``undertow extract --overwrite`` runs (``preflight.check_store_target``, ``writer.prepare_store``) for a
random new store, and writes every path that new store writes (what its shards would). With ``overwrite``
false the same holds for the replace a store with no complete shard gets without asking. The real CLI on a
tiny model: ``tests/experiments/cli/test_integrity_overwrite.py``.

The oracle, independent of ``ownership.py``: a file may change only when ``manifest.json`` is a known store
format that passes ``check_manifest`` and it (or a rank part that passes too) lists the file at that path
with the size and sha256 of its bytes; those manifests themselves may change.

Measured: 400 cases in 12-34 s on this 2-core machine (shared); about 37 % of them replace the old store,
the rest are refused (``--hypothesis-show-statistics``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from undertow.activations.errors import StoreError
from undertow.activations.store.manifest import FORMAT
from undertow.activations.store.manifest_schema import check_manifest
from undertow.activations.store.preflight import check_store_target
from undertow.activations.store.writer import prepare_store
from undertow.core.fileio import atomic_write

HOOKS = ["resid_post.0", "resid_post.1"]
SHARD = 2  # rows per shard, old and new store


def layout(k: int, name: str) -> str:
    return f"rows/{k:05d}.jsonl" if name == "__rows__" else f"{name}/{k:05d}.safetensors"


USER_PATHS = ["thesis.tex", "notes/a.txt", "rows/mine.jsonl", "resid_post.0/mydata.txt", "stats.safetensors",
              "rows/.00001.jsonl.tmp-7", "resid_post.1/.00000.safetensors.tmp-3", "manifest.rank1.json",
              *(layout(k, n) for k in range(4) for n in [*HOOKS, "__rows__"])]
ODD_PATHS = ["thesis.tex", "rows/mine.jsonl", "link.safetensors", "../outside.txt", "/etc/passwd",
             "resid_post.0/../thesis.tex", "", "notes"]
VARIANTS = ["valid"] * 12 + ["forged", "no_format", "other_format", "drop_field", "not_json", "not_object"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(root: Path) -> dict[str, bytes | tuple[str, str]]:
    """Every file under ``root`` (symlinks as links, not followed) by relative path."""
    out: dict[str, bytes | tuple[str, str]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif name in files:
                out[rel] = p.read_bytes()
    return out


def put(out: Path, rel: str, data: bytes) -> None:
    """Write ``data`` at ``out/rel`` when that is a plain path inside ``out`` that can hold a file."""
    p = out / rel
    if not rel or rel.startswith("/") or ".." in Path(rel).parts or p.is_symlink() or p.is_dir():
        return
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    except OSError:  # a parent is a file
        pass


def header(hooks: list[str], n_shards: int) -> dict:
    n_rows = n_shards * SHARD - 1 if n_shards > 1 else 1
    return {"format": FORMAT, "hooks": hooks, "positions": ["last_prompt_token"], "dtype": "float32",
            "n_shards": n_shards, "shard_size": SHARD, "n_rows": n_rows,
            "identity": {"model_fingerprint": "m", "dataset_hash": "d"},
            "keys": {f"{h}@last_prompt_token": {"hook": h, "position": "last_prompt_token", "shape": [4],
                                                "per_token": False} for h in hooks}}


def listing(data, out: Path, rel: str, honest: bool) -> dict:
    """A file entry for ``rel``: written with random bytes or left as the tree has it; its size and sha256
    right, or (unless ``honest``) maybe wrong."""
    if data.draw(st.booleans()):
        put(out, rel, data.draw(st.binary(max_size=24)))
    p = out / rel
    try:
        body = p.read_bytes() if rel and p.is_file() else b"absent"
    except OSError:
        body = b"absent"
    wrong = "" if honest else data.draw(st.sampled_from(["", "sha", "bytes"]))
    return {"path": rel, "sha256": sha(body + (b"x" if wrong == "sha" else b"")),
            "bytes": len(body) + (1 if wrong == "bytes" else 0)}


def old_manifest(data, out: Path, hooks: list[str], n_shards: int) -> dict:
    """A well-formed manifest of random listed shards and maybe a stats file: in most cases at the layout's
    paths with their files' sizes and hashes, else at random paths with random checksums."""
    honest = data.draw(st.sampled_from([True, True, False]))
    complete = data.draw(st.booleans())
    listed = range(n_shards) if complete else sorted(data.draw(st.sets(st.integers(0, n_shards - 1))))
    m = dict(header(hooks, n_shards), complete=complete, shards=[])
    for k in listed:
        files = {}
        for name in [*hooks, "__rows__"]:
            rel = layout(k, name) if honest else data.draw(st.sampled_from([layout(k, name)] * 4 + ODD_PATHS))
            files[name] = listing(data, out, rel, honest)
        lo = k * SHARD
        m["shards"].append({"index": k, "rows": [lo, min(lo + SHARD, m["n_rows"])], "tokens": 3,
                            "files": files, "nonfinite": {}})
    if complete:
        odd = st.sampled_from(["stats.safetensors"] * 4 + ODD_PATHS)
        rel = "stats.safetensors" if honest else data.draw(odd)
        m["stats_file"] = listing(data, out, rel, honest)
    return m


def variant(data, m: dict) -> bytes:
    """The bytes of ``manifest.json``: ``m`` itself, or a forged, foreign, partial or broken variant of it."""
    kind = data.draw(st.sampled_from(VARIANTS))
    if kind == "forged":
        return json.dumps({"format": FORMAT}).encode()
    if kind == "not_json":
        return data.draw(st.binary(max_size=20))
    if kind == "not_object":
        return b"[1, 2]"
    m = dict(m)
    if kind == "no_format":
        m.pop("format")
    elif kind == "other_format":
        m["format"] = "undertow.activations.store/99"
    elif kind == "drop_field":
        m.pop(data.draw(st.sampled_from(sorted(m))))
    return json.dumps(m).encode()


def validly_listed(out: Path, before: dict, manifest_bytes: bytes, part_bytes: bytes | None) -> set[str]:
    """The oracle (module doc): the paths that may change (relative to ``out``'s parent, like ``before``),
    judged on the tree ``before`` the overwrite."""
    def checked(raw: bytes | None, name: str) -> dict | None:
        try:
            m = json.loads(raw) if raw is not None else None
            ok = isinstance(m, dict) and m.get("format") == FORMAT
            return check_manifest(m, out / name) if ok else None
        except (ValueError, StoreError):
            return None

    main = checked(manifest_bytes, "manifest.json")
    if main is None:
        return set()
    part = checked(part_bytes, "manifest.rank0.json")
    allowed = {"manifest.json"} | ({"manifest.rank0.json"} if part is not None else set())
    at = f"{out.name}/"
    for m in [main] + ([part] if part is not None else []):
        specs = [spec for e in m["shards"] for spec in e["files"].values()]
        specs += [m["stats_file"]] if m.get("complete") else []
        for spec in specs:
            body = before.get(at + spec["path"])
            if isinstance(body, bytes) and sha(body) == spec["sha256"] and len(body) == spec["bytes"]:
                allowed.add(spec["path"])
    return {at + rel for rel in allowed}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNDERTOW_CACHE", str(tmp_path / "cache"))


@settings(max_examples=400, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_overwrite_keeps_every_file_the_old_manifest_does_not_validly_list(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("tree")
    out = root / "store"
    out.mkdir()
    (root / "outside.txt").write_bytes(b"precious")
    user = st.tuples(st.sampled_from(USER_PATHS), st.binary(max_size=16))
    for rel, body in data.draw(st.lists(user, max_size=8)):
        put(out, rel, body)
    if data.draw(st.booleans()):
        target = data.draw(st.sampled_from([root / "outside.txt", out / "thesis.tex"]))
        (out / "link.safetensors").symlink_to(target)
    hooks = data.draw(st.lists(st.sampled_from(HOOKS), min_size=1, max_size=2, unique=True))
    m = old_manifest(data, out, hooks, data.draw(st.integers(1, 3)))
    manifest_bytes = variant(data, m)
    (out / "manifest.json").write_bytes(manifest_bytes)
    part_bytes = None
    if data.draw(st.booleans()):
        part = dict(m, complete=False, shards=m["shards"][:1])
        part.pop("stats_file", None)
        garbage = data.draw(st.sampled_from([False, False, False, True]))
        part_bytes = data.draw(st.binary(max_size=12)) if garbage else json.dumps(part).encode()
        (out / "manifest.rank0.json").write_bytes(part_bytes)
    before = snapshot(root)
    allowed = validly_listed(out, before, manifest_bytes, part_bytes)

    new = header(data.draw(st.lists(st.sampled_from(HOOKS), min_size=1, max_size=2, unique=True)),
                 data.draw(st.integers(1, 4)))
    overwrite = data.draw(st.sampled_from([True, True, True, False]))
    try:
        check_store_target(out, False, overwrite)
        prepare_store(out, new, False, overwrite)
    except StoreError as e:
        event("refused")
        assert "\n" not in str(e).strip()
        assert snapshot(root) == before, f"refused ({e}) but something changed"
        return
    event("replaced")
    shards = range(new["n_shards"])  # what the new store's shards and stats write
    for rel in ["stats.safetensors", *(layout(k, n) for k in shards for n in [*new["hooks"], "__rows__"])]:
        try:
            atomic_write(out / rel, f"new {rel}".encode())
        except OSError:
            pass  # a user file where a folder must be: the run fails there (StoreWriteError)
    after = snapshot(root)
    changed = sorted(rel for rel, body in before.items() if after.get(rel) != body)
    assert [rel for rel in changed if rel not in allowed] == [], f"changed without a valid listing: {changed}"
    n = len(changed) - 1
    event(f"replaced: {min(n, 3)}{'+' if n > 3 else ''} listed files besides the manifest")

