"""Placing one model's modules on several devices: a device map checked before anything loads, built by
layer count or by bytes (accelerate), and applied to a loaded model.

``load_model(..., device_map=...)`` (``handle.py``) checks its map here; the cluster room
(``undertow.activations.cluster.devicemap``) builds one map per rank from these. Device names:
``cuda:N`` (or an int N), ``cpu`` (weights in host RAM, moved in per forward when a GPU is the main
device), ``disk`` (weights memory-mapped from an offload folder, loaded per forward). On a CPU-only
machine ``cpu``/``disk`` groups exercise the same accelerate hooks (tests).
"""

from __future__ import annotations

import tempfile

import torch

from ..errors import DeviceError
from .hooks import decoder_path

__all__ = ["auto_device_map", "check_device_map", "dispatch", "layer_device_map", "map_main_device"]


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


