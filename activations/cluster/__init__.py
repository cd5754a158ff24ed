"""undertow.activations.cluster: one extraction over many devices and ranks, and its cost on paper.

Per-rank device maps for models larger than one GPU (``devicemap``), rank setup and placement
(``rank``), shards split over torchrun / SLURM ranks and merged into one store (``distributed``),
and the dry-run planner: bytes, tokens, time and memory per device before anything loads
(``dryrun``). The top room: imports ``models``, ``engine`` and ``store``; nothing imports it back.
"""

from .devicemap import DEVICE_MAPS, ClusterConfig, load_mapped, rank_device_map, rank_devices
from .distributed import env_from_submitit, rank_shards
from .dryrun import (
    GPUS,
    DryRunError,
    TimeModel,
    load_cluster,
    load_cluster_yaml,
    meta_model,
    model_config_and_tokenizer,
    plan_extraction,
    safetensors_bytes,
)
from .rank import load_rank_model, rank_placement

__all__ = [
    "DEVICE_MAPS", "GPUS", "ClusterConfig", "DryRunError", "TimeModel", "env_from_submitit", "load_cluster",
    "load_cluster_yaml", "load_mapped", "load_rank_model", "meta_model", "model_config_and_tokenizer",
    "plan_extraction", "rank_device_map", "rank_devices", "rank_placement", "rank_shards", "safetensors_bytes",
]
