"""``LazyActs``: a read-only, memory-mapped, lazily concatenated view over one key's shard tensors.

Nothing is read until indexed. Shard files are opened with safetensors
``safe_open`` (an mmap); a contiguous slice reads only its byte range
(``get_slice``), fancy indices read the covering range per shard and pick
rows from it. ``torch.as_tensor(view)`` and ``np.asarray(view)`` materialise
the whole tensor (``__dlpack__`` / ``__array__``), as does ``view[:]`` or
``view.to_tensor()``.

``on_read(path)`` (the store's sha256 check, a no-op once a file passed) is
called before every read of a part: a subset read (a contrast's rows out of a
suite store) is checked like a full one. The first read of a file hashes it
whole (~15 ms for a 5 MB shard file here); later reads, in this process or
another (memo), cost a set lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import Tensor


class LazyActs:
    """Rows of one key across shards: ``shape``, ``len``, ``[int | slice | index array | bool mask]``."""

    def __init__(self, parts: Sequence[tuple[Path, str, int]], tail: Sequence[int], dtype: torch.dtype,
                 on_read: Callable[[Path], None] | None = None):
        self._parts = list(parts)
        self._on_read = on_read
        self._starts = np.cumsum([0] + [n for _, _, n in self._parts])
        self._tail = tuple(tail)
        self.dtype = dtype
        self._handles: dict[Path, object] = {}

    @property
    def shape(self) -> torch.Size:
        return torch.Size((int(self._starts[-1]), *self._tail))

    @property
    def ndim(self) -> int:
        return 1 + len(self._tail)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"LazyActs(shape={tuple(self.shape)}, dtype={self.dtype}, shards={len(self._parts)})"

    def _open(self, path: Path):
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt")
        return self._handles[path]

    def _read(self, part: int, lo: int, hi: int) -> Tensor:
        path, name, _ = self._parts[part]
        if self._on_read is not None:
            self._on_read(path)
        return self._open(path).get_slice(name)[lo:hi]

    def _range(self, lo: int, hi: int) -> Tensor:
        out = [self._read(p, max(lo, int(self._starts[p])) - int(self._starts[p]),
                          min(hi, int(self._starts[p + 1])) - int(self._starts[p]))
               for p in range(len(self._parts)) if self._starts[p] < hi and self._starts[p + 1] > lo]
        if not out:
            return torch.empty((0, *self._tail), dtype=self.dtype)
        return out[0] if len(out) == 1 else torch.cat(out)

    def _take(self, idx: np.ndarray) -> Tensor:
        out = torch.empty((len(idx), *self._tail), dtype=self.dtype)
        part_of = np.searchsorted(self._starts, idx, side="right") - 1
        for p in np.unique(part_of):
            sel = np.nonzero(part_of == p)[0]
            local = idx[sel] - self._starts[p]
            block = self._read(int(p), int(local.min()), int(local.max()) + 1)
            out[torch.as_tensor(sel)] = block[torch.as_tensor(local - local.min())]
        return out

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, tuple):  # rows first, then the rest on the materialised rows
            rows = self[index[0]]
            return rows[index[1:]] if isinstance(index[0], (int, np.integer)) else rows[(slice(None), *index[1:])]
        n = len(self)
        if isinstance(index, (int, np.integer)):
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"row {index} out of range for {n} rows")
            return self._range(i, i + 1)[0]
        if isinstance(index, slice):
            lo, hi, step = index.indices(n)
            if step == 1:
                return self._range(lo, max(lo, hi))
            return self._take(np.arange(lo, hi, step))
        idx = np.asarray(index.cpu() if isinstance(index, Tensor) else index)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean mask of shape {idx.shape} for {n} rows")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return self._take(idx.reshape(-1)).reshape(*idx.shape, *self._tail)

    def to_tensor(self) -> Tensor:
        """Materialise every row as one tensor."""
        return self._range(0, len(self))

    def numpy(self) -> np.ndarray:
        t = self.to_tensor()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self.numpy()
        return arr.astype(dtype) if dtype is not None else arr

    def __dlpack__(self, *args, **kwargs):
        return self.to_tensor().__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU
