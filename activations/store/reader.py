"""``ActivationStore``: read a store directory (layout in ``manifest.py``), memory-mapped.

Keys are ``f"{hook}@{position}"`` (``resid_post.6@last_prompt_token``).

- ``store[key]`` -> ``LazyActs`` of shape ``[N, D]`` (one-token and mean
  positions), ``[N, k, D]`` (``last_k:k``) or ``[n_tokens, D]`` (``all_tokens``;
  ``store.token_offsets(key)`` gives each row's token range).
- With a single position, the plain hook name works too (``store["resid_post.6"]``)
  and ``store.hooks`` lists plain hook names; with several, ``store.hooks``
  lists full keys, and ``store.at(position)`` gives a view whose ``hooks`` are
  plain names. This is the probes' ``ActivationSource`` protocol
  (``hooks``, ``rows``, ``[hook]``).
- ``store.rows``: dict of columns (``id``, ``label``, ``template_id``,
  ``theme``, ``split``, ``index``, ``n_prompt_tokens``, ``n_response_tokens``,
  and any other scalar column of the dataset), in store row order = dataset order.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import StoreError
from .lazy import LazyActs
from .manifest import MANIFEST, read_manifest
from .manifest_schema import check_manifest
from .ownership import is_store_manifest
from .verify import StoreFiles, StoreReport, repair_hint, verify_store

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ActivationStore:
    """A finished (or, with ``allow_incomplete``, partial) activation store."""

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        """Open the store at ``path``: the manifest's fields are type-checked, every listed file must sit inside
        the store at its listed size with the safetensors header the manifest implies (``verify.py``); each
        file's sha256 is checked the first time any of it is read."""
        self.path = Path(path)
        if self.path.is_file():
            raise StoreError(f"{self.path} is a file; point at the store directory written by `undertow extract`")
        manifest = read_manifest(self.path / MANIFEST)
        if manifest is None:
            raise StoreError(f"{self.path} has no {MANIFEST}; point at a directory written by `undertow extract`")
        if not is_store_manifest(manifest):
            raise StoreError(f"{self.path}/{MANIFEST} is not an undertow activation store's (format "
                             f"{manifest.get('format') if isinstance(manifest, dict) else None!r}); point at a "
                             "directory written by `undertow extract`")
        check_manifest(manifest, self.path / MANIFEST)
        if not manifest.get("complete") and not allow_incomplete:
            raise StoreError(f"store {self.path} is incomplete ({len(manifest['shards'])}/{manifest['n_shards']} shards): "
                             "finish it with `undertow extract CONFIG --resume`, or open it with allow_incomplete=True")
        self.manifest = manifest
        self._shards = sorted(manifest["shards"], key=lambda e: e["index"])
        self._files = StoreFiles(self.path, manifest)
        self._files.check_structure()
        self._rows: dict | None = None

    # --- what is stored -------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        """``hook@position`` keys, hook-major in extraction order (layer order, then the config's position order)."""
        return [f"{h}@{p}" for h in self.manifest["hooks"] for p in self.manifest["positions"]]

    @property
    def positions(self) -> list[str]:
        return list(self.manifest["positions"])

    @property
    def hooks(self) -> list[str]:
        """Plain hook names when the store has one position, else full ``hook@position`` keys."""
        return list(self.manifest["hooks"]) if len(self.positions) == 1 else self.keys

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.manifest["dtype"]]

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["identity"]["model_fingerprint"]

    @property
    def dataset_hash(self) -> str:
        return self.manifest["identity"]["dataset_hash"]

    @property
    def nonfinite(self) -> dict:
        """Per key: ``{"values": n, "rows": [first row indices]}`` of stored non-finite values."""
        return self.manifest.get("nonfinite", {})

    def __len__(self) -> int:
        return sum(e["rows"][1] - e["rows"][0] for e in self._shards)

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, rows={len(self)}, keys={len(self.keys)}, dtype={self.manifest['dtype']})"

    # --- reading --------------------------------------------------------------------------------
    def key(self, hook_or_key: str) -> str:
        """Resolve a plain hook name (single-position stores) or a full key."""
        if hook_or_key in self.manifest["keys"]:
            return hook_or_key
        if "@" not in hook_or_key and len(self.positions) == 1:
            key = f"{hook_or_key}@{self.positions[0]}"
            if key in self.manifest["keys"]:
                return key
        hint = (f"this store has positions {', '.join(self.positions)}: ask for 'hook@position' or use store.at(position)"
                if len(self.positions) > 1 else f"stored hooks: {', '.join(self.manifest['hooks'])}")
        raise KeyError(f"no {hook_or_key!r} in {self.path}; {hint}")

    def __getitem__(self, hook_or_key: str) -> LazyActs:
        spec = self.manifest["keys"][self.key(hook_or_key)]
        parts = []
        for e in self._shards:
            n = e["tokens"] if spec["per_token"] else e["rows"][1] - e["rows"][0]
            parts.append((self._files.path(e["files"][spec["hook"]]), spec["position"], n))
        return LazyActs(parts, spec["shape"], self.dtype, on_read=self._files.ensure)

    def __contains__(self, hook_or_key: str) -> bool:
        try:
            self.key(hook_or_key)
        except KeyError:
            return False
        return True

    def at(self, position: str) -> StoreView:
        """A view of one position whose ``hooks`` are plain hook names."""
        if position not in self.positions:
            raise KeyError(f"position {position!r} not in this store; it has {', '.join(self.positions)}")
        return StoreView(self, position)

    def token_offsets(self, hook_or_key: str) -> torch.Tensor:
        """``[N + 1]`` int64: row i's tokens of an ``all_tokens`` key are ``[off[i], off[i+1])``."""
        key = self.key(hook_or_key)
        if not self.manifest["keys"][key]["per_token"]:
            raise KeyError(f"{key} is one vector per row; token offsets exist for all_tokens keys only")
        counts = torch.as_tensor(self.rows["n_tokens"], dtype=torch.int64)
        return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])

    @property
    def rows(self) -> dict[str, list]:
        """Row metadata columns, joined from the per-shard ``rows/*.jsonl`` files (each sha256-checked)."""
        if self._rows is None:
            records = []
            for e in self._shards:
                records.extend(self._shard_rows(e))
            names = sorted({k for r in records for k in r})
            self._rows = {k: [r.get(k) for r in records] for k in names}
        return self._rows

    def _shard_rows(self, entry: dict) -> list[dict]:
        p = self._files.path(entry["files"]["__rows__"])
        self._files.ensure(p)
        records = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
        if len(records) != entry["rows"][1] - entry["rows"][0] or not all(isinstance(r, dict) for r in records):
            raise StoreError(f"store {self.path}: shard {entry['index']}: {p.name} does not hold one row object per "
                             f"stored row; {repair_hint(self.path)}")
        return records

    def stats(self, hook_or_key: str) -> dict[str, torch.Tensor]:
        """``{"count", "mean", "var"}`` of a key over every stored vector (fp32; non-finite ones excluded)."""
        key = self.key(hook_or_key)
        if not self.manifest.get("complete"):
            raise StoreError("stats are written when the store completes; finish it with `undertow extract CONFIG --resume`")
        p = self._files.path(self.manifest["stats_file"])
        self._files.ensure(p)
        t = load_file(str(p))
        return {"count": t[f"{key}/count"][0], "mean": t[f"{key}/mean"], "var": t[f"{key}/var"]}

    def verify(self) -> StoreReport:
        """Re-hash every listed file (``verify_store``); ``StoreError`` naming the first bad shard and the fix."""
        report = verify_store(self.path)
        bad = [f.problem for s in report.shards for f in s.files if f.problem]
        bad += [report.stats.problem] if report.stats is not None and report.stats.problem else []
        if bad:
            raise StoreError(f"store {self.path}: {bad[0]}" + (f" ({len(bad) - 1} more bad files)" if len(bad) > 1 else ""))
        return report


class StoreView:
    """One position of a store, with plain hook names: ``view["resid_post.6"]`` -> ``[N, D]``."""

    def __init__(self, store: ActivationStore, position: str):
        self.store = store
        self.position = position
        self.model_fingerprint = store.model_fingerprint
        self.dataset_hash = store.dataset_hash

    @property
    def hooks(self) -> list[str]:
        return list(self.store.manifest["hooks"])

    @property
    def rows(self) -> dict[str, list]:
        return self.store.rows

    def __getitem__(self, hook: str) -> LazyActs:
        return self.store[f"{hook}@{self.position}"]

    def __len__(self) -> int:
        return len(self.store)
