"""Submit an extraction to SLURM with submitit: one task per GPU, all nodes writing one store.

    python scripts/launch_slurm.py experiments/configs/extract_gemma_demo.yaml \\
        --nodes 2 --gpus-per-node 8 --partition gpu --time 120 -- --resume
    # the same tasks as local processes (no SLURM; CPU ranks with gloo), waiting for the result:
    UNDERTOW_DEVICE=cpu python scripts/launch_slurm.py CONFIG --cluster local --gpus-per-node 0 --tasks-per-node 2 --wait
    # replicas larger than one GPU: one task per replica (the file's ranks_per_node), the file after --
    python scripts/launch_slurm.py CONFIG --nodes 4 --gpus-per-node 8 --tasks-per-node 2 \
        -- --cluster experiments/configs/clusters/llama-3.3-70b-instruct_4nodes.yaml

Everything after ``--`` goes to ``undertow extract`` (``--resume``, ``--overwrite``,
``--max-rows 1000``, any ``--field`` override). Each task sets torchrun's
variables from the SLURM environment (``undertow.activations.cluster.distributed.env_from_submitit``)
and runs the extract CLI, which sees WORLD_SIZE > 1 and takes its block of
shards; rank 0 merges. ``out_dir`` must be on a filesystem every node sees.
Needs the ``cluster`` extra (``pip install undertow[cluster]``).
"""

from __future__ import annotations

import argparse
import sys


def run_task(argv: list[str]) -> int:
    from undertow.activations.cluster.distributed import env_from_submitit
    from undertow.experiments.cli import main as cli_main

    env_from_submitit()
    return cli_main(["extract", *argv])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--cpus-per-gpu", type=int, default=8)
    ap.add_argument("--partition", default=None)
    ap.add_argument("--time", type=int, default=240, help="minutes")
    ap.add_argument("--tasks-per-node", type=int, default=None, help="default: one per GPU")
    ap.add_argument("--logs", default="runs/slurm/%j")
    ap.add_argument("--cluster", default=None, choices=["slurm", "local", "debug"],
                    help="submitit executor (default: SLURM when sbatch is there); local runs the tasks here")
    ap.add_argument("--wait", action="store_true", help="block until the job ends; exit with its status")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    try:
        import submitit
    except ImportError:
        sys.exit("submitit is not installed: pip install 'undertow[cluster]'")
    ex = submitit.AutoExecutor(folder=args.logs, cluster=args.cluster)
    tasks = args.tasks_per_node or max(args.gpus_per_node, 1)
    ex.update_parameters(
        nodes=args.nodes, tasks_per_node=tasks, gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_gpu, timeout_min=args.time, name="undertow-extract",
        **({"slurm_partition": args.partition} if args.partition else {}),
    )
    job = ex.submit(run_task, [args.config, "--no-progress", *extra])
    print(f"submitted {job.job_id}; logs under {args.logs.replace('%j', str(job.job_id))}", flush=True)
    if args.wait:
        codes = job.results()  # one exit status per task; raises with the task's traceback if one failed
        sys.exit(max(codes))


if __name__ == "__main__":
    main()
