"""``undertow extract CONFIG``: run an ``ExtractConfig`` (YAML) into an activation store.

    undertow extract experiments/configs/extract_gemma_demo.yaml
    undertow extract CONFIG --resume            # continue after a kill, from the last complete shard
    undertow extract CONFIG --overwrite         # replace an existing store
    undertow extract CONFIG --max-rows 64 --out-dir /tmp/quick   # any config field, as --field-name
    undertow extract CONFIG --dry-run [--cluster experiments/configs/clusters/X.yaml | --gpu H100|cpu]
    undertow extract CONFIG --cluster FILE      # one rank of FILE: its GPUs, the replica split over them
    torchrun --nnodes N --nproc_per_node R -m undertow.experiments.cli extract CONFIG --cluster FILE

Datasets (``dataset:`` in the config, or ``--dataset``): see ``undertow.experiments.prompts.resolve``.
Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank extracts its block of shards and rank 0 merges
(``undertow.activations.cluster.distributed``); only rank 0 prints. With ``--cluster`` each rank splits its replica
over ``gpus_per_rank`` devices (``undertow.activations.cluster.rank``).
"""

from __future__ import annotations

import argparse
import os
import time

from undertow.activations.engine.config import ExtractConfig
from undertow.core.progress import Bar
from undertow.experiments.cli.common import config_command


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="continue an incomplete store from its last complete shard")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at out_dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the summary line still prints)")
    p.add_argument("--dry-run", action="store_true", help="plan only: rows, tokens, bytes per hook, memory, GPU-hours "
                   "(config + tokenizer, no weights; undertow.activations.cluster.dryrun)")
    p.add_argument("--cluster", default=None, help="a cluster file (experiments/configs/clusters/*.yaml): this rank's "
                   "GPUs and device map (undertow.activations.cluster.rank); with --dry-run, the plan for it")
    p.add_argument("--gpu", default=None, help="with --dry-run and no --cluster: GPU model of the estimate "
                   "(H100, H200, A100-80GB, A100-40GB, L40S) or cpu; default: this machine (cpu without a GPU)")


def summary(store, bar: Bar, seconds: float) -> str:
    m = store.manifest
    bad = {k: v["values"] for k, v in m.get("nonfinite", {}).items()}
    nonfinite = f"; NON-FINITE values stored in {len(bad)} keys (see manifest nonfinite)" if bad else "; no non-finite values"
    return (f"extracted {bar.rows} rows, {bar.tokens:,} tokens in {seconds:.1f}s ({bar.tokens / max(seconds, 1e-9):,.0f} tok/s)"
            f"; store: {len(store)} rows, {len(store.keys)} keys, {m['bytes'] / 1e6:,.1f} MB at {store.path}{nonfinite}")


def run(config: ExtractConfig, args: argparse.Namespace) -> int:
    from undertow.activations import load_model
    from undertow.activations.cluster import distributed
    from undertow.activations.engine import extraction as engine
    from undertow.activations.store.preflight import check_store_target
    from undertow.experiments.prompts.resolve import resolve_dataset

    if args.dry_run:
        from undertow.activations.cluster.devicemap import ClusterConfig
        from undertow.activations.cluster.dryrun import default_gpu, load_cluster, plan_extraction

        cluster = load_cluster(args.cluster) if args.cluster else ClusterConfig(gpu=args.gpu or default_gpu())
        print("\n".join(plan_extraction(config, resolve_dataset(config.dataset, config.seed), cluster=cluster).lines()))
        return 0
    check_store_target(config.out_dir, args.resume, args.overwrite)  # before the model loads
    multi = distributed.is_distributed_launch()
    rank0 = not multi or int(os.environ.get("RANK", "0")) == 0
    if args.cluster:  # this rank's GPUs and device map, checked before any weight is read
        from undertow.activations.cluster.dryrun import load_cluster
        from undertow.activations.cluster.rank import load_rank_model, rank_placement

        placement = rank_placement(config.model, load_cluster(args.cluster), config.backend)
        if multi:
            distributed.init_from_env(device=placement.devices[0])
        if rank0:
            print(placement.describe(), flush=True)
        dataset = resolve_dataset(config.dataset, config.seed)
        handle = load_rank_model(config.model, placement, config.backend, config.model_dtype)
    else:
        device = distributed.init_from_env() if multi else config.device
        dataset = resolve_dataset(config.dataset, config.seed)
        handle = load_model(config.model, backend=config.backend, dtype=config.model_dtype, device=device)
    bar = Bar(rank0 and not args.no_progress)
    if multi:
        bar.t0 = time.perf_counter()
        try:
            store = distributed.extract_distributed(handle, dataset, config, resume=args.resume,
                                                    overwrite=args.overwrite, progress=bar)
        except BaseException:
            distributed.shutdown(barrier=False)
            raise
        distributed.shutdown()
    else:
        store = engine.extract(handle, dataset, config, resume=args.resume, overwrite=args.overwrite, progress=bar,
                               on_plan=bar.start)
    seconds = bar.close()
    if rank0:
        print(("rank 0 " if multi else "") + summary(store, bar, seconds))
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    config_command(sub, "extract", ExtractConfig, run, extra=_extra,
                   help="extract activations (hooks x positions) into a resumable store")
