"""One rank of a cluster file: where it runs, its device map, its model (``undertow extract CONFIG --cluster FILE``).

A cluster file (``experiments/configs/clusters/*.yaml``, a ``ClusterConfig``) says nodes x ranks_per_node
data-parallel ranks, each holding one replica split over ``gpus_per_rank`` devices. Launch one process per
rank; each reads torchrun's RANK / LOCAL_RANK / WORLD_SIZE, takes GPUs ``local_rank * gpus_per_rank ...``
(``devicemap.rank_devices``), builds its map on a meta-device copy of the model (config only, no weights),
checks it (a GPU that is not there is one line, before any weight is read), then loads straight onto the
map (``load_mapped``) and extracts its block of shards (``distributed.py``)::

    # Llama-3.3-70B, one node: 1 rank x 8 GPUs
    torchrun --standalone --nproc_per_node 1 -m undertow.experiments.cli extract \\
        experiments/configs/extract_llama-3.3-70b-instruct.yaml \\
        --cluster experiments/configs/clusters/llama-3.3-70b-instruct_1node.yaml
    # the same file, one process without torchrun (a one-rank cluster needs none)
    undertow extract CONFIG --cluster FILE

``WORLD_SIZE`` must equal the file's nodes x ranks_per_node: a launch that disagrees with the file it names
is refused rather than silently splitting the shards another way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import DeviceError
from ..models.placement import check_device_map
from .devicemap import ClusterConfig, rank_device_map, rank_devices


@dataclass
class RankPlacement:
    """Where one rank of a cluster runs."""

    rank: int
    """Global rank (torchrun ``RANK``)."""
    local_rank: int
    """Rank on its node (``LOCAL_RANK``): picks its GPUs."""
    world_size: int
    """Data-parallel ranks in all (``WORLD_SIZE``)."""
    devices: list[str]
    """The rank's devices, in map order; the first is where inputs go and the process group's device."""
    device_map: dict[str, str] | None
    """``{module: device}`` over ``devices`` (checked), or None for one whole-model device."""

    def describe(self) -> str:
        """One line for the log: the rank and where its layers sit."""
        where = f"the whole model on {self.devices[0]}"
        if self.device_map:
            where = ", ".join(f"layers {v[0]}-{v[-1]} on {d}" for d, v in _groups(self.device_map))
        return f"rank {self.rank} of {self.world_size} (local {self.local_rank}): {where}"


def _groups(device_map: dict[str, str]) -> list[tuple[str, list[int]]]:
    """Consecutive runs of decoder layers on one device, in layer order."""
    runs: list[tuple[str, list[int]]] = []
    for name, dev in device_map.items():
        tail = name.rpartition(".")[2]
        if not tail.isdigit():
            continue
        if runs and runs[-1][0] == dev:
            runs[-1][1].append(int(tail))
        else:
            runs.append((dev, [int(tail)]))
    return runs


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise DeviceError(f"{name}={value!r} is not an integer: launch with torchrun or scripts/launch_slurm.py") from None


def rank_placement(model: str, cluster: ClusterConfig, backend: str = "hf", hf_config=None) -> RankPlacement:
    """This process's placement under ``cluster`` (from the torchrun environment; one rank without it).

    Reads the model's config (``hf_config`` overrides it), never its weights; raises ``DeviceError`` in one
    line when the launch disagrees with the file or a device of the map is not on this machine."""
    rank, local, world = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1)
    if world != cluster.world_size:
        raise DeviceError(f"the cluster file asks for {cluster.nodes} node(s) x {cluster.ranks_per_node} rank(s) = "
                          f"{cluster.world_size} ranks but WORLD_SIZE is {world}: launch torchrun --nnodes "
                          f"{cluster.nodes} --nproc_per_node {cluster.ranks_per_node}, or fix the file")
    if local >= cluster.ranks_per_node:
        raise DeviceError(f"LOCAL_RANK {local} but the cluster file has {cluster.ranks_per_node} rank(s) per node: "
                          f"launch torchrun --nproc_per_node {cluster.ranks_per_node}")
    devices = rank_devices(cluster, local)
    if cluster.device_map != "layers":  # one device, or before accelerate asks a missing GPU for its free memory
        for dev in devices:
            check_device_map({"": dev})
    device_map = None
    if cluster.device_map != "none":
        from .dryrun import meta_model, model_config_and_tokenizer

        hf_config = hf_config or model_config_and_tokenizer(model)[0]
        device_map = check_device_map(rank_device_map(meta_model(hf_config), cluster, local), backend=backend)
    return RankPlacement(rank=rank, local_rank=local, world_size=world, devices=devices, device_map=device_map)


def load_rank_model(model: str, placement: RankPlacement, backend: str = "hf", dtype: str = "float32"):
    """The rank's ``ModelHandle``: split over its map (``load_mapped``), or whole on its one device."""
    from ..models.handle import load_model
    from .devicemap import load_mapped

    if placement.device_map is None:
        return load_model(model, backend=backend, dtype=dtype, device=placement.devices[0])
    return load_mapped(model, placement.device_map, backend=backend, dtype=dtype)
