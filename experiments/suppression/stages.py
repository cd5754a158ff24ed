"""Stages cached on disk: a killed run redoes only the stage it was in.

Each stage writes one file (JSON, or safetensors for arrays) or one directory
(a peft adapter, an activation store) under the run directory, always by
temp-file + rename, so a file that exists is complete. Activation stores are
the engine's own (resumed from their last complete shard). ``timings.json``
collects wall times and throughput beside results.json: they differ between
runs, so results.json never carries them.

The run directory is locked to one config (``config.json``): a second run
with a different config into it is refused, so a cached stage can never be
one of another design.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from undertow.core.provenance import peak_rss_bytes

from .errors import ExperimentError


def write_json(path: Path, data) -> None:
    """Canonical JSON (sorted keys, 2-space indent, trailing newline), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _peak_rss_gb() -> float | None:
    """The process's peak resident set so far (GB, 1e9 bytes): in timings.json after each stage, so the stage
    that raised a run's peak is the first whose value jumps."""
    peak = peak_rss_bytes()
    return None if peak is None else round(peak / 1e9, 3)


def _same_config(lock: dict, asked: dict, defaults: dict) -> bool:
    """``asked`` equals ``lock``, except that a key ``lock`` lacks may hold its default (nested dicts key by key)."""
    for k in lock.keys() | asked.keys():
        if k not in asked:
            return False
        if k not in lock:
            if not isinstance(defaults, dict) or k not in defaults or asked[k] != defaults[k]:
                return False
        elif isinstance(lock[k], dict) and isinstance(asked[k], dict):
            if not _same_config(lock[k], asked[k], defaults.get(k, {}) if isinstance(defaults, dict) else {}):
                return False
        elif lock[k] != asked[k]:
            return False
    return True


class Stages:
    """The run directory's stage cache."""

    def __init__(self, root: Path, recorded_config: dict, defaults: dict | None = None):
        """``defaults``: the config's defaults, recorded the same way; a field the lock lacks (a run started
        before the field existed) still matches when the run asks for its default."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / "config.json"
        if lock.exists():
            asked = json.loads(json.dumps(recorded_config))
            if not _same_config(json.loads(lock.read_text()), asked, json.loads(json.dumps(defaults or {}))):
                raise ExperimentError(f"{self.root} holds a run of a different config; pass another --out or "
                                      "delete that directory")
        else:
            write_json(lock, recorded_config)
        self.timings_path = self.root / "timings.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.exists() else {}
        self.prefix = ""
        """Where this view's stages live under the run directory (``replicates/<k>/`` for fine-tune seed k)."""
        self.shared: tuple[str, ...] = ()
        """Stage-name prefixes a scoped view reads from the run directory itself (the base model's own stages)."""

    def scoped(self, prefix: str, shared: tuple[str, ...] = ()) -> Stages:
        """A view whose stages live under ``prefix`` except those whose names start with one of ``shared``
        (read and written at the run directory's top); timings.json is the run's one file, keys prefixed."""
        view = copy.copy(self)
        view.prefix, view.shared = prefix.rstrip("/") + "/", tuple(shared)
        return view

    def path(self, name: str) -> Path:
        if self.prefix and not name.startswith(self.shared or ("\0",)):
            return self.root / self.prefix / name
        return self.root / name

    def key(self, name: str) -> str:
        """``name`` as timings.json and the run directory list it."""
        return str(self.path(name).relative_to(self.root))

    def done(self, name: str) -> bool:
        return self.path(name).exists()

    def _timed(self, name: str, compute: Callable):
        t0 = time.perf_counter()
        out = compute()
        extra = out[1] if isinstance(out, tuple) else {}
        self.timings[self.key(name)] = {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_gb": _peak_rss_gb(), **extra}
        write_json(self.timings_path, self.timings)
        return out[0] if isinstance(out, tuple) else out

    def json(self, name: str, compute: Callable[[], dict]) -> dict:
        """Load ``name`` (a .json stage) or compute it; ``compute`` may return (value, timing extras)."""
        p = self.path(name)
        if p.exists():
            return json.loads(p.read_text())
        value = self._timed(name, compute)
        write_json(p, value)
        return json.loads(p.read_text())  # the same floats a resumed run reads back

    def record(self, name: str, cls, compute: Callable):
        """Load ``name`` (a .json stage) as ``cls.from_dict`` or compute it (an instance of ``cls``, or (instance,
        timing extras)); the value handed on is always the one read back from disk."""
        def as_dict():
            out = compute()
            return (out[0].to_dict(), out[1]) if isinstance(out, tuple) else out.to_dict()
        return cls.from_dict(self.json(name, as_dict))

    def arrays(self, name: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Load ``name`` (a .safetensors stage of named arrays) or compute it."""
        p = self.path(name)
        if not p.exists():
            value = self._timed(name, compute)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            save_file({k: np.ascontiguousarray(v) for k, v in value.items()}, str(tmp))
            os.replace(tmp, p)
        return load_file(str(p))

    def directory(self, name: str, build: Callable[[Path], dict | None]) -> Path:
        """A directory stage (e.g. an adapter): ``build(final_path)`` must create it atomically itself."""
        p = self.path(name)
        if not p.exists():
            self._timed(name, lambda: (p, build(p) or {}))
        return p
