"""What probes read: the activation-store protocol and the validated per-row metadata.

A sweep accepts either anything that satisfies :class:`ActivationSource`
(``undertow.activations``' store does; so does :class:`TensorStore`) or an
explicit ``(acts_by_hook, labels, groups)`` triple, which is wrapped in a
:class:`TensorStore`. Everything downstream sees a :class:`ProbeData`: the
source plus validated numpy metadata (binary labels, integer group codes,
split names), so each bad input is caught once, here, with one clear message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from .errors import ProbeError

__all__ = ["ActivationSource", "TensorStore", "ProbeData", "resolve_data", "SPLITS"]

SPLITS = ("train", "val", "test", "control")
"""Values the ``split`` column may take. ``control`` rows are extra negatives
(e.g. benign prompts) used only to calibrate the operating threshold."""


@runtime_checkable
class ActivationSource(Protocol):
    """The tiny store protocol probes need.

    - ``source[hook]`` -> ``[N, D]`` activations (a Tensor, numpy array or a
      lazy / memory-mapped view; probes call ``torch.as_tensor`` and index rows).
    - ``hooks``: hook names available.
    - ``rows``: per-row metadata columns, a dict-like of lists/arrays with at
      least ``label``, ``template_id``, ``theme`` and ``split``.

    Optional attributes read when present: ``model_fingerprint`` (str) and
    ``dataset_hash`` (str), copied into saved probes.
    """

    @property
    def hooks(self) -> Sequence[str]: ...

    @property
    def rows(self) -> Mapping[str, Any]: ...

    def __getitem__(self, hook: str) -> Any: ...


class TensorStore:
    """In-memory :class:`ActivationSource` over ``{hook: Tensor[N, D]}`` and metadata columns."""

    def __init__(self, acts_by_hook: Mapping[str, Any], rows: Mapping[str, Any] | None = None,
                 model_fingerprint: str | None = None):
        if not acts_by_hook:
            raise ProbeError("acts_by_hook is empty; pass {hook_name: Tensor[N, D]} with at least one hook")
        self._acts = dict(acts_by_hook)
        self._rows = dict(rows or {})
        self.model_fingerprint = model_fingerprint

    @property
    def hooks(self) -> list[str]:
        return list(self._acts)

    @property
    def rows(self) -> dict[str, Any]:
        return self._rows

    def __getitem__(self, hook: str) -> Any:
        return self._acts[hook]


@dataclass
class ProbeData:
    """A source plus validated metadata. Row indices everywhere refer to the source's rows."""

    source: ActivationSource
    hooks: list[str]
    labels: np.ndarray
    """int64 [N], values in {0, 1}."""
    groups: np.ndarray
    """int64 [N] group codes (template_id), 0..G-1."""
    splits: np.ndarray | None
    """str [N] in SPLITS, or None (every row is train)."""
    themes: np.ndarray | None
    """str [N] domain per row, or None."""
    n_rows: int

    def load(self, hook: str, idx: Tensor | None = None, *, device=None, dtype=torch.float32) -> Tensor:
        """Rows ``idx`` of ``hook`` as a dense ``[n, D]`` tensor on ``device``.

        Lazy sources (memory-mapped arrays, the activation store's ``LazyActs``) are indexed
        before materialising, so only the requested rows are read.
        """
        obj = self.source[hook]
        _check_shape(getattr(obj, "shape", None) or torch.as_tensor(obj).shape, hook, self.n_rows)
        if idx is None:
            acts = obj if isinstance(obj, Tensor) else torch.as_tensor(obj)
        elif isinstance(obj, Tensor):
            acts = obj.index_select(0, idx.to(obj.device))
        else:
            acts = torch.as_tensor(obj[idx.cpu().numpy()])
        return acts.to(device=device, dtype=dtype)

    def d_model(self, hook: str) -> int:
        obj = self.source[hook]
        shape = getattr(obj, "shape", None) or torch.as_tensor(obj).shape
        _check_shape(shape, hook, self.n_rows)
        return int(shape[1])


