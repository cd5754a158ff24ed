"""Interviews split over ranks: which batches a rank runs, its part files, and their merge into one file.

Batches are the single process's: consecutive runs of ``batch_size`` interviews in selection order (batch k =
interviews ``[k * batch_size, (k + 1) * batch_size)``). A rank of ``world`` takes the contiguous block of batches
``[K * r / W, K * (r + 1) / W)`` (``activations.cluster.distributed.rank_shards``, the extraction's split), so an
interview sits in the same batch whatever the world size and its reply streams (``derive_seed(seed,
"interview/<id>/turn<t>")``) and its batch shapes are the one-process run's: same transcripts, same scores.

Each rank writes its lines to ``<name>.rank<r>.jsonl`` (``transcripts.rank1.jsonl``, ``scores.rank0.jsonl``),
rewritten atomically after each batch like the merged file. ``merge`` (rank 0, after every rank finished) writes
the lines in selection order into the merged file and removes the parts, so the directory ends up file for file
what one process writes. Finished lines are found by interview id in the merged file and in every part, so a
killed run resumes at any world size, one process included (``fold_prefix``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from undertow.activations.cluster.distributed import rank_shards

from .errors import InterviewError
from .transcripts import finished_lines, write_atomic


def rank_blocks(n_items: int, batch_size: int, rank: int, world: int) -> list[tuple[int, int]]:
    """The ``(lo, hi)`` item ranges of the batches rank ``rank`` of ``world`` runs, in order."""
    n_batches = -(-n_items // batch_size)
    return [(k * batch_size, min((k + 1) * batch_size, n_items)) for k in rank_shards(n_batches, rank, world)]


def part_path(out: Path, name: str, rank: int) -> Path:
    """``out/<stem>.rank<r>.jsonl``: rank ``rank``'s lines of the file ``name``."""
    stem = name.removesuffix(".jsonl")
    return out / f"{stem}.rank{rank}.jsonl"


def parts(out: Path, name: str) -> list[Path]:
    """Every part file of ``name`` in ``out``, by rank."""
    stem = re.escape(name.removesuffix(".jsonl"))
    found = [(int(m.group(1)), p) for p in out.glob("*.jsonl") if (m := re.fullmatch(stem + r"\.rank(\d+)\.jsonl", p.name))]
    return [p for _, p in sorted(found)]


def finished_by_id(out: Path, name: str) -> dict[str, bytes]:
    """Interview id -> its finished line, from the merged file then every part (a part's line wins)."""
    lines: dict[str, bytes] = {}
    for path in (out / name, *parts(out, name)):
        for line in finished_lines(path):
            lines[json.loads(line)["id"]] = line
    return lines


def remove_parts(out: Path, name: str) -> None:
    for p in parts(out, name):
        p.unlink(missing_ok=True)


def merge(out: Path, name: str, ids: Sequence[str]) -> Path:
    """Write ``out/name`` with the line of every id of ``ids``, in that order, then remove the parts. Raises
    ``InterviewError`` naming the first id no rank finished."""
    got = finished_by_id(out, name)
    missing = [i for i in ids if i not in got]
    if missing:
        raise InterviewError(f"{out}: no rank wrote {name} lines for {len(missing)} interviews ({missing[0]}...); "
                             "rerun the same command to compute them")
    path, data = out / name, b"".join(got[i] for i in ids)
    if not path.is_file() or path.read_bytes() != data:  # a finished run rerun: the file stays untouched
        write_atomic(path, data)
    remove_parts(out, name)
    return path


def fold_prefix(out: Path, name: str, ids: Sequence[str]) -> None:
    """One process resuming a sharded run: the longest prefix of ``ids`` finished in the merged file or the
    parts becomes the merged file and the parts go (the rest is recomputed in the one-process batches: the
    ranks' blocks are whole batches, so the prefix ends on a batch boundary). Nothing to do without parts."""
    if not parts(out, name):
        return
    got = finished_by_id(out, name)
    n = next((k for k, i in enumerate(ids) if i not in got), len(ids))
    write_atomic(out / name, b"".join(got[i] for i in ids[:n]))
    remove_parts(out, name)
