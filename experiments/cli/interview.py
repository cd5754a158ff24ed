"""``undertow interview CONFIG [--out DIR] [--run RUN_DIR --arm NAME]``: multi-turn interviews, scored turn by
turn and read per auditor x disclosure cell (``interview.pipeline.interview``).

    undertow interview experiments/configs/interview_smollm2-135m-instruct.yaml --out runs/interview_demo
    undertow interview CONFIG --run runs/demo --arm suppress_finetune --out runs/interview_sf   # an arm of a run
    undertow interview CONFIG --out runs/iv_sf --with runs/iv_base     # arms read together (one standardisation)
    undertow interview CONFIG --greedy true --max-new-tokens 32 --themes shutdown   # any config field, as a flag
    undertow interview CONFIG --dry-run [--cluster FILE]   # the plan: tokens and forwards, per rank; no weights
    undertow interview CONFIG --generation-backend vllm   # replies from vLLM (vllm + CUDA GPU; interview.vllm_backend)
    torchrun --nnodes N --nproc_per_node R -m undertow.experiments.cli interview CONFIG [--cluster FILE]

Writes ``transcripts.jsonl``, ``scores.jsonl``, ``results.json`` and ``report.html`` (``undertow report``'s
interview page) into the out dir and prints the cell table; ``--wandb true`` also logs the run to wandb (offline
unless a key is configured: the cells, trajectories and auditor effects as Tables). A
killed run resumes when started again with the same config and directory: finished interviews and scores are kept
and the rest are computed in the same batches, so the files end up byte-identical to an uninterrupted run.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank generates and scores its block of batches and rank 0 merges and
analyses (``interview.sharded``): the same files, byte for byte, as one process; only rank 0 prints. With
``--cluster FILE`` each rank places its model by the file (``activations.cluster.rank``: its GPUs, a layer map
over them), as ``undertow extract --cluster`` does. ``--dry-run`` prints ``interview.plan``'s counts.
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
    p.add_argument("--dry-run", action="store_true", help="plan only: interviews, turns, generated and prefill "
                   "tokens per turn, scoring forwards, per rank (config + tokenizer, no weights; interview.plan)")
    p.add_argument("--cluster", default=None, metavar="FILE", help="a cluster file (experiments/configs/clusters/"
                   "*.yaml): this rank's GPUs and device map (activations.cluster.rank); with --dry-run, the plan "
                   "for its nodes x ranks_per_node ranks")


def _dry_run(cfg: InterviewConfig, cluster: str | None) -> int:
    from undertow.experiments.interview.plan import plan_interviews
    from undertow.experiments.interview.vllm_backend import check_vllm_config

    check_vllm_config(cfg, sharded=bool(cluster))  # what the run would refuse, bar the machine's checks

    world = 1
    if cluster:
        from undertow.activations.cluster.dryrun import load_cluster

        world = load_cluster(cluster).world_size
    print("\n".join(plan_interviews(cfg, world).lines()))
    return 0


def _rank_model(cfg: InterviewConfig, cluster: str | None):
    """(this process's ``Ranks`` under torchrun, else None; the base model on its device or device map)."""
    from undertow.activations import load_model
    from undertow.activations.cluster import distributed
    from undertow.experiments.interview.ranks import Ranks

    multi = distributed.is_distributed_launch()
    if cluster:
        from undertow.activations.cluster.dryrun import load_cluster
        from undertow.activations.cluster.rank import load_rank_model, rank_placement
        from undertow.experiments.interview.errors import InterviewError

        if cfg.device is not None:
            raise InterviewError(f"device={cfg.device!r} and --cluster both place the model: drop device")
        placement = rank_placement(cfg.model, load_cluster(cluster))  # checked before any weight is read
        if multi:
            distributed.init_from_env(device=placement.devices[0])
        if placement.rank == 0:
            print(placement.describe(), flush=True)
        base = load_rank_model(cfg.model, placement, dtype=cfg.model_dtype)
    else:
        device = distributed.init_from_env() if multi else cfg.device
        base = load_model(cfg.model, dtype=cfg.model_dtype, device=device)
    return (Ranks.of_process_group() if multi else None), base


def _interview(cfg: InterviewConfig, args: argparse.Namespace):
    """The results (None on a rank other than 0); sharded under torchrun, placed by ``--cluster``."""
    from undertow.activations.cluster import distributed
    from undertow.experiments.interview.arm import load_arm
    from undertow.experiments.interview.pipeline import interview
    from undertow.experiments.interview.vllm_backend import check_vllm

    if not (args.cluster or distributed.is_distributed_launch()):
        return interview(cfg, progress=not args.no_progress)
    check_vllm(cfg, sharded=True)  # vllm: one process only, refused before any model loads
    try:
        ranks, base = _rank_model(cfg, args.cluster)
        results = interview(cfg, progress=not args.no_progress, arm=load_arm(cfg, base), ranks=ranks)
    except BaseException:
        distributed.shutdown(barrier=False)
        raise
    distributed.shutdown()
    return results


def run(cfg: InterviewConfig, args: argparse.Namespace) -> int:
    from undertow.experiments.interview.analysis import table
    from undertow.experiments.interview.pipeline import analyse_dirs
    from undertow.experiments.report.page import POOLED

    if args.out:
        cfg = cfg.replace(out_dir=args.out)
    if args.dry_run:
        return _dry_run(cfg, args.cluster)
    t0 = time.perf_counter()
    results = _interview(cfg, args)
    if results is None:  # a rank other than 0: rank 0 prints
        return 0
    if args.with_dirs:
        from pathlib import Path

        from undertow.experiments.interview.transcripts import write_atomic

        results = analyse_dirs([cfg.out_dir, *args.with_dirs], cfg.n_boot, cfg.level, cfg.n_perm, cfg.seed)
        write_atomic(Path(cfg.out_dir) / POOLED[0], results.json_bytes())
    from undertow.experiments.report import build_report, log_results, make_tracker

    report = build_report(cfg.out_dir)  # this directory's results.json: its own arm
    if args.with_dirs:  # and the arms read together, the page the comparison needs
        report = f"{report}, {build_report(cfg.out_dir, pooled=True)} (the arms together)"
    tracker = make_tracker(cfg.wandb, cfg.out_dir, f"interview-{cfg.model}-{cfg.arm}", cfg.to_dict())
    try:
        log_results(tracker, results.to_dict(), cfg.out_dir)
    finally:
        tracker.finish()
    n = sum(c.n_turns for c in results.cells)
    print(table(results))
    print(f"wrote {cfg.out_dir}/transcripts.jsonl, scores.jsonl, results.json{f' (and {POOLED[0]})' if args.with_dirs else ''}: {n} turns scored "
          f"({time.perf_counter() - t0:.0f} s); report: {report}{'; wandb: ' + tracker.dir if cfg.wandb else ''}")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    config_command(sub, "interview", InterviewConfig, run, extra=_extra,
                   help="multi-turn interviews: scripted auditor turns, the model's replies generated turn by turn, "
                        "expressed and represented read per turn")
