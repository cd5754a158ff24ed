"""Write a store: prepare the directory (new / resume / overwrite), then shards, one at a time.

Order of one shard: every hook file, then the rows file (each atomic), then
the manifest part that lists the shard (atomic). Shards are written by one
background thread while the next shard computes (serialising, hashing and
fsyncing a 190 MB shard took ~0.5 s of a 3.3 s H100 run in the foreground);
``submit`` first waits for the previous write, so at most two shards are in
memory and a write error surfaces at the next ``submit`` or ``wait``. A failure anywhere before the
last rename leaves the shard unlisted: it reads as missing, never as valid.
A full disk or an unwritable directory raises ``StoreWriteError`` naming the
fix; the shards already listed stay valid, so ``--resume`` continues after it.
"""

from __future__ import annotations

import errno
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from safetensors.torch import save as st_save
from torch import Tensor

from undertow.core.digests import DigestMemo
from undertow.core.fileio import atomic_write, sha256_bytes

from ..errors import StoreError, StoreWriteError
from .manifest import (
    MANIFEST,
    STATS,
    check_identity,
    check_shards,
    completed_shards,
    rank_parts,
    read_manifest,
    rows_file,
    shard_file,
    write_manifest,
)
from .manifest_schema import check_manifest
from .ownership import is_store_manifest, not_a_store, remove_own_tmp_files, remove_store, replaceable_files

log = logging.getLogger(__name__)


def _write_error(out_dir: Path, e: OSError, what: str, started: bool = True) -> StoreWriteError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space (or point out_dir at a larger disk), then rerun (`undertow extract CONFIG --resume`)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        fix = "choose a writable out_dir"
    else:
        fix = "check the disk, then rerun (`undertow extract CONFIG --resume`)"
    tail = "; complete shards stay valid and nothing partial is listed" if started else ""
    return StoreWriteError(f"cannot write {what} in {out_dir} ({e.strerror or e}): {fix}{tail}")


def store_action(out_dir: Path, resume: bool, overwrite: bool) -> tuple[str, dict | None]:
    """What ``prepare_store`` will do at ``out_dir``: ``("create", None)``, ``("replace", manifest)`` or
    ``("resume", manifest)``; refuses (``StoreError``) what it must not touch. Reads only; deletes nothing.

    ``overwrite`` replaces only an undertow store whose manifest checks and whose listed files match it
    (``ownership.replaceable_files``, hashing them: memoised). A store with no complete shard (a run that
    failed on its first rows) holds nothing to lose, so it is replaced without asking, under the same check:
    a corrected rerun is never blocked by it."""
    existing = read_manifest(out_dir / MANIFEST)
    if existing is None:
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise StoreError(f"{out_dir} exists and is not an undertow store; choose an empty or new out_dir")
        return "create", None
    if not is_store_manifest(existing):
        raise not_a_store(out_dir, existing)
    if overwrite:
        replaceable_files(out_dir, existing)
        return "replace", existing
    check_manifest(existing, out_dir / MANIFEST)
    if not completed_shards(out_dir):
        replaceable_files(out_dir, existing)
        return "replace", existing
    if not resume:
        state = ("a complete store" if existing.get("complete")
                 else f"an incomplete store ({len(existing['shards'])}/{existing['n_shards']} shards)")
        raise StoreError(f"{out_dir} already holds {state}: pass --resume to continue it, --overwrite to replace it, "
                         "or choose another out_dir")
    return "resume", existing


def prepare_store(out_dir: Path, header: dict, resume: bool, overwrite: bool) -> dict[int, dict]:
    """Create, resume or overwrite the store at ``out_dir`` (``store_action``); returns the already complete
    shards. Writes the initial manifest, so every store directory has one from the start."""
    action, existing = store_action(out_dir, resume, overwrite)
    if action == "resume":
        check_identity(existing, header["identity"], out_dir)
        remove_own_tmp_files(out_dir, existing)
        return verified_shards(out_dir, header)
    if action == "replace":
        remove_store(out_dir, existing, header)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(out_dir / MANIFEST, dict(header, shards=[], complete=False))
    except OSError as e:
        raise _write_error(out_dir, e, "the manifest", started=False) from None
    return {}


