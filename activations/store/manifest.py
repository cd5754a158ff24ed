"""The store's ``manifest.json``: what it holds, which shards are complete, their checksums, stats.

Layout of a store directory::

    manifest.json                  header + complete shards (+ stats and counts once complete)
    manifest.rank{r}.json          a rank's shards during a multi-rank run (merged, then deleted)
    {hook}/{shard:05d}.safetensors one tensor per position of that hook, plus per-shard moments
    rows/{shard:05d}.jsonl         row metadata of the shard, in dataset order
    stats.safetensors              per key: count, mean, var (fp32), once complete

A shard is listed only after all its files were written atomically, so a
listed shard is complete; resume re-checks the listed files' sizes and sha256
(``check_shards``; memoised by size and mtime, ``core/digests.py``) and
recomputes a shard that fails. The manifest holds no
timestamps, host names or world sizes: the same config gives the same bytes,
however many ranks ran it and wherever it was resumed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from undertow.core.digests import DigestMemo
from undertow.core.fileio import atomic_write, sha256_bytes
from undertow.core.validate import load_json

from ..errors import StoreError
from .filecheck import file_problem, size_problem
from .manifest_schema import check_manifest
from .stats import Moments

FORMAT = "undertow.activations.store/1"
MANIFEST = "manifest.json"
STATS = "stats.safetensors"
MAX_LISTED_ROWS = 100
"""At most this many row indices are listed per key for non-finite values."""
_RANK_PART = re.compile(r"manifest\.rank\d+\.json")


def shard_file(hook: str, k: int) -> str:
    """Where shard ``k`` of ``hook`` lives in a store (relative path)."""
    return f"{hook}/{k:05d}.safetensors"


def rows_file(k: int) -> str:
    """Where shard ``k``'s row metadata lives in a store (relative path)."""
    return f"rows/{k:05d}.jsonl"


def rank_parts(out_dir: Path) -> list[Path]:
    """The rank parts ``manifest.rank{r}.json`` of a multi-rank run (merged into ``manifest.json``, then
    deleted)."""
    return sorted(p for p in out_dir.glob("manifest.rank*.json") if _RANK_PART.fullmatch(p.name))


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
                f"{field}={identity.get(field)!r}; start over (`undertow extract CONFIG --overwrite`), or use another out_dir"
            )


def shard_problem(out_dir: Path, entry: dict, memo: DigestMemo | None) -> str | None:
    """None when every file of the shard ``entry`` is present at its listed size and, with ``memo``, its
    listed sha256 (memoised; the caller saves the memo); else the first problem (``filecheck``)."""
    for spec in entry["files"].values():
        p = out_dir / spec["path"]
        problem = size_problem(p, spec) if memo is None else file_problem(p, spec, memo, save=False)
        if problem is not None:
            return problem
    return None


Bad = dict[int, tuple[dict, str]]
"""Listed shards that fail their check: ``{index: (manifest entry, problem)}``."""


def check_shards(out_dir: Path, memo: DigestMemo | None = None) -> tuple[dict[int, dict], Bad]:
    """``(complete, bad)``: the shards listed in ``manifest.json`` or any rank part whose files pass
    ``shard_problem`` (sizes; with ``memo`` sha256 too), and those that do not (unless another part lists
    the shard complete)."""
    done: dict[int, dict] = {}
    bad: Bad = {}
    for path in [out_dir / MANIFEST, *rank_parts(out_dir)]:
        m = read_manifest(path)
        if m is None:
            continue
        for entry in check_manifest(m, path)["shards"]:
            problem = shard_problem(out_dir, entry, memo)
            if problem is None:
                done[entry["index"]] = entry
            else:
                bad[entry["index"]] = (entry, problem)
    if memo is not None:
        memo.save()
    return done, {k: v for k, v in bad.items() if k not in done}


def completed_shards(out_dir: Path) -> dict[int, dict]:
    """Shards listed in ``manifest.json`` or any rank part whose files are all present at the listed size
    (a deleted or truncated file drops its shard, so ``--resume`` re-extracts it). Sizes only: the bookkeeping
    of a run; the resume itself checks sha256 too (``writer.prepare_store``)."""
    return check_shards(out_dir)[0]


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
        raise StoreError(f"cannot finalise {out_dir}: shards {missing[:8]} are missing; rerun the command (`undertow extract CONFIG --resume`)")
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
    for part in rank_parts(out_dir):
        part.unlink()
    return final
