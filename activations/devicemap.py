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

import tempfile
from dataclasses import dataclass

import torch

from .errors import DeviceError

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


def _device(value) -> str:
    """Normalise one device-map value: ints are CUDA ordinals."""
    if isinstance(value, int):
        return f"cuda:{value}"
    if isinstance(value, torch.device):
        return str(value) if value.index is not None or value.type != "cuda" else "cuda:0"
    value = str(value)
    return "cuda:0" if value == "cuda" else value


_TL_REFUSAL = ("device_map works on backend 'hf' or 'nnsight'; transformer_lens keeps its own copy of the weights "
               "on one device")


def check_device_map(device_map: dict, visible_gpus: int | None = None, backend: str = "hf") -> dict[str, str]:
    """Normalised ``{module: device}``; a device that is not here raises ``DeviceError`` in one line, naming
    the first module placed on it and what is visible (and the transformer_lens backend is refused)."""
    if backend == "transformer_lens":
        raise DeviceError(_TL_REFUSAL)
    visible = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    out = {}
    for module, value in device_map.items():
        dev = _device(value)
        if dev in ("cpu", "disk", "meta"):
            out[module] = dev
            continue
        try:
            parsed = torch.device(dev)
        except (RuntimeError, TypeError):
            raise DeviceError(f"device map puts {module or 'the model'} on {value!r}, which is not a device: "
                              "use cuda:N, an int N, 'cpu' or 'disk'") from None
        if parsed.type != "cuda":
            raise DeviceError(f"device map puts {module or 'the model'} on {dev}: only cuda:N, 'cpu' and 'disk' are supported")
        if parsed.index >= visible:
            seen = f"{visible} CUDA device{'s' if visible != 1 else ''} visible (cuda:0-{visible - 1})" if visible \
                else "no CUDA device visible"
            raise DeviceError(f"device map puts {module or 'the model'} on {dev}, but this machine has {seen}: "
                              "fix the map, or CUDA_VISIBLE_DEVICES")
        out[module] = dev
    return out


def map_main_device(device_map: dict[str, str]) -> str:
    """Where inputs go: the first module's device that computes (``disk`` weights compute on the CPU)."""
    return next((d for d in device_map.values() if d not in ("disk", "meta")), "cpu")


def layer_device_map(hf_model: torch.nn.Module, devices: list[str]) -> dict[str, str]:
    """Contiguous, equal groups of decoder layers over ``devices``; every module before the layers (embeddings)
    and every module without weights (rotary) on the first device, every module after (final norm, lm_head)
    on the last.

    Works on a meta-device model (no weights). Equal layer counts, not equal bytes: in Llama-3.3-70B the
    embedding and the unembedding are 2.1 GB each against 1.7 GB per layer, so the first and last devices
    hold ~1.2 layers more than the others; ``auto`` balances bytes instead."""
    from .hooks import decoder_path

    path = decoder_path(hf_model)
    parent_name, _, list_name = path.rpartition(".")
    n_layers = len(hf_model.get_submodule(path))
    k = len(devices)
    out: dict[str, str] = {}
    seen_layers = False
    for name, module in _leaf_groups(hf_model, parent_name):
        if module is not None and next(module.parameters(), None) is None:
            out[name] = devices[0]  # no weights (rotary embeddings): with the inputs
        elif name == path:
            for i in range(n_layers):
                out[f"{path}.{i}"] = devices[i * k // n_layers]
            seen_layers = True
        else:
            out[name] = devices[-1] if seen_layers else devices[0]
    return out


def _leaf_groups(model: torch.nn.Module, parent: str):
    """Top-level children of ``model``, with the decoder body (``parent``) expanded one level."""
    for name, child in model.named_children():
        if parent and (parent == name or parent.startswith(name + ".")):
            rest = parent[len(name) + 1:]
            yield from ((f"{name}.{n}", c) for n, c in _leaf_groups(child, rest))
        else:
            yield name, child
    for name, _ in model.named_parameters(recurse=False):
        yield name, None


def auto_device_map(hf_model: torch.nn.Module, max_memory: dict) -> dict[str, str]:
    """accelerate's memory-balanced map, never splitting a decoder layer (works on a meta model)."""
    from accelerate import infer_auto_device_map

    no_split = list(getattr(hf_model, "_no_split_modules", None) or [])
    return {k: _device(v) for k, v in infer_auto_device_map(hf_model, max_memory=max_memory,
                                                             no_split_module_classes=no_split).items()}


def dispatch(handle, device_map: dict, offload_dir: str | None = None):
    """Split ``handle``'s HF model over ``device_map`` in place (accelerate hooks); returns the handle, whose
    ``device`` becomes the device of the first module (where inputs go) and ``extra['device_map']`` the map.

    The transformer_lens backend holds converted copies of the weights (TL has its own ``n_devices``), so it
    is refused."""
    from accelerate import dispatch_model

    device_map = check_device_map(device_map, backend=handle.backend)
    if "disk" in device_map.values() and offload_dir is None:
        offload_dir = tempfile.mkdtemp(prefix="undertow-offload-")
    dispatch_model(handle.hf_model, device_map, offload_dir=offload_dir, force_hooks=True)
    handle.device = torch.device(map_main_device(device_map))
    handle.extra["device_map"] = device_map
    return handle


def load_mapped(name_or_path: str, device_map: dict, backend: str = "hf", dtype: str = "float32",
                offload_dir: str | None = None):
    """``load_model`` split over ``device_map``, the map checked before anything is read. Without ``disk``
    entries the map goes to ``from_pretrained`` (``load_model(device_map=...)``: each shard streams to its
    device, no host copy of the replica); with them the model loads to host memory first (the fingerprint
    reads every weight) and accelerate dispatches it, offloading those groups to ``offload_dir``."""
    from .handle import load_model

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