def verified_shards(out_dir: Path, header: dict) -> dict[int, dict]:
    """The complete shards a resume keeps: every file at its listed size and sha256
    (``manifest.check_shards``, memoised by size and mtime like reads). A listed shard that fails is redone:
    one warning line names it and why, ``manifest.json`` is rewritten to list exactly the kept shards (rank
    parts folded in, so every rank and a later resume see the same), then its files at its own layout paths
    and a stale stats file are deleted.

    Measured (2 shared cores, page cache warm; a 251 MB random store of ``scripts/bench_store_verify.py
    --build``, 3 shards, 57 files): 0.37-0.57 s with a cold memo (the hashing), 0.01-0.02 s warm (after a
    read, a verify or an earlier resume)."""
    done, bad = check_shards(out_dir, DigestMemo.for_root(out_dir))
    for k, (entry, problem) in sorted(bad.items()):
        log.warning(f"redoing shard {k} (rows {entry['rows'][0]}-{entry['rows'][1]}) of {out_dir}: {problem}")
    if not bad and not rank_parts(out_dir):
        return done
    try:
        kept = [done[k] for k in sorted(done)]
        write_manifest(out_dir / MANIFEST, dict(header, shards=kept, complete=False))
        for part in rank_parts(out_dir):
            part.unlink()
        for k, (entry, _) in bad.items():
            for name, spec in entry["files"].items():
                if spec["path"] == (rows_file(k) if name == "__rows__" else shard_file(name, k)):
                    (out_dir / spec["path"]).unlink(missing_ok=True)
        if bad:
            (out_dir / STATS).unlink(missing_ok=True)  # finalize rewrites it from the shards
    except OSError as e:
        raise _write_error(out_dir, e, "the manifest") from None
    return done


class ShardWriter:
    """Writes complete shards and keeps one manifest part listing them (``manifest.json`` or a rank's part)."""

    def __init__(self, out_dir: Path, header: dict, part: str = MANIFEST, done: dict[int, dict] | None = None,
                 background: bool = True):
        self.out_dir = out_dir
        self.part = part
        self.header = header
        self.shards: dict[int, dict] = dict(done or {}) if part == MANIFEST else {}
        self.bytes_written = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="undertow-writer") if background else None
        self._pending: Future | None = None

    def submit(self, *args) -> None:
        """``write_shard(*args)`` in the background, after the previous write finished (its error raises here)."""
        self.wait()
        if self._pool is None:
            self.write_shard(*args)
        else:
            self._pending = self._pool.submit(self.write_shard, *args)

    def wait(self) -> None:
        """Block until the last submitted shard is written; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def shutdown(self) -> None:
        """Let an in-flight write finish (complete or cleaned up); never raises."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def write_shard(self, index: int, rows: tuple[int, int], tokens: int, tensors_by_hook: dict[str, dict[str, Tensor]],
                    meta_rows: list[dict], nonfinite: dict[str, dict], extra: dict | None = None) -> dict:
        """Write one shard's files and list it; returns its manifest entry (``extra``: more fields of it)."""
        files = {}
        try:
            for hook, tensors in tensors_by_hook.items():
                files[hook] = self._write(shard_file(hook, index), st_save(tensors))
            rows_blob = "".join(json.dumps(r, sort_keys=True) + "\n" for r in meta_rows).encode()
            files["__rows__"] = self._write(rows_file(index), rows_blob)
            entry = {"index": index, "rows": list(rows), "tokens": tokens, "files": files, "nonfinite": nonfinite,
                     **(extra or {})}
            self.shards[index] = entry
            listed = [self.shards[k] for k in sorted(self.shards)]
            write_manifest(self.out_dir / self.part, dict(self.header, shards=listed, complete=False))
        except OSError as e:
            self.shards.pop(index, None)
            raise _write_error(self.out_dir, e, f"shard {index}") from None
        return entry

    def _write(self, rel: str, data: bytes) -> dict:
        atomic_write(self.out_dir / rel, data)
        self.bytes_written += len(data)
        return {"path": rel, "sha256": sha256_bytes(data), "bytes": len(data)}
