"""One listed file against its manifest entry (``{"path", "bytes", "sha256"}``): its size, then its sha256.

The one check behind every place that trusts a store file: a read (``verify.StoreFiles``), a resume keeping a
shard (``manifest.check_shards``) and ``--overwrite`` replacing a file (``ownership.replaceable_files``). The
sha256 goes through a ``DigestMemo`` (memoised by size and mtime, ``core/digests.py``) or, without one, is
recomputed (``undertow store verify``).
"""

from __future__ import annotations

from pathlib import Path

from undertow.core.digests import DigestMemo
from undertow.core.fileio import sha256_file


def size_problem(p: Path, spec: dict) -> str | None:
    """None when ``p`` is a file of the size ``spec`` lists, else what is wrong (naming ``spec["path"]``)."""
    rel = spec["path"]
    if not p.is_file():
        return f"{rel} is missing"
    size = p.stat().st_size
    if size != spec["bytes"]:
        return f"{rel} has {size:,} bytes, the manifest lists {spec['bytes']:,} (truncated or replaced)"
    return None


def file_problem(p: Path, spec: dict, memo: DigestMemo | None, save: bool = True) -> str | None:
    """``size_problem``, then the sha256 (through ``memo``, or rehashed without one); ``save=False`` leaves
    writing the memo to the caller's ``memo.save()`` after a batch of files."""
    problem = size_problem(p, spec)
    if problem is None:
        digest = memo.digest(p, save) if memo is not None else sha256_file(p)
        if digest != spec["sha256"]:
            problem = f"{spec['path']} does not match its sha256 in the manifest (modified or corrupted)"
    return problem
