"""Replace only what is ours: what ``--overwrite`` may delete or write over in an out_dir, and nothing else.

A directory is an undertow activation store when its ``manifest.json`` is a
JSON object whose ``format`` is one this version knows (``KNOWN_FORMATS``).
Only then may it be replaced (``replaceable_files``), and only when that
manifest and every rank part ``manifest.rank{r}.json`` pass the full schema
check (``manifest_schema``: every listed file with a size and a sha256), and
then only:

- those manifests themselves;
- every file they list at its own layout path (``{hook}/{k:05d}.safetensors``,
  ``rows/{k:05d}.jsonl``, ``stats.safetensors``) whose size and sha256 match
  the listing (memoised by size and mtime, ``core/digests.py``);
- the hook and ``rows`` folders, when that leaves them empty.

A listed file that does not match, a listed path that is not the layout's or
runs through a symlink, a manifest that does not check (``{"format": ...}``
alone), a symlinked out_dir, or a foreign ``manifest.json`` (a prompt-suite
build) is refused with one line before a single file is touched; and so is a
replacement whose new store would write where an unlisted file sits
(``remove_store``): a file the old manifest does not validly list keeps its
bytes (``tests/activations/store/test_property_overwrite.py``). An unlisted
file of the old store (a shard a killed run wrote but had not listed, a tmp
file) is therefore kept too, or, where the new store needs its path, named in
the refusal.

A resume (same identity) writes the layout paths of its missing shards and
deletes its own tmp files (``owned_files``, ``remove_own_tmp_files``).
"""

from __future__ import annotations

import re
from pathlib import Path

from undertow.core.digests import DigestMemo
from undertow.core.fileio import is_tmp
from undertow.core.validate import confine

from ..errors import StoreError
from .filecheck import file_problem
from .manifest import FORMAT, MANIFEST, STATS, rank_parts, read_manifest, rows_file, shard_file
from .manifest_schema import check_manifest

KNOWN_FORMATS = (FORMAT,)
_SAFE_HOOK = re.compile(r"[A-Za-z0-9_.]+")
REFUSED = "nothing was deleted: remove the old store by hand if it is yours, or choose another out_dir"


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
    paths.extend(rank_parts(out_dir))
    return paths


def symlink_refusal(out_dir: Path) -> StoreError:
    return StoreError(f"{out_dir} is a symlink (to {out_dir.resolve()}); nothing was deleted: pass the real "
                      "directory as out_dir to replace the store there")


def refusal(out_dir: Path, why: str) -> StoreError:
    """The one-line refusal to replace ``out_dir`` because of ``why`` (nothing touched)."""
    return StoreError(f"cannot replace {out_dir}: {why}; {REFUSED}")


def _checked_manifest(out_dir: Path, path: Path, manifest: object | None = None) -> dict:
    """The store manifest at ``path`` (``manifest`` when already read) when it passes the schema check, else
    ``refusal``."""
    if path.is_symlink():
        raise refusal(out_dir, f"{path.name} is a symlink")
    try:
        manifest = read_manifest(path) if manifest is None else manifest
    except StoreError as e:
        raise refusal(out_dir, _without_fix(e)) from None
    if not is_store_manifest(manifest):
        raise refusal(out_dir, f"{path.name} is not an undertow store manifest")
    try:
        return check_manifest(manifest, path)
    except StoreError as e:
        raise refusal(out_dir, _without_fix(e)) from None


def _without_fix(e: StoreError) -> str:
    """A reader's message without its trailing fix ("restore ... or re-extract with --overwrite": the
    refusal's own question), so the refusal stays one line with one fix."""
    return str(e).rpartition("; ")[0] or str(e)


def _layout(manifest: dict, k: int, name: str) -> str | None:
    """The path the writer gives file ``name`` (a hook or ``__rows__``) of shard ``k``; None for another."""
    if name == "__rows__":
        return rows_file(k)
    ok = name in manifest["hooks"] and _SAFE_HOOK.fullmatch(name) and name not in (".", "..")
    return shard_file(name, k) if ok else None


def _verified(out_dir: Path, spec: dict, want: str | None, what: str, memo: DigestMemo) -> Path | None:
    """The listed file ``spec`` when it sits at its layout path ``want`` with its listed size and sha256;
    None when nothing is there; ``refusal`` for anything else."""
    rel = spec["path"]
    if rel != want:
        raise refusal(out_dir, f"{MANIFEST} lists {rel!r} for {what}, not the store's own path {want!r}")
    p = out_dir / rel
    if not p.exists() and not p.is_symlink():
        return None
    if p.resolve() != out_dir.resolve() / rel or not p.is_file():
        raise refusal(out_dir, f"{rel} ({what}) is a symlink or not a regular file")
    problem = file_problem(p, spec, memo, save=False)
    if problem is not None:
        raise refusal(out_dir, f"{what}: {problem}, so it may not be the store's")
    return p


def replaceable_files(out_dir: Path, manifest: object) -> set[Path]:
    """The existing files ``--overwrite`` may delete or write over at ``out_dir`` (module doc): the manifests
    and every file they list, verified. ``StoreError`` (nothing touched) for anything else. Reads only."""
    if out_dir.is_symlink():
        raise symlink_refusal(out_dir)
    if not is_store_manifest(manifest):
        raise not_a_store(out_dir, manifest)
    memo = DigestMemo.for_root(out_dir)
    ours: set[Path] = set()
    for path in [out_dir / MANIFEST, *rank_parts(out_dir)]:
        m = _checked_manifest(out_dir, path, manifest if path.name == MANIFEST else None)
        ours.add(path)
        found = [_verified(out_dir, spec, _layout(m, e["index"], name), f"shard {e['index']} ({name})", memo)
                 for e in m["shards"] for name, spec in e["files"].items()]
        if m.get("complete"):
            found.append(_verified(out_dir, m["stats_file"], STATS, "the stats file", memo))
        ours.update(p for p in found if p is not None)
    memo.save()
    return ours


def store_paths(header: dict) -> list[str]:
    """Every path a store of ``header`` (hooks, n_shards) writes, relative to its folder (not rank parts)."""
    shards = range(header["n_shards"])
    hook_files = [shard_file(h, k) for h in header["hooks"] for k in shards]
    return [MANIFEST, STATS, *hook_files, *map(rows_file, shards)]


def remove_store(out_dir: Path, manifest: object, header: dict) -> int:
    """Delete the old store at ``out_dir`` to make room for a store of ``header``; returns how many files
    went. Deletes only ``replaceable_files``; refuses (``StoreError``, nothing deleted) what it refuses, and
    a new store that would write where a file sits that is not one of them."""
    ours = replaceable_files(out_dir, manifest)
    for rel in store_paths(header):
        p = out_dir / rel
        if (p.exists() or p.is_symlink()) and p not in ours:
            raise refusal(out_dir, f"{rel} is not a file {MANIFEST} lists with its size and sha256 (a killed "
                                   "run's unlisted shard, or not the store's) and the new store writes there")
    # the manifests last: an interrupted delete leaves a manifest whose listed files may be missing
    for p in sorted(ours, key=lambda p: p.parent == out_dir and p.name.startswith("manifest")):
        p.unlink()
    for folder in {p.parent for p in ours}:
        if folder != out_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return len(ours)


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
