"""Replace only what is ours: what ``--overwrite`` may delete in an out_dir, and nothing else.

A directory is an undertow activation store when its ``manifest.json`` is a
JSON object whose ``format`` is one this version knows (``KNOWN_FORMATS``).
Only then may it be replaced, and then only the files its manifest names:

- ``manifest.json``, the rank parts ``manifest.rank{r}.json``, ``stats.safetensors``;
- every file a listed shard names, and every file the layout gives a shard of
  this store (``{hook}/{k:05d}.safetensors``, ``rows/{k:05d}.jsonl`` for the
  manifest's hooks and ``k < n_shards``: a shard written but not yet listed
  when the run was killed);
- the atomic writer's tmp files of exactly those names (``.{name}.tmp-{pid}``);
- the hook and ``rows`` folders, when that leaves them empty.

Anything else (a prompt-suite build with its own ``manifest.json``, a folder
of notes, a symlinked out_dir, a manifest naming a path outside the store) is
refused with one line, before a single file is touched.
"""

from __future__ import annotations

import re
from pathlib import Path

from undertow.core.fileio import is_tmp
from undertow.core.validate import confine

from ..errors import StoreError
from .manifest import FORMAT, MANIFEST, STATS

KNOWN_FORMATS = (FORMAT,)
_RANK_PART = re.compile(r"manifest\.rank\d+\.json")
_SAFE_HOOK = re.compile(r"[A-Za-z0-9_.]+")


def is_store_manifest(manifest: object) -> bool:
    """True when ``manifest`` (parsed JSON) says it is an undertow activation store of a known format."""
    return isinstance(manifest, dict) and manifest.get("format") in KNOWN_FORMATS


def not_a_store(out_dir: Path, manifest: object) -> StoreError:
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    what = f"format {fmt!r}" if fmt else "no undertow store format (a prompt build or another tool's folder?)"
    return StoreError(f"{out_dir}/{MANIFEST} is not an undertow activation store ({what}); nothing was deleted: "
                      "choose another out_dir")


def owned_files(out_dir: Path, manifest: dict) -> list[Path]:
    """The files of ``out_dir`` this store may delete (see module doc), existing or not; refuses a manifest
    that names a path outside the store."""
    rel: set[str] = {MANIFEST, STATS}
    hooks = manifest.get("hooks") if isinstance(manifest.get("hooks"), list) else []
    n_shards = manifest.get("n_shards") if isinstance(manifest.get("n_shards"), int) else 0
    for hook in hooks:
        if not isinstance(hook, str) or not _SAFE_HOOK.fullmatch(hook) or hook in (".", ".."):
            raise StoreError(f"{out_dir}/{MANIFEST} names hook {hook!r}, which is not a hook folder; nothing was "
                             "deleted: remove the store by hand if it is yours")
        rel.update(f"{hook}/{k:05d}.safetensors" for k in range(n_shards))
    rel.update(f"rows/{k:05d}.jsonl" for k in range(n_shards))
    shards = manifest.get("shards") if isinstance(manifest.get("shards"), list) else []
    for entry in shards:
        files = entry.get("files", {}) if isinstance(entry, dict) else {}
        for f in files.values() if isinstance(files, dict) else []:
            if isinstance(f, dict) and isinstance(f.get("path"), str):
                rel.add(f["path"])
    fix = "nothing was deleted: the manifest was edited, remove the store by hand if it is yours"
    paths = [confine(out_dir, r, f"{out_dir}/{MANIFEST}", StoreError, fix) for r in sorted(rel)]
    paths.extend(p for p in out_dir.glob("manifest.rank*.json") if _RANK_PART.fullmatch(p.name))
    return paths


def symlink_refusal(out_dir: Path) -> StoreError:
    return StoreError(f"{out_dir} is a symlink (to {out_dir.resolve()}); nothing was deleted: pass the real "
                      "directory as out_dir to replace the store there")


def remove_store(out_dir: Path, manifest: object) -> int:
    """Delete the store at ``out_dir`` (its own files only); returns how many files went.

    ``StoreError`` (and nothing deleted) for a symlinked out_dir or a manifest that is not a known store's."""
    if out_dir.is_symlink():
        raise symlink_refusal(out_dir)
    if not is_store_manifest(manifest):
        raise not_a_store(out_dir, manifest)
    files = owned_files(out_dir, manifest)
    n = 0
    for p in files:
        if p.is_file() and not p.is_symlink():
            p.unlink()
            n += 1
    n += remove_own_tmp_files(out_dir, manifest, files)
    for folder in {p.parent for p in files}:
        if folder != out_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return n


def remove_own_tmp_files(out_dir: Path, manifest: dict, files: list[Path] | None = None) -> int:
    """Delete the atomic writer's leftover tmp files (a killed run's) of this store's own file names."""
    files = owned_files(out_dir, manifest) if files is None else files
    names = {(p.parent, p.name) for p in files}
    n = 0
    for folder in {p.parent for p in files}:
        for tmp in folder.iterdir() if folder.is_dir() else []:
            if is_tmp(tmp) and tmp.is_file() and (folder, tmp.name[1:tmp.name.rindex(".tmp-")]) in names:
                tmp.unlink()
                n += 1
    return n
