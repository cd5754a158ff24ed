"""``undertow interview CONFIG [--out DIR]``: multi-turn interviews (``interview.run.run_interviews``).

    undertow interview experiments/configs/interview_smollm2-135m-instruct.yaml --out runs/interview_demo
    undertow interview CONFIG --greedy true --max-new-tokens 32 --themes shutdown   # any config field, as a flag

A killed run resumes when started again with the same config and directory: finished interviews are kept
and the rest are generated in the same batches, so the file ends up byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import time

from undertow.experiments.cli.common import config_command
from undertow.experiments.interview.config import InterviewConfig


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (overrides out_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(cfg: InterviewConfig, args: argparse.Namespace) -> int:
    from undertow.experiments.interview.run import run_interviews
    from undertow.experiments.interview.transcripts import read_transcripts

    if args.out:
        cfg = cfg.replace(out_dir=args.out)
    t0 = time.perf_counter()
    path = run_interviews(cfg, progress=not args.no_progress)
    done = read_transcripts(path)
    print(f"wrote {path}: {len(done)} interviews, {sum(len(t.turns) for t in done)} replies "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    config_command(sub, "interview", InterviewConfig, run, extra=_extra,
                   help="multi-turn interviews: scripted auditor turns, the model's replies generated turn by turn")
