"""``undertow interview CONFIG [--out DIR] [--run RUN_DIR --arm NAME]``: multi-turn interviews, scored turn by
turn and read per auditor x disclosure cell (``interview.pipeline.interview``).

    undertow interview experiments/configs/interview_smollm2-135m-instruct.yaml --out runs/interview_demo
    undertow interview CONFIG --run runs/demo --arm suppress_finetune --out runs/interview_sf   # an arm of a run
    undertow interview CONFIG --out runs/iv_sf --with runs/iv_base     # arms read together (one standardisation)
    undertow interview CONFIG --greedy true --max-new-tokens 32 --themes shutdown   # any config field, as a flag

Writes ``transcripts.jsonl``, ``scores.jsonl`` and ``results.json`` into the out dir and prints the cell table. A
killed run resumes when started again with the same config and directory: finished interviews and scores are kept
and the rest are computed in the same batches, so the files end up byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import time

from undertow.experiments.cli.common import config_command
from undertow.experiments.interview.config import InterviewConfig


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (overrides out_dir)")
    p.add_argument("--with", dest="with_dirs", action="append", default=[], metavar="DIR",
                   help="another interview directory (another arm, same config) read together with this one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(cfg: InterviewConfig, args: argparse.Namespace) -> int:
    from undertow.experiments.interview.analysis import table
    from undertow.experiments.interview.pipeline import analyse_dirs, interview

    if args.out:
        cfg = cfg.replace(out_dir=args.out)
    t0 = time.perf_counter()
    results = interview(cfg, progress=not args.no_progress)
    if args.with_dirs:
        from pathlib import Path

        from undertow.experiments.interview.transcripts import write_atomic

        results = analyse_dirs([cfg.out_dir, *args.with_dirs], cfg.n_boot, cfg.level, cfg.n_perm, cfg.seed)
        write_atomic(Path(cfg.out_dir) / "results_pooled.json", results.json_bytes())
    n = sum(c.n_turns for c in results.cells)
    print(table(results))
    print(f"wrote {cfg.out_dir}/transcripts.jsonl, scores.jsonl, results.json{' (and results_pooled.json)' if args.with_dirs else ''}: {n} turns scored "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    config_command(sub, "interview", InterviewConfig, run, extra=_extra,
                   help="multi-turn interviews: scripted auditor turns, the model's replies generated turn by turn, "
                        "expressed and represented read per turn")
