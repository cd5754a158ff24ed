"""Typed check of a store's ``manifest.json`` before anything reads by it (a hand-edited manifest, a foreign one).

Checks the fields the reader and the resume path index (layout in
``manifest.py``): types, ``keys`` agreeing with ``hooks`` x ``positions``,
each shard's index, row range and files (every hook + ``__rows__``, each a
relative path inside the store with a sha256 and a size), and the stats file
of a complete store. A failure is one ``StoreError`` naming the field and the
fix. Sizes, headers and hashes of the files themselves are ``verify.py``'s.
"""

from __future__ import annotations

import re
from pathlib import Path

from undertow.core.validate import confine, expect

from ..errors import StoreError

STORE_DTYPES = ("float32", "float16", "bfloat16")
_SHA256 = re.compile(r"[0-9a-f]{64}")
FIX = "restore manifest.json from a backup, or re-extract the store (`undertow extract CONFIG --overwrite`)"


def check_manifest(m: object, path: Path) -> dict:
    """``m`` when it is a well-formed store manifest read from ``path``; else ``StoreError``."""
    where = str(path)
    if not isinstance(m, dict):
        raise StoreError(f"{where}: a manifest must be a JSON object, got {type(m).__name__}; {FIX}")

    def field(name: str, kinds):
        return expect(m.get(name), kinds, name, where, StoreError, FIX)

    hooks, positions = field("hooks", list), field("positions", list)
    for i, h in enumerate(hooks):
        expect(h, str, f"hooks[{i}]", where, StoreError, FIX)
    for i, p in enumerate(positions):
        expect(p, str, f"positions[{i}]", where, StoreError, FIX)
    if field("dtype", str) not in STORE_DTYPES:
        raise StoreError(f"{where}: dtype {m['dtype']!r} is not one of {', '.join(STORE_DTYPES)}; {FIX}")
    n_shards, shard_size, n_rows = field("n_shards", int), field("shard_size", int), field("n_rows", int)
    if shard_size < 1 or n_rows < 0 or n_shards != -(-n_rows // shard_size):
        raise StoreError(f"{where}: n_shards={n_shards} does not fit n_rows={n_rows} / shard_size={shard_size}; {FIX}")
    identity = field("identity", dict)
    for name in ("model_fingerprint", "dataset_hash"):
        expect(identity.get(name), str, f"identity.{name}", where, StoreError, FIX)
    _check_keys(field("keys", dict), hooks, positions, where)
    field("complete", (bool, type(None)))
    shards = field("shards", list)
    seen: set[int] = set()
    for i, entry in enumerate(shards):
        seen.add(_check_shard(entry, f"shards[{i}]", hooks, n_shards, shard_size, n_rows, seen, path.parent, where))
    if m.get("complete"):
        if len(seen) != n_shards:
            raise StoreError(f"{where}: says complete but lists {len(seen)} of {n_shards} shards; {FIX}")
        _check_file(field("stats_file", dict), "stats_file", path.parent, where)
    return m


def _check_keys(keys: dict, hooks: list, positions: list, where: str) -> None:
    want = {f"{h}@{p}" for h in hooks for p in positions}
    if set(keys) != want:
        extra, missing = sorted(set(keys) - want)[:3], sorted(want - set(keys))[:3]
        raise StoreError(f"{where}: keys do not match hooks x positions (extra {extra}, missing {missing}); {FIX}")
    for key, spec in keys.items():
        f = f"keys[{key!r}]"
        expect(spec, dict, f, where, StoreError, FIX)
        hook, _, pos = key.rpartition("@")
        if spec.get("hook") != hook or spec.get("position") != pos:
            raise StoreError(f"{where}: {f} names hook {spec.get('hook')!r} / position {spec.get('position')!r}; {FIX}")
        shape = expect(spec.get("shape"), list, f"{f}.shape", where, StoreError, FIX)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise StoreError(f"{where}: {f}.shape must be positive sizes, got {shape!r}; {FIX}")
        expect(spec.get("per_token"), bool, f"{f}.per_token", where, StoreError, FIX)


def _check_shard(entry: object, f: str, hooks: list, n_shards: int, shard_size: int, n_rows: int, seen: set,
                 root: Path, where: str) -> int:
    expect(entry, dict, f, where, StoreError, FIX)
    k = expect(entry.get("index"), int, f"{f}.index", where, StoreError, FIX)
    if not 0 <= k < n_shards or k in seen:
        raise StoreError(f"{where}: {f}.index {k} is out of range 0-{n_shards - 1} or listed twice; {FIX}")
    rows = expect(entry.get("rows"), list, f"{f}.rows", where, StoreError, FIX)
    want = [k * shard_size, min((k + 1) * shard_size, n_rows)]
    if rows != want:
        raise StoreError(f"{where}: {f}.rows is {rows!r} but shard {k} holds rows {want}; {FIX}")
    if expect(entry.get("tokens"), int, f"{f}.tokens", where, StoreError, FIX) < 0:
        raise StoreError(f"{where}: {f}.tokens is negative; {FIX}")
    files = expect(entry.get("files"), dict, f"{f}.files", where, StoreError, FIX)
    missing = sorted((set(hooks) | {"__rows__"}) - set(files))
    if missing:
        raise StoreError(f"{where}: {f}.files lacks {missing[:3]}; {FIX}")
    for name, spec in files.items():
        _check_file(spec, f"{f}.files[{name!r}]", root, where)
    expect(entry.get("nonfinite", {}), dict, f"{f}.nonfinite", where, StoreError, FIX)
    return k


def _check_file(spec: object, f: str, root: Path, where: str) -> None:
    expect(spec, dict, f, where, StoreError, FIX)
    confine(root, spec.get("path"), f"{where}: {f}.path", StoreError, FIX)
    sha = expect(spec.get("sha256"), str, f"{f}.sha256", where, StoreError, FIX)
    if not _SHA256.fullmatch(sha):
        raise StoreError(f"{where}: {f}.sha256 is not 64 hex digits; {FIX}")
    if expect(spec.get("bytes"), int, f"{f}.bytes", where, StoreError, FIX) < 0:
        raise StoreError(f"{where}: {f}.bytes is negative; {FIX}")
