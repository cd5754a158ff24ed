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

from undertow.core.errors import UndertowError
from undertow.core.validate import first_line, load_json, read_text

from ..errors import DatasetError
from .row_checks import IdSet, check_row

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
        return [dict(r) if isinstance(r := self.data[i], Mapping) else r for i in idx]

    def content_hash(self) -> str:
        """``sha256:<16 hex>`` over the selected rows' canonical JSON (and their indices); checks every row
        (``row_checks``) in the same pass, so a bad row stops the run before a store is written."""
        h = hashlib.sha256()
        ids = IdSet()
        for lo in range(0, len(self), _HASH_BLOCK):
            for i, row in zip(self.indices[lo:lo + _HASH_BLOCK], self.get(lo, lo + _HASH_BLOCK), strict=True):
                where = f"dataset row {i}" + (f" (id {row.get('id')!r})" if isinstance(row, Mapping) and row.get("id") is not None else "")
                check_row(row, where)
                ids.add(row.get("id"), where)
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


def read_jsonl(path: str | Path, error: type[UndertowError] = DatasetError, hint: str = "one JSON object per line"
               ) -> list[tuple[int, Any]]:
    """``(line number, object)`` for every non-blank line; a bad line raises ``error`` naming ``path:line``."""
    path = Path(path)
    out = []
    for n, line in enumerate(read_text(path, error, "check the path").splitlines(), 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise error(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); {hint}") from None
            except RecursionError:
                raise error(f"{path}:{n}: JSON nested too deeply; {hint}") from None
    return out


def read_row_file(path: Path) -> list[dict]:
    """The rows of a .jsonl (one object per line) or .json (a list of objects) file, each checked
    (``row_checks``), ids unique, every row carrying the union of all rows' keys (null where absent)."""
    if path.suffix == ".jsonl":
        located = [(f"{path}:{n}", obj) for n, obj in read_jsonl(path, hint="fix or remove the line")]
    else:
        data = load_json(path, DatasetError, "a .json dataset is a list of row objects")
        if not isinstance(data, list):
            raise DatasetError(f"{path}: a .json dataset must be a list of row objects, got {type(data).__name__}; "
                               "or write one object per line as .jsonl")
        located = [(f"{path}: row {i}", obj) for i, obj in enumerate(data)]
    if not located:
        raise DatasetError(f"{path}: no rows; expected one JSON object per line")
    ids = IdSet()
    for where, obj in located:
        check_row(obj, where)
        ids.add(obj.get("id"), where)
    return union_columns(located)


def union_columns(located: list[tuple[str, dict]]) -> list[dict]:
    """Every row with every key any row has (None where absent), in first-seen key order; a column whose
    rows disagree on the JSON type (a string here, a number there) raises naming both rows."""
    kinds: dict[str, tuple[str, str]] = {}
    for where, obj in located:
        for k, v in obj.items():
            if v is None:
                continue
            kind = "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__
            first = kinds.setdefault(k, (kind, where))
            if first[0] != kind:
                raise DatasetError(f"{where}: '{k}' is a {kind} here but a {first[0]} at {first[1]}; "
                                   "give a column one type in every row")
    keys = list(dict.fromkeys(k for _, obj in located for k in obj))
    return [{k: obj.get(k) for k in keys} for _, obj in located]


def load_rows(path: str | Path):
    """A ``datasets.Dataset`` from a saved dataset directory or a .jsonl / .json file (``read_row_file``)."""
    import datasets

    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist; pass a saved datasets.Dataset directory or a .jsonl file")
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - datasets/pyarrow raise many types on a foreign directory
            reason = first_line(e, 120)
            raise DatasetError(f"{path} is not a saved datasets.Dataset ({reason}); "
                               "save one with Dataset.save_to_disk, or pass a .jsonl file") from None
    if path.suffix not in (".jsonl", ".json"):
        raise DatasetError(f"{path}: unsupported dataset file; use a saved Dataset directory, .jsonl or .json")
    rows = read_row_file(path)
    try:
        return datasets.Dataset.from_list(rows)
    except Exception as e:  # noqa: BLE001 - pyarrow's type errors (nested values of different shapes)
        reason = first_line(e, 120)
        raise DatasetError(f"{path}: the rows do not form one table ({reason}); give each column one shape") from None
