"""undertow.activations.models: which models exist and how one is loaded, offline, on any backend.

The registry of embedded models, weight sources (GGUF, safetensors, HF directories, hub ids), the
``ModelHandle`` every other room takes, the three backends (hf, transformer_lens, nnsight), hook names
on a model's real modules, and placing one model over several devices. Imports nothing from the
engine, store or cluster rooms.
"""

from .backends import BACKENDS, to_nnsight, to_transformer_lens
from .cpu_linear import (  # importing it bounds oneDNN's caches
    bound_onednn_caches,
    onednn_available,
    onednn_linears,
)
from .fingerprint import fingerprint
from .handle import ModelHandle, base_model, load_model, resolve_device, resolve_dtype
from .hooks import (
    SITES,
    HookPoint,
    all_hook_names,
    decoder_layers,
    decoder_path,
    hf_site,
    parse_hooks,
    site_attr,
)
from .model_dir import check_model_dir
from .placement import auto_device_map, check_device_map, dispatch, layer_device_map, map_main_device
from .registry import DEFAULT_MODEL, EMBEDDED, ModelSpec
from .sources import load_hf

__all__ = [
    "BACKENDS", "DEFAULT_MODEL", "EMBEDDED", "SITES", "HookPoint", "ModelHandle", "ModelSpec", "all_hook_names",
    "auto_device_map", "base_model", "bound_onednn_caches", "check_device_map", "check_model_dir",
    "decoder_layers", "decoder_path", "dispatch", "fingerprint", "hf_site", "layer_device_map", "load_hf",
    "load_model", "map_main_device", "onednn_available", "onednn_linears", "parse_hooks", "resolve_device",
    "resolve_dtype", "site_attr", "to_nnsight", "to_transformer_lens",
]
