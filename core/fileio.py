"""Atomic file writes: tmp file + fsync + rename + directory fsync.

A reader never sees a half-written file under its final name: a crash (or
SIGKILL) mid-write leaves only a ``.<name>.tmp-<pid>`` file, which the store
ignores and a resume deletes.

Test seam: ``UNDERTOW_PAUSE_MID_WRITE="N:/path/marker"`` makes the N-th
atomic write of this process stop half way through its tmp file (data
flushed and fsynced), create ``marker`` and sleep, so a test can SIGKILL the
process at a known point mid-write. It is read once per write; unset, it costs
one dict lookup.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

_writes = 0


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def is_tmp(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp-" in path.name


def _pause_point() -> tuple[int, Path] | None:
    spec = os.environ.get("UNDERTOW_PAUSE_MID_WRITE")
    if not spec:
        return None
    n, _, marker = spec.partition(":")
    return int(n), Path(marker)


def write_all(f, data: bytes | memoryview) -> None:
    """Write ``data`` to the open file ``f`` (the seam tests patch to simulate a full disk)."""
    global _writes
    _writes += 1
    pause = _pause_point()
    if pause is not None and pause[0] == _writes:
        half = len(data) // 2
        f.write(data[:half])
        f.flush()
        os.fsync(f.fileno())
        pause[1].write_text(f.name)
        time.sleep(3600)
    f.write(data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically; on any error the tmp file is removed and the error re-raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with tmp.open("wb") as f:
            write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
