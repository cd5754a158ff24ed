"""Dataset rows for extraction: selection, content hash, metadata, loading from a path.

The engine takes a ``datasets.Dataset`` (or any sequence of dict rows). The
rows kept (all, or a seeded ``max_rows`` subset in dataset order) are hashed
as canonical JSON, so a store knows exactly which data it holds: resuming
with a different dataset, subset or seed is refused.

Metadata: every field except the text fields (``messages``, ``prompt``,
``text``, ``response``) whose value is a JSON scalar is kept per row, plus
``index`` (the row's index in the full dataset); ``id``, ``label``,
``template_id``, ``theme`` and ``split`` are always present (None when the
dataset lacks them), since probes read them.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .extract_errors import DatasetError

TEXT_FIELDS = ("messages", "prompt", "text", "response")
REQUIRED_META = ("id", "label", "template_id", "theme", "split")
_HASH_BLOCK = 1024


class RowSource:
    """Uniform row access over a ``datasets.Dataset`` or a list of dicts, restricted to ``indices``."""

    def __init__(self, data: Any, indices: Sequence[int] | None = None):
        if isinstance(data, (str, Path)):
            raise DatasetError("extract() takes a datasets.Dataset (or a list of dict rows), not a path; "
                               "load a path with undertow.activations.rows.load_rows(path)")
        self.data = data
        self.indices = list(indices) if indices is not None else list(range(len(data)))

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, lo: int, hi: int) -> list[dict]:
        """Rows ``lo:hi`` of the selection, as dicts."""
        idx = self.indices[lo:hi]
        if not idx:
            return []
        if hasattr(self.data, "select") and hasattr(self.data, "to_list"):  # datasets.Dataset
            contiguous = idx[-1] - idx[0] == len(idx) - 1
            return (self.data.select(range(idx[0], idx[-1] + 1)) if contiguous else self.data.select(idx)).to_list()
        return [dict(self.data[i]) for i in idx]

    def content_hash(self) -> str:
        """``sha256:<16 hex>`` over the selected rows' canonical JSON (and their indices)."""
        h = hashlib.sha256()
        for lo in range(0, len(self), _HASH_BLOCK):
            for i, row in zip(self.indices[lo:lo + _HASH_BLOCK], self.get(lo, lo + _HASH_BLOCK), strict=True):
                h.update(json.dumps([i, row], sort_keys=True, separators=(",", ":"), default=str).encode())
        return "sha256:" + h.hexdigest()[:16]


def select_rows(data: Any, max_rows: int | None, seed: int) -> RowSource:
    """All rows, or a seeded random ``max_rows`` subset kept in dataset order."""
    n = len(data)
    if n == 0:
        raise DatasetError("the dataset has no rows; check the dataset path or the contrast/suite filter")
    if max_rows is None or max_rows >= n:
        return RowSource(data)
    picked = sorted(random.Random(seed).sample(range(n), max_rows))
    return RowSource(data, picked)


def row_metadata(row: Mapping, index: int) -> dict:
    """JSON-scalar metadata of one row plus its dataset ``index``."""
    meta: dict[str, Any] = {k: None for k in REQUIRED_META}
    for k, v in row.items():
        if k not in TEXT_FIELDS and (v is None or isinstance(v, (str, int, float, bool))):
            meta[k] = v
    meta["index"] = index
    return meta


def read_jsonl(path: str | Path, error: type[Exception] = DatasetError, hint: str = "one JSON object per line"
               ) -> list[tuple[int, Any]]:
    """``(line number, object)`` for every non-blank line; a bad line raises ``error`` naming ``path:line``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}; check the path") from None
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise error(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); {hint}") from None
    return out


def load_rows(path: str | Path):
    """A ``datasets.Dataset`` from a saved dataset directory or a .jsonl / .json file."""
    import datasets

    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist; pass a saved datasets.Dataset directory or a .jsonl file")
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as e:
            raise DatasetError(f"{path} is not a saved datasets.Dataset ({str(e).splitlines()[0][:120]}); "
                               "save one with Dataset.save_to_disk") from None
    if path.suffix == ".jsonl":
        return datasets.Dataset.from_list([obj for _, obj in read_jsonl(path)])
    if path.suffix == ".json":
        return datasets.Dataset.from_list(json.loads(path.read_text()))
    raise DatasetError(f"{path}: unsupported dataset file; use a saved Dataset directory, .jsonl or .json")
