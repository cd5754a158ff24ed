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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from safetensors.torch import save as st_save
from torch import Tensor

from undertow.core.fileio import atomic_write, sha256_bytes

from ..errors import StoreError, StoreWriteError
from .manifest import MANIFEST, check_identity, completed_shards, read_manifest, write_manifest
from .manifest_schema import check_manifest
from .ownership import is_store_manifest, not_a_store, remove_own_tmp_files, remove_store, symlink_refusal


def _write_error(out_dir: Path, e: OSError, what: str, started: bool = True) -> StoreWriteError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space (or point out_dir at a larger disk), then rerun with --resume"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        fix = "choose a writable out_dir"
    else:
        fix = "check the disk, then rerun with --resume"
    tail = "; complete shards stay valid and nothing partial is listed" if started else ""
    return StoreWriteError(f"cannot write {what} in {out_dir} ({e.strerror or e}): {fix}{tail}")


def store_action(out_dir: Path, resume: bool, overwrite: bool) -> tuple[str, dict | None]:
    """What ``prepare_store`` will do at ``out_dir``: ``("create", None)``, ``("replace", manifest)`` or
    ``("resume", manifest)``; refuses (``StoreError``) what it must not touch. Reads only; deletes nothing.

    ``overwrite`` replaces only an undertow store (``ownership.py``). A store with no complete shard (a run
    that failed on its first rows) holds nothing to lose, so it is replaced without asking: a corrected
    rerun is never blocked by it."""
    existing = read_manifest(out_dir / MANIFEST)
    if existing is None:
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise StoreError(f"{out_dir} exists and is not an undertow store; choose an empty or new out_dir")
        return "create", None
    if not is_store_manifest(existing):
        raise not_a_store(out_dir, existing)
    if overwrite:
        if out_dir.is_symlink():
            raise symlink_refusal(out_dir)
        return "replace", existing
    check_manifest(existing, out_dir / MANIFEST)
    if not completed_shards(out_dir):
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
        return completed_shards(out_dir)
    if action == "replace":
        remove_store(out_dir, existing)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(out_dir / MANIFEST, dict(header, shards=[], complete=False))
    except OSError as e:
        raise _write_error(out_dir, e, "the manifest", started=False) from None
    return {}


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
                files[hook] = self._write(f"{hook}/{index:05d}.safetensors", st_save(tensors))
            rows_blob = "".join(json.dumps(r, sort_keys=True) + "\n" for r in meta_rows).encode()
            files["__rows__"] = self._write(f"rows/{index:05d}.jsonl", rows_blob)
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
