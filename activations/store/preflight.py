"""Checks that can fail on writing, run before the work: where the output goes, that it is writable, and room.

``probe sweep`` / ``probe train`` on a read-only location used to fail only after all the fitting, and
``extract`` only after the model had loaded. These run first:

- ``check_writable(path)``: creates and deletes a probe file in the directory that will hold ``path``
  (the nearest existing ancestor), so permissions, a read-only filesystem or a file in the way surface
  as one ``StoreWriteError`` line before any model loads;
- ``check_store_target(out_dir, resume, overwrite)``: what ``prepare_store`` would refuse (a foreign
  manifest, a symlink to overwrite, a store that needs --resume; for --overwrite a manifest that does not
  check or a listed file that does not match it: ``ownership.replaceable_files``), plus ``check_writable``;
- ``check_free_space(path, need)``: refuses when the filesystem has less than ``need`` bytes free.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import StoreWriteError
from .writer import store_action


def _holder(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (itself when it exists)."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: str | Path, what: str = "the output") -> None:
    """``StoreWriteError`` unless files can be created where ``path`` will be written."""
    path = Path(path)
    holder = _holder(path)
    if not holder.is_dir():
        raise StoreWriteError(f"cannot write {what} at {path}: {holder} is a file, not a directory; choose a writable "
                              "location (checked before any work)")
    try:
        fd, tmp = tempfile.mkstemp(dir=holder, prefix=".undertow-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise StoreWriteError(f"cannot write {what} at {path} ({e.strerror or e} in {holder}): choose a writable "
                              "location (checked before any work)") from None


def check_free_space(path: str | Path, need: int, what: str = "the store") -> None:
    """``StoreWriteError`` when the filesystem that will hold ``path`` has fewer than ``need`` bytes free."""
    free = shutil.disk_usage(_holder(Path(path))).free
    if free < need:
        raise StoreWriteError(f"{what} at {path} needs about {need / 1e9:,.2f} GB but only {free / 1e9:,.2f} GB are "
                              "free: free disk space or choose an out_dir on a larger disk (checked before any work)")


def check_store_target(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before the model loads, what ``prepare_store`` would refuse; then ``check_writable``."""
    store_action(Path(out_dir), resume, overwrite)
    check_writable(out_dir, "the store")


def store_bytes_estimate(keys: dict, n_rows: int, itemsize: int) -> int:
    """Bytes of the fixed-size keys' tensors (``all_tokens`` keys grow with the tokens and are not counted)."""
    per_row = sum(math.prod(spec["shape"]) for spec in keys.values() if not spec["per_token"])
    return per_row * n_rows * itemsize
