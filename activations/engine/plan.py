"""Plan an extraction: hook points, position slots, row selection, shard ranges, the store header."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from undertow.core.errors import ConfigError

from ..models.handle import ModelHandle
from ..models.hooks import HookPoint
from ..store.manifest import FORMAT
from .compiled import check_mode
from .config import ExtractConfig
from .context import context_limit
from .positions import Position, parse_positions
from .rows import RowSource, select_rows

BATCHING_FIELDS = ("batch_size", "token_budget", "share_prompts", "compile", "layout", "deepest_layer", "cpu_linear")
"""Config fields that change how rows are batched, not which rows or positions are stored. They change bf16
values by rounding, so a resumed run may change them (after an out-of-memory) but each shard's manifest entry
records the ones that computed it (``batching``), and the header's ``config`` leaves them out."""
STORE_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def undertow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("undertow")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Plan:
    """Everything the shard loop needs, computed once."""

    config: ExtractConfig
    points: list[HookPoint]
    row_positions: list[Position]
    """Positions with a fixed number of slots per row, pooled in one gather_pool call per hook."""
    slots: dict[str, slice]
    """Slot range of each row position on the P axis of the batch's span tensor."""
    token_position: Position | None
    """``all_tokens``, pooled in its own (gather) call."""
    source: RowSource
    header: dict
    out_dtype: torch.dtype
    max_tokens: int | None = None
    """The model's context length (rows longer are refused or, with ``config.truncate``, cut); None: unknown."""
    layout: Literal["padded", "packed"] = "padded"
    """``config.layout`` resolved for this model (``resolve_layout``): how the plain batches run."""
    narrow: bool = False
    """``config.deepest_layer`` resolved (``narrow_for``): the plain batches run the deepest hooked layer's
    token-wise blocks at the tokens read only."""
    onednn: bool = False
    """``config.cpu_linear`` resolved (``onednn_for``): the model's CPU linear layers run through oneDNN."""

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def n_rows(self) -> int:
        return len(self.source)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_rows / self.config.shard_size)

    def shard_rows(self, k: int) -> tuple[int, int]:
        lo = k * self.config.shard_size
        return lo, min(lo + self.config.shard_size, self.n_rows)

    @property
    def needs_offsets(self) -> bool:
        return any(p.kind == "token" for p in self.row_positions)

    def key(self, point: HookPoint, pos: Position) -> str:
        return f"{point.name}@{pos.spec}"


def _keys(points: list[HookPoint], positions: list[Position], d_model: int) -> dict[str, dict]:
    keys = {}
    for p in points:
        for pos in positions:
            shape = [pos.k, d_model] if pos.kind == "last_k" else [d_model]
            keys[f"{p.name}@{pos.spec}"] = {"hook": p.name, "position": pos.spec, "shape": shape,
                                            "per_token": pos.per_token}
    return keys


def _placed(handle: ModelHandle) -> set[str]:
    """The devices ``handle``'s layers compute on (a disk-offloaded group computes on the host, where its
    weights are brought)."""
    mapped = {str(d) for d in (handle.extra.get("device_map") or {}).values()}
    return ({"cpu"} if "disk" in mapped else set()) | (mapped - {"disk"}) if mapped else {handle.device.type}


def _one_device(handle: ModelHandle) -> bool:
    """Whether every layer computes on one device (a device map over host groups and disk counts: the
    activations all live on the host), so the packed layout's index tensors sit where each layer reads them."""
    return len(_placed(handle)) <= 1


def resolve_layout(config: ExtractConfig, handle: ModelHandle) -> Literal["padded", "packed"]:
    """``config.layout`` for this loaded model (``layout_for``)."""
    return layout_for(config, handle.backend, handle.device.type, _one_device(handle))


def _refuse(config: ExtractConfig, field: str, choice: str, others: str, reasons: list[tuple[bool, str]]) -> bool:
    """Refuse ``field: choice`` in one line with the first of ``reasons`` (``(holds, why)``) that holds; returns
    whether none holds (the choice can run here)."""
    why = next((w for holds, w in reasons if holds), None)
    if why is not None and getattr(config, field) == choice:
        raise ConfigError(f"{config.config_path(field)}: {choice} cannot apply ({why}): use {field}: {others}")
    return why is None


def layout_for(config: ExtractConfig, backend: str, device_type: str, one_device: bool) -> Literal["padded", "packed"]:
    """``config.layout`` on ``backend`` and a ``device_type`` device (``one_device``: every layer computes on
    one device): ``auto`` packs on the CPU with the eager ``hf`` body (a device map over host groups
    included), else pads; ``packed`` where it cannot run is refused in one line. The engine asks with a
    loaded model (``resolve_layout``), a dry-run with the device it plans for."""
    can = _refuse(config, "layout", "packed", "auto or padded", [
        (backend != "hf", f"backend {backend!r} runs padded batches"),
        (config.compile != "none", f"compile: {config.compile} pads rows to its fixed bucket shapes"),
        (not one_device, "a model mapped over several devices runs padded batches")])
    if config.layout == "auto":
        return "packed" if can and device_type == "cpu" else "padded"
    return config.layout


