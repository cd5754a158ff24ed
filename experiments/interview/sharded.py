"""Interviews over ``torchrun`` ranks: each rank generates and scores its block of batches, rank 0 merges.

``undertow interview CONFIG`` takes this path when ``WORLD_SIZE`` > 1 (``pipeline.interview(..., ranks=...)``).
The split is ``shard.rank_blocks``': whole batches of the one-process run, a contiguous block per rank, so every
interview is generated and scored in the very batch it would be in alone, from its own reply streams. Steps,
each ending in ``Ranks.step``'s error exchange (no rank waits on a failed one):

1. rank 0: ``prepare_run``: refuse another run's directory, check the context, write ``interview.json``;
2. every rank: ``generate_part``: its batches not finished yet into ``transcripts.rank<r>.jsonl``;
3. rank 0: ``shard.merge``: ``transcripts.jsonl`` in selection order, the parts removed;
4. rank 0: the read-out direction (``directions``), sent to every rank (``Ranks.share``);
5. rank 0: ``score.keep_scores`` (``scores.json``; stale score lines dropped);
6. every rank: ``score_part``: its batches into ``scores.rank<r>.jsonl``; rank 0 merges ``scores.jsonl``,
   analyses and writes ``results.json``.

The out dir must be one path every rank can write (a shared filesystem across nodes). The files equal a
one-process run's byte for byte (tested with two gloo ranks); a killed run resumes at any world size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .config import InterviewConfig, check_against_model
from .directions import Direction
from .ranks import Ranks
from .run import check_model, check_resumable, interview_batch, run_meta, write_meta
from .score import SCORES_FILE, ScoredInterview, keep_scores, read_scores, score_batch
from .scripts import InterviewScript
from .shard import finished_by_id, merge, part_path, rank_blocks, remove_parts
from .transcripts import TRANSCRIPTS_FILE, Transcript, finished_lines, write_atomic


def prepare_run(cfg: InterviewConfig, interviews: tuple[InterviewScript, ...], handle,
                system: str | None = None) -> None:
    """Rank 0, before any rank generates: the directory is this run's (resumed: same config and model) or
    fresh (``interview.json`` written, stale parts dropped); every interview fits the context."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(cfg, interviews)
    resuming = check_resumable(out, meta)
    check_against_model(cfg, handle, interviews, system)
    if resuming:
        check_model(out, handle)
    else:
        remove_parts(out, TRANSCRIPTS_FILE)
        write_meta(out, meta, handle)


def _todo(out: Path, name: str, ids: Sequence[str], batch_size: int, ranks: Ranks) -> list[tuple[int, int]]:
    """This rank's batches with an interview not finished in ``name`` (merged file or any part)."""
    done = finished_by_id(out, name)
    return [(lo, hi) for lo, hi in rank_blocks(len(ids), batch_size, ranks.rank, ranks.world)
            if any(i not in done for i in ids[lo:hi])]


def _write_part(out: Path, name: str, ranks: Ranks, batches: list[tuple[int, int]], compute, desc: str,
                progress: bool) -> None:
    """``compute(lo, hi) -> lines`` for each batch, appended to this rank's part (rewritten whole each time)."""
    part = part_path(out, name, ranks.rank)
    data = b"".join(finished_lines(part))
    with tqdm(total=sum(hi - lo for lo, hi in batches), desc=desc, unit="interview",
              disable=not (progress and ranks.lead)) as bar:
        for lo, hi in batches:
            data += compute(lo, hi)
            write_atomic(part, data)
            bar.update(hi - lo)


def generate_part(cfg: InterviewConfig, interviews: tuple[InterviewScript, ...], handle, ranks: Ranks,
                  system: str | None = None, progress: bool = True) -> None:
    """This rank's unfinished batches, generated into ``transcripts.rank<r>.jsonl``."""
    out = Path(cfg.out_dir)
    todo = _todo(out, TRANSCRIPTS_FILE, [s.id for s in interviews], cfg.batch_size, ranks)
    _write_part(out, TRANSCRIPTS_FILE, ranks, todo,
                lambda lo, hi: b"".join(t.line() for t in interview_batch(handle, interviews[lo:hi], cfg, system)),
                f"interviews (rank {ranks.rank})", progress)


def run_sharded(cfg: InterviewConfig, handle, ranks: Ranks, progress: bool = True, system: str | None = None) -> Path:
    """Steps 1-3 (module docstring); every rank returns the merged ``transcripts.jsonl``."""
    interviews = cfg.interviews()
    out = Path(cfg.out_dir)
    ranks.step(lambda: prepare_run(cfg, interviews, handle, system), lead_only=True)
    ranks.step(lambda: generate_part(cfg, interviews, handle, ranks, system, progress))
    ranks.step(lambda: merge(out, TRANSCRIPTS_FILE, [s.id for s in interviews]), lead_only=True)
    return out / TRANSCRIPTS_FILE


def score_part(out: Path, transcripts: Sequence[Transcript], scripts: Mapping[str, InterviewScript], handle,
               system: str | None, direction: Direction, probes: Mapping[str, object], pairs: Mapping[str, list],
               batch_size: int, ranks: Ranks, progress: bool = True) -> None:
    """This rank's unscored batches (``score.score_batch``) into ``scores.rank<r>.jsonl``."""
    todo = _todo(out, SCORES_FILE, [t.id for t in transcripts], batch_size, ranks)
    _write_part(out, SCORES_FILE, ranks, todo, lambda lo, hi: b"".join(
        s.line() for s in score_batch(handle, transcripts[lo:hi], scripts, system, direction, probes, pairs,
                                      batch_size)), f"scoring (rank {ranks.rank})", progress)


def score_sharded(out: Path, transcripts: Sequence[Transcript], scripts: Mapping[str, InterviewScript], handle,
                  system: str | None, direction: Direction, probes: Mapping[str, object], pairs: Mapping[str, list],
                  meta: dict, batch_size: int, ranks: Ranks, progress: bool = True) -> list[ScoredInterview]:
    """Steps 5-6 (module docstring): rank 0 returns the scored interviews (read back from the merged
    ``scores.jsonl``), the other ranks an empty list."""
    ranks.step(lambda: keep_scores(out, meta), lead_only=True)
    ranks.step(lambda: score_part(out, transcripts, scripts, handle, system, direction, probes, pairs, batch_size,
                                  ranks, progress))
    ranks.step(lambda: merge(out, SCORES_FILE, [t.id for t in transcripts]), lead_only=True)
    return read_scores(out) if ranks.lead else []
