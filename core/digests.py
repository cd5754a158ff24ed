"""sha256 of files, memoised by (realpath, size, mtime_ns) in small JSON files under the user cache.

Used for GGUF weights (``sources.py``: hashing the 250 MB Gemma GGUF costs
~0.7 s here) and for store files (``verify.py``: a warm read of a verified
store hashes nothing). One memo file per scope
(``$UNDERTOW_CACHE/digests/<scope>.json``; a store's scope is a hash of its
real path), so a lookup parses only that store's entries.

Why the user cache and not the store directory: a store may be read-only
(a shared dataset on a cluster), and a file written into it would change the
store's bytes (two runs of one config give byte-identical stores) and be a
file its manifest does not list. What the memo trusts: a file rewritten to
the same size with its mtime restored passes as unchanged; ``undertow store
verify`` (``verify_store``) rehashes everything regardless.

Concurrent writers replace the memo atomically; one may drop another's new
entry, which costs a re-hash later, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from undertow.core.fileio import sha256_file


def cache_root() -> Path:
    return Path(os.environ.get("UNDERTOW_CACHE", Path.home() / ".cache" / "undertow"))


def file_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}|{st.st_mtime_ns}"


class DigestMemo:
    """``digest(path)``: the file's sha256, hashed only when its (size, mtime_ns) is not memoised."""

    def __init__(self, scope: str):
        self.file = cache_root() / "digests" / f"{scope}.json"
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def for_root(cls, root: Path) -> DigestMemo:
        return cls("store-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20])

    def _load(self) -> dict[str, list[str]]:
        if self._index is None:
            try:
                index = json.loads(self.file.read_text())
                self._index = index if isinstance(index, dict) else {}
            except (OSError, ValueError):
                self._index = {}
        return self._index

    def cached(self, path: Path) -> str | None:
        """The memoised digest when the file is unchanged since it was hashed, else None."""
        entry = self._load().get(str(path.resolve()))
        return entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[0] == file_key(path) else None

    def digest(self, path: Path, save: bool = True) -> str:
        """The file's sha256 (memoised); ``save=False`` leaves writing the memo to one ``save()`` after a
        batch of files (each save rewrites the scope's whole memo file)."""
        found = self.cached(path)
        if found is not None:
            return found
        key = file_key(path)
        digest = sha256_file(path)
        self.remember(path, key, digest, save)
        return digest

    def remember(self, path: Path, key: str, digest: str, save: bool = True) -> None:
        self._load()[str(path.resolve())] = [key, digest]
        if save:
            self.save()

    def save(self) -> None:
        index = self._load()
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(index, indent=0, sort_keys=True))
            os.replace(tmp, self.file)
        except OSError:
            pass  # an unwritable cache only costs a re-hash next time


def file_digest(path: Path) -> str:
    """sha256 of a weight file (GGUF), memoised (module doc)."""
    return DigestMemo("weights").digest(path)
