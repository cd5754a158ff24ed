"""Models larger than one GPU: a device map over the decoder layers (accelerate), checked before anything loads.

One *rank* holds one replica of the model, split layer-wise over ``gpus_per_rank``
devices of its node (pipeline-style: layer L runs on the device that holds it,
accelerate's hooks move the hidden states between devices); ranks are
data-parallel over shards, across the nodes (torchrun / SLURM, as for one-GPU
ranks, ``distributed.py``). undertow's forward hooks sit on the real HF modules,
so each hook point's ``acts_BTD`` arrives on the device of its layer; the
engine pools it there and moves the small pooled result to the rank's main
device, and the sink copies it to the host in dataset order.

Only one device computes at a time in a layer-split replica (no pipelining
across micro-batches): a 70B model split over 8 GPUs runs at ~1/8 of the
node's FLOPs per rank; the dry-run's time model accounts for it
(``dryrun.py``). Tensor parallelism would use all 8 at once, but it replaces
the HF modules' forward (the hook sites) and is out of scope.

Device names: ``cuda:N`` (or an int N), ``cpu`` (weights in host RAM, moved in per
forward when a GPU is the main device), ``disk`` (weights memory-mapped from an
offload folder, loaded per forward). On a CPU-only machine ``cpu``/``disk``
groups exercise the same accelerate hooks (tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DeviceError
from ..models.handle import load_model
from ..models.placement import auto_device_map, check_device_map, dispatch, layer_device_map

__all__ = ["DEVICE_MAPS", "ClusterConfig", "load_mapped", "rank_device_map", "rank_devices"]

DEVICE_MAPS = ("none", "auto", "layers")


@dataclass
class ClusterConfig:
    """Where one extraction runs: ranks x devices per rank, and the GPU the dry-run's time model assumes."""

    gpu: str = "H100"
    """GPU model for the dry-run's memory and time estimate (``dryrun.GPUS``: H100, H200, A100-80GB, A100-40GB,
    L40S), or ``cpu``: every device of a rank is the host (CPU ranks with gloo; the dry-run times this machine)."""
    gpus_per_rank: int = 1
    """Devices one model replica is split over (1: the whole model on ``cuda:LOCAL_RANK``)."""
    ranks_per_node: int = 1
    """Data-parallel ranks per node (``torchrun --nproc_per_node``); ranks_per_node x gpus_per_rank <= GPUs of a node."""
    nodes: int = 1
    """Nodes (``torchrun --nnodes`` / SLURM ``--nodes``)."""
    device_map: str = "none"
    """``none`` (one device per rank), ``layers`` (contiguous equal groups of decoder layers over the rank's
    GPUs, ``layer_device_map``) or ``auto`` (accelerate's memory-balanced map)."""

    def __post_init__(self) -> None:
        for name in ("gpus_per_rank", "ranks_per_node", "nodes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise DeviceError(f"cluster.{name} must be a positive integer, got {value!r}")
        if self.device_map not in DEVICE_MAPS:
            raise DeviceError(f"cluster.device_map {self.device_map!r}: use one of {', '.join(DEVICE_MAPS)}")
        if self.gpus_per_rank > 1 and self.device_map == "none":
            raise DeviceError(f"cluster.gpus_per_rank is {self.gpus_per_rank} but device_map is 'none': "
                              "set device_map to 'layers' or 'auto' to split the model over them")

    @property
    def world_size(self) -> int:
        """Data-parallel ranks in all."""
        return self.ranks_per_node * self.nodes

    @property
    def gpus(self) -> int:
        return self.world_size * self.gpus_per_rank



def load_mapped(name_or_path: str, device_map: dict, backend: str = "hf", dtype: str = "float32",
                offload_dir: str | None = None):
    """``load_model`` split over ``device_map``, the map checked before anything is read. Without ``disk``
    entries the map goes to ``from_pretrained`` (``load_model(device_map=...)``: each shard streams to its
    device, no host copy of the replica); with them the model loads to host memory first (the fingerprint
    reads every weight) and accelerate dispatches it, offloading those groups to ``offload_dir``."""
    device_map = check_device_map(device_map, backend=backend)
    if "disk" not in device_map.values():
        return load_model(name_or_path, backend=backend, dtype=dtype, device_map=device_map)
    handle = load_model(name_or_path, backend=backend, dtype=dtype, device="cpu")
    return dispatch(handle, device_map, offload_dir)


def rank_devices(cluster: ClusterConfig, local_rank: int) -> list[str]:
    """The GPUs of local rank ``local_rank``: ``gpus_per_rank`` consecutive ordinals (rank 1 of 2 x 4 GPUs:
    cuda:4-7); ``gpu: cpu`` gives ``gpus_per_rank`` x ``cpu``. Launch ``torchrun --nproc_per_node
    ranks_per_node``; each rank then splits its replica over these (``cluster_rank.py``)."""
    if cluster.gpu == "cpu":
        return ["cpu"] * cluster.gpus_per_rank
    first = local_rank * cluster.gpus_per_rank
    return [f"cuda:{first + i}" for i in range(cluster.gpus_per_rank)]


def rank_device_map(hf_model: torch.nn.Module, cluster: ClusterConfig, local_rank: int) -> dict[str, str] | None:
    """The device map of one rank (None for ``device_map: none``): ``layers`` splits evenly by layer count,
    ``auto`` balances weight bytes with accelerate over the rank's GPUs."""
    devices = rank_devices(cluster, local_rank)
    if cluster.device_map == "none":
        return None
    if cluster.device_map == "layers" or cluster.gpu == "cpu":  # host devices: nothing to balance
        return layer_device_map(hf_model, devices)
    free = {int(d.split(":")[1]): torch.cuda.mem_get_info(int(d.split(":")[1]))[0] for d in devices}
    return auto_device_map(hf_model, free)