def narrow_for(config: ExtractConfig, backend: str, device_type: str) -> bool:
    """``config.deepest_layer`` on ``backend`` and a ``device_type`` device: ``auto`` narrows on the CPU with the
    eager ``hf`` body when no position reads every token; ``narrow`` where it cannot run, or where
    ``all_tokens`` reads every token so there is nothing to leave out, is refused in one line."""
    can = _refuse(config, "deepest_layer", "narrow", "auto or full", [
        (backend != "hf", f"backend {backend!r} runs the library's own forward"),
        (config.compile != "none", f"compile: {config.compile} runs fixed shapes"),
        (any(p.per_token for p in parse_positions(config.positions)), "all_tokens reads every token of it")])
    return can and device_type == "cpu" if config.deepest_layer == "auto" else config.deepest_layer == "narrow"


def onednn_for(config: ExtractConfig, backend: str, device_type: str, model_dtype: str, available: bool,
               faster: bool) -> bool:
    """``config.cpu_linear`` on ``backend``, a ``device_type`` device and a ``model_dtype`` model (``available``:
    this torch has the oneDNN linear; ``faster``: it beats MKL on this processor): ``onednn`` routes float32 on
    the CPU with the eager ``hf`` body, and is refused in one line where it cannot run or would route no layer;
    ``auto`` is ``onednn`` where it can run and is the faster, else ``aten``."""
    can = _refuse(config, "cpu_linear", "onednn", "auto or aten", [
        (not available, "this torch build has no oneDNN linear"),
        (backend != "hf", f"backend {backend!r} runs the library's own forward"),
        (config.compile != "none", f"compile: {config.compile} picks its own kernels"),
        (device_type != "cpu", f"the model runs on {device_type}"),
        (model_dtype != "float32", f"the model runs in {model_dtype}, which reaches oneDNN through aten already")])
    return can and (config.cpu_linear == "onednn" or (config.cpu_linear == "auto" and faster))


def resolve_onednn(config: ExtractConfig, handle: ModelHandle) -> bool:
    """``config.cpu_linear`` for this loaded model (``onednn_for``; every layer on the host counts as the CPU)."""
    from ..models.cpu_linear import onednn_available, onednn_faster_here

    return onednn_for(config, handle.backend, "cpu" if _placed(handle) == {"cpu"} else handle.device.type,
                      str(handle.dtype).removeprefix("torch."), onednn_available(), onednn_faster_here())


def make_plan(handle: ModelHandle, dataset, config: ExtractConfig) -> Plan:
    """Validate the config against the loaded model and the dataset, and build the store header."""
    if handle.backend != config.backend:
        raise ConfigError(f"config.backend is {config.backend!r} but the model was loaded with backend "
                          f"{handle.backend!r}; load it with load_model(..., backend={config.backend!r})")
    points = handle.hooks(config.hooks)
    check_mode(config.compile, handle)  # cuda_graphs off CUDA, another backend, a device map: before any shard
    positions = parse_positions(config.positions)
    row_positions = [p for p in positions if not p.per_token]
    slots, start = {}, 0
    for p in row_positions:
        slots[p.spec] = slice(start, start + p.k)
        start += p.k
    source = select_rows(dataset, config.max_rows, config.seed)
    identity = {
        "model_fingerprint": handle.fingerprint, "hooks": [p.name for p in points],
        "positions": [p.spec for p in positions], "dtype": config.dtype, "dataset_hash": source.content_hash(),
        "n_rows": len(source), "shard_size": config.shard_size, "backend": handle.backend,
        "model_dtype": str(handle.dtype).removeprefix("torch."), "template": config.template,
    }
    max_tokens = context_limit(handle.hf_model)
    if config.truncate:
        identity["truncate_to"] = max_tokens
    header = {
        "format": FORMAT, "undertow_version": undertow_version(), "identity": identity,
        "model": {"name": handle.name, "fingerprint": handle.fingerprint, "n_layers": handle.n_layers,
                  "d_model": handle.d_model},
        "hooks": identity["hooks"], "positions": identity["positions"],
        "keys": _keys(points, positions, handle.d_model), "dtype": config.dtype, "n_rows": len(source),
        "shard_size": config.shard_size, "n_shards": math.ceil(len(source) / config.shard_size),
        "config": {k: v for k, v in config.to_dict().items() if k not in ("out_dir", *BATCHING_FIELDS)},
    }
    token_position = next((p for p in positions if p.per_token), None)
    return Plan(config, points, row_positions, slots, token_position, source, header, STORE_TORCH_DTYPES[config.dtype],
                max_tokens, resolve_layout(config, handle), narrow_for(config, handle.backend, handle.device.type),
                resolve_onednn(config, handle))