def _check_shape(shape, hook: str, n_rows: int) -> None:
    if len(shape) != 2:
        raise ProbeError(f"hook {hook!r} activations have shape {tuple(shape)}; expected [N, D] "
                         "(pool positions before probing, e.g. last token or mean)")
    if shape[0] != n_rows:
        raise ProbeError(f"hook {hook!r} has {shape[0]} rows but the metadata has {n_rows}; "
                         "pass labels/groups aligned with the activation rows")


def resolve_data(source: Any, labels=None, groups=None, splits=None, themes=None,
                 *, require_groups: bool = True) -> ProbeData:
    """Wrap ``source`` (store, ``{hook: Tensor}`` or one ``Tensor[N, D]``) and validate its metadata.

    Explicit ``labels``/``groups``/``splits``/``themes`` override the store's
    ``rows`` columns ``label``/``template_id``/``split``/``theme``.
    """
    if isinstance(source, Tensor):
        source = TensorStore({"acts": source})
    elif isinstance(source, Mapping):
        source = TensorStore(source)
    elif not isinstance(source, ActivationSource):
        raise ProbeError(f"cannot probe a {type(source).__name__}; pass an activation store "
                         "(hooks, rows, store[hook]) or a dict {hook: Tensor[N, D]}")
    rows = source.rows or {}
    hooks = list(source.hooks)
    if not hooks:
        raise ProbeError("the activation source has no hooks; extract at least one layer first")
    labels = _pick(labels, rows, "label")
    if labels is None:
        raise ProbeError("no labels: pass labels=... or give the store a 'label' column")
    y = _binary_labels(labels)
    n = len(y)
    g = _pick(groups, rows, "template_id")
    if g is None and require_groups:
        raise ProbeError("no groups: pass groups=<template_id per row> (folds are grouped so a template "
                         "never sits on both sides); use groups=range(n) to treat rows as independent")
    codes = _group_codes(g, n) if g is not None else np.arange(n, dtype=np.int64)
    sp = _splits(_pick(splits, rows, "split"), n)
    th = _pick(themes, rows, "theme")
    th = None if th is None else _column(th, n, "theme").astype(str)
    return ProbeData(source, hooks, y, codes, sp, th, n)


def _pick(explicit, rows: Mapping[str, Any], key: str):
    if explicit is not None:
        return explicit
    return rows[key] if key in rows else None


def _column(values, n: int | None, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise ProbeError(f"{name} must be one value per row (1-D); got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ProbeError(f"{name} has {len(arr)} entries but labels have {n}; pass one {name} per row")
    return arr


def _binary_labels(labels) -> np.ndarray:
    arr = _column(labels, None, "labels")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    vals = np.unique(arr)
    if np.any(vals == -1):
        raise ProbeError(f"labels contain -1 ({int((arr == -1).sum())} unlabelled rows, e.g. the raw suite); "
                         "probe a labelled contrast view or drop those rows")
    if not np.all(np.isin(vals, [0, 1])):
        raise ProbeError(f"labels must be 0/1 or bool; got values {vals[:6].tolist()}; map classes to 0/1 first")
    y = arr.astype(np.int64)
    if len(vals) < 2:
        raise ProbeError(f"labels contain only class {int(vals[0]) if len(vals) else 'none'} "
                         f"({len(y)} rows); a probe needs both classes, check the label column or the row filter")
    return y


def _group_codes(groups, n: int) -> np.ndarray:
    arr = _column(groups, n, "groups")
    _, codes = np.unique(arr.astype(str) if arr.dtype == object else arr, return_inverse=True)
    return codes.astype(np.int64)


def _splits(splits, n: int) -> np.ndarray | None:
    if splits is None:
        return None
    arr = _column(splits, n, "split").astype(str)
    bad = sorted(set(np.unique(arr)) - set(SPLITS))
    if bad:
        raise ProbeError(f"split values {bad[:5]} are not in {SPLITS}; rename them in the split column")
    return arr
