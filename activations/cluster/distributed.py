"""Many ranks, one store: each rank extracts a contiguous block of shards, rank 0 merges.

Launch with ``torchrun`` (``scripts/launch_torchrun.sh``) or SLURM through
submitit (``scripts/launch_slurm.py``); the extract CLI switches to this path
when ``WORLD_SIZE`` > 1. Every rank loads the model on ``cuda:LOCAL_RANK``
(CPU ranks use gloo), computes the same plan, and takes shards
``[K*r/W, K*(r+1)/W)``: contiguous row ranges aligned to shard boundaries, so
shard k holds the same rows with the same batches whatever the world size.
Each rank lists its shards in ``manifest.rank{r}.json``; after a barrier rank
0 merges them into ``manifest.json`` (moments folded in shard order), so the
merged store equals the one-rank store file for file. Output directory: one
path every rank can write (a shared filesystem on multi-node jobs).

Failures do not hang the job: each rank catches its error, the ranks
exchange them (``all_gather_object``) and all raise the first one. Resume
works across world sizes: shards listed by any part are kept.
"""

from __future__ import annotations

import datetime
import os
import re
import traceback

import torch

from undertow.core.errors import UndertowError

from ..engine.config import ExtractConfig
from ..engine.extraction import Progress, check_room, run_shards, warn_nonfinite
from ..engine.plan import make_plan
from ..errors import StoreError
from ..models.handle import ModelHandle
from ..store.manifest import completed_shards, finalize
from ..store.reader import ActivationStore
from ..store.writer import ShardWriter, prepare_store


def rank_shards(n_shards: int, rank: int, world: int) -> list[int]:
    """The contiguous block of shard indices rank ``rank`` of ``world`` extracts."""
    return list(range(n_shards * rank // world, n_shards * (rank + 1) // world))


def is_distributed_launch() -> bool:
    """True when started by torchrun / SLURM with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(timeout_s: float = 1800, device: str | None = None) -> torch.device:
    """Join the process group torchrun describes; returns this rank's device: ``device`` when given (a
    multi-GPU rank's first GPU, ``cluster_rank.py``), else ``cuda:LOCAL_RANK`` or cpu. NCCL on CUDA, gloo on cpu."""
    import torch.distributed as dist

    if device is None:
        cuda = torch.cuda.is_available() and os.environ.get("UNDERTOW_DEVICE", "cuda").startswith("cuda")
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if cuda else "cpu"
    dev = torch.device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def shutdown(*, barrier: bool = True) -> None:
    """Leave the process group: a barrier (skipped on an error path, where a peer may never arrive), then
    ``destroy_process_group``. A rank that exits with gloo's threads still running can die in C++ teardown
    ("terminate called without an active exception", SIGABRT) after its shards are written; the two-rank CI test
    hit it once."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:
        if barrier:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _agree_on_error(error: str | None) -> None:
    import torch.distributed as dist

    errors: list = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    first = next((e for e in errors if e), None)
    if first:
        raise StoreError(first)


def extract_distributed(handle: ModelHandle, dataset, config: ExtractConfig, *, resume: bool = False,
                        overwrite: bool = False, progress: Progress | None = None) -> ActivationStore:
    """``extract`` across the ranks of the initialised process group; every rank returns the merged store."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    plan = make_plan(handle, dataset, config)
    error = None
    if rank == 0:
        try:
            check_room(plan, prepare_store(plan.out_dir, plan.header, resume, overwrite))
        except UndertowError as e:
            error = str(e)
    _agree_on_error(error)
    done = completed_shards(plan.out_dir)
    mine = [k for k in rank_shards(plan.n_shards, rank, world) if k not in done]
    writer = ShardWriter(plan.out_dir, plan.header, f"manifest.rank{rank}.json")
    error = None
    try:
        run_shards(handle, plan, writer, mine, progress)
    except Exception as e:  # noqa: BLE001 - reported to every rank, then re-raised there
        if not isinstance(e, UndertowError):
            traceback.print_exc()
        error = f"rank {rank}: {e}"
    _agree_on_error(error)
    if rank == 0:
        try:
            warn_nonfinite(finalize(plan.out_dir, plan.header))
        except UndertowError as e:
            error = str(e)
    _agree_on_error(error)
    return ActivationStore(plan.out_dir)


def env_from_submitit() -> None:
    """Set torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) inside a submitit task."""
    import submitit

    env = submitit.JobEnvironment()
    os.environ.update({
        "RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks), "LOCAL_RANK": str(env.local_rank),
        "MASTER_ADDR": env.hostnames[0],
        "MASTER_PORT": os.environ.get("MASTER_PORT", str(29500 + int(re.sub(r"\D", "", env.job_id)[-3:] or 0))),
    })
