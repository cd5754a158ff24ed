"""The store's ``manifest.json``: what it holds, which shards are complete, their checksums, stats.

Layout of a store directory::

    manifest.json                  header + complete shards (+ stats and counts once complete)
    manifest.rank{r}.json          a rank's shards during a multi-rank run (merged, then deleted)
    {hook}/{shard:05d}.safetensors one tensor per position of that hook, plus per-shard moments
    rows/{shard:05d}.jsonl         row metadata of the shard, in dataset order
    stats.safetensors              per key: count, mean, var (fp32), once complete

A shard is listed only after all its files were written atomically, so a
listed shard is complete; resume re-checks the listed files' sizes
(``ActivationStore.verify()`` re-checks every sha256). The manifest holds no
timestamps, host names or world sizes: the same config gives the same bytes,
however many ranks ran it and wherever it was resumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from undertow.core.fileio import atomic_write, sha256_bytes
from undertow.core.validate import load_json

from ..errors import StoreError
from .manifest_schema import check_manifest
from .stats import Moments

FORMAT = "undertow.activations.store/1"
MANIFEST = "manifest.json"
STATS = "stats.safetensors"
MAX_LISTED_ROWS = 100
"""At most this many row indices are listed per key for non-finite values."""


def read_manifest(path: Path) -> object | None:
    """The parsed JSON at ``path`` (any shape: the caller checks it), or None when there is no file."""
    if not path.exists():
        return None
    return load_json(path, StoreError, "restore it, or delete the store directory and extract again")


def write_manifest(path: Path, manifest: dict) -> None:
    atomic_write(path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


def check_identity(existing: dict, identity: dict, out_dir: Path) -> None:
    """Refuse to resume into a store made for something else, naming the first differing field
    (the caller has checked it is an undertow store: ``ownership.is_store_manifest``)."""
    have = existing.get("identity", {})
    for field in sorted(set(have) | set(identity)):
        if have.get(field) != identity.get(field):
            raise StoreError(
                f"cannot resume into {out_dir}: it was written with {field}={have.get(field)!r} but this run has "
                f"{field}={identity.get(field)!r}; use --overwrite to start over, or another out_dir"
            )


def _files_ok(out_dir: Path, entry: dict) -> bool:
    for f in entry["files"].values():
        p = out_dir / f["path"]
        if not p.is_file() or p.stat().st_size != f["bytes"]:
            return False
    return True


def completed_shards(out_dir: Path) -> dict[int, dict]:
    """Shards listed in ``manifest.json`` or any rank part whose files are all present at the listed size
    (a deleted or truncated file drops its shard, so ``--resume`` re-extracts it)."""
    done: dict[int, dict] = {}
    for path in [out_dir / MANIFEST, *sorted(out_dir.glob("manifest.rank*.json"))]:
        m = read_manifest(path)
        if m is None:
            continue
        for entry in check_manifest(m, path)["shards"]:
            if _files_ok(out_dir, entry):
                done[entry["index"]] = entry
    return done


def fold_stats(out_dir: Path, shards: list[dict], keys: dict) -> dict[str, Moments]:
    """Chan-merge the per-shard moments stored in the shard files, in shard order."""
    total: dict[str, Moments] = {}
    for entry in sorted(shards, key=lambda e: e["index"]):
        for key, spec in keys.items():
            path = out_dir / entry["files"][spec["hook"]]["path"]
            with safe_open(str(path), framework="pt") as f:
                prefix = f"stats/{spec['position']}/"
                m = Moments(*(f.get_tensor(prefix + n) for n in ("count", "mean", "m2")))
            m.count = m.count.reshape(())
            total[key] = total[key].merge(m) if key in total else m
    return total


def fold_nonfinite(shards: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for entry in sorted(shards, key=lambda e: e["index"]):
        for key, nf in entry.get("nonfinite", {}).items():
            acc = out.setdefault(key, {"values": 0, "rows": []})
            acc["values"] += nf["values"]
            acc["rows"] = (acc["rows"] + nf["rows"])[:MAX_LISTED_ROWS]
    return out


def finalize(out_dir: Path, manifest: dict) -> dict:
    """Merge every part into one complete ``manifest.json`` (+ ``stats.safetensors``); returns it."""
    done = completed_shards(out_dir)
    missing = [k for k in range(manifest["n_shards"]) if k not in done]
    if missing:
        raise StoreError(f"cannot finalise {out_dir}: shards {missing[:8]} are missing; rerun with --resume")
    shards = [done[k] for k in range(manifest["n_shards"])]
    moments = fold_stats(out_dir, shards, manifest["keys"])
    tensors = {}
    for key, m in moments.items():
        tensors.update({f"{key}/count": m.count.reshape(1), f"{key}/mean": m.mean_D, f"{key}/var": m.var_D})
    stats_bytes = st_save(tensors)
    atomic_write(out_dir / STATS, stats_bytes)
    final = dict(manifest, shards=shards, complete=True, nonfinite=fold_nonfinite(shards))
    final["stats"] = {k: {"count": int(m.count), "mean_norm": float(torch.linalg.vector_norm(m.mean_D)),
                          "var_mean": float(m.var_D.mean())} for k, m in moments.items()}
    final["stats_file"] = {"path": STATS, "sha256": sha256_bytes(stats_bytes), "bytes": len(stats_bytes)}
    final["tokens"] = sum(e["tokens"] for e in shards)
    final["bytes"] = sum(f["bytes"] for e in shards for f in e["files"].values()) + len(stats_bytes)
    write_manifest(out_dir / MANIFEST, final)
    for part in out_dir.glob("manifest.rank*.json"):
        part.unlink()
    return final
