#!/usr/bin/env bash
# Extract activations on every GPU of one node (or N CPU processes with gloo).
#
#   scripts/launch_torchrun.sh CONFIG [NPROC] [extract options...]
#   scripts/launch_torchrun.sh experiments/configs/extract_gemma_demo.yaml 8
#   scripts/launch_torchrun.sh experiments/configs/extract_gemma_demo.yaml 8 --resume
#   UNDERTOW_DEVICE=cpu OMP_NUM_THREADS=1 scripts/launch_torchrun.sh CONFIG 2     # CPU ranks, gloo
#   scripts/launch_torchrun.sh CONFIG R --cluster experiments/configs/clusters/X.yaml
#       # R = the file's ranks_per_node; each rank splits its replica over gpus_per_rank GPUs
#       # (local rank r takes cuda:r*G .. r*G+G-1; undertow.activations.cluster_rank)
#
# Each rank extracts a contiguous block of shards into the config's out_dir (which
# every rank must be able to write); rank 0 merges the manifests after a barrier.
# Multi-node: run this on each node with NNODES/NODE_RANK/MASTER_ADDR set, or use
# scripts/launch_slurm.py. Logic lives in undertow.activations.distributed.
set -euo pipefail
config=${1:?usage: launch_torchrun.sh CONFIG [NPROC] [extract options...]}
shift
nproc=${1:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
[ $# -gt 0 ] && shift
python=${PYTHON:-python}
if [ "${NNODES:-1}" -gt 1 ]; then
  rdzv=(--nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK}" --master_addr "${MASTER_ADDR:?set MASTER_ADDR}"
        --master_port "${MASTER_PORT:-29500}")
else
  rdzv=(--standalone)
fi
exec "$python" -m torch.distributed.run "${rdzv[@]}" --nproc_per_node "$nproc" \
  -m undertow.experiments.cli extract "$config" "$@"
