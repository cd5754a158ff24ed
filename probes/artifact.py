"""A trained probe as a safe, checkable artifact: ``probe.safetensors`` + ``probe.json``.

- Weights (``weight``, ``bias``, ``mean``, ``std``; float32) live in safetensors:
  loading parses a JSON header and raw bytes, so a probe from a stranger cannot
  run code (no pickle anywhere; no ``torch.load``).
- ``probe.json`` holds the metadata: model fingerprint, hook, position, probe
  type, threshold, training-data hash, metrics, config, undertow version,
  creation time, the sha256 of the weights file and, last, the sha256 of the
  JSON content itself (canonical form, without that field). ``Probe.load``
  refuses a weights file or JSON that does not match its checksum, and a probe
  trained on a different model fingerprint unless told otherwise.
  The checksums catch corruption and casual edits; they are not a signature
  (anyone can recompute them), so trust still rests on where the file came from.

Scoring convention, shared with the (future) online monitor::

    score(h) = ((h - mean) / std) . weight + bias  ==  h . w_eff + b_eff

``w_eff = weight / std`` and ``b_eff = bias - mean . w_eff`` fold the
normalisation into one projection; ``direction`` is ``w_eff`` normalised.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from undertow.core.fileio import sha256_file
from undertow.core.validate import expect, load_json, safetensors_header

from .errors import ProbeError, ProbeWarning

__all__ = ["Probe", "undertow_version", "hash_training_data", "WEIGHTS_FILE", "META_FILE"]

WEIGHTS_FILE = "probe.safetensors"
META_FILE = "probe.json"
FORMAT = "undertow.probe"
FORMAT_VERSION = 1


def undertow_version() -> str:
    try:
        from importlib.metadata import version

        return version("undertow")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0+unknown"


def hash_training_data(acts_ND: Tensor, labels_N) -> str:
    """sha256 over the float32 training activations and their labels (identifies the training set)."""
    h = hashlib.sha256()
    h.update(acts_ND.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(torch.as_tensor(labels_N).detach().cpu().to(torch.int64).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _canonical(meta: dict) -> bytes:
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None, tensors/numpy scalars -> Python numbers, recursively."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x if isinstance(x, str | int | float | bool | type(None)) else str(x)


@dataclass
class Probe:
    """A linear probe on one hook: ``score = ((h - mean) / std) . weight + bias`` (logit-like)."""

    weight: Tensor
    """[D] weights in standardised coordinates."""
    bias: float
    mean: Tensor
    """[D] normalisation mean (of the training rows)."""
    std: Tensor
    """[D] normalisation std (population std of the training rows; zero-variance dims hold 1)."""
    hook: str
    probe_type: str
    threshold: float = 0.0
    """Decision threshold on the score; ``predict`` is ``score > threshold``."""
    model_fingerprint: str | None = None
    position: str | None = None
    """Which token position(s) the activations came from (e.g. 'last', 'mean')."""
    training_data_hash: str | None = None
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    undertow_version: str = field(default_factory=undertow_version)

    def __post_init__(self) -> None:
        self.weight = torch.as_tensor(self.weight).detach().to("cpu", torch.float32).flatten()
        self.mean = torch.as_tensor(self.mean).detach().to("cpu", torch.float32).flatten()
        self.std = torch.as_tensor(self.std).detach().to("cpu", torch.float32).flatten()
        self.bias, self.threshold = float(self.bias), float(self.threshold)
        d = self.weight.numel()
        if self.mean.numel() != d or self.std.numel() != d:
            raise ProbeError(f"probe tensors disagree on d_model: weight {d}, mean {self.mean.numel()}, "
                             f"std {self.std.numel()}; rebuild the probe from one fit")
        if not bool((self.std > 0).all()):
            raise ProbeError("probe std has zero or negative entries; zero-variance dims must hold std 1")
        if not (torch.isfinite(self.weight).all() and torch.isfinite(self.mean).all() and math.isfinite(self.bias)):
            raise ProbeError("probe weights contain NaN/inf; refit the probe (check the activations for NaN)")

    @property
    def d_model(self) -> int:
        return self.weight.numel()

    @property
    def w_eff(self) -> Tensor:
        """[D] weights in raw activation space (normalisation folded in)."""
        return self.weight / self.std

    @property
    def b_eff(self) -> float:
        """Bias in raw activation space: ``score = h . w_eff + b_eff``."""
        return self.bias - float(torch.dot(self.mean.double(), self.w_eff.double()))

    @property
    def direction(self) -> Tensor:
        """[D] unit vector in raw activation space along which the score increases."""
        w = self.w_eff
        return w / w.norm()

    def score(self, acts_ND: Tensor) -> Tensor:
        """Logit-like score per row, ``[N]`` (or a scalar for a single ``[D]`` vector)."""
        acts = torch.as_tensor(acts_ND)
        if acts.shape[-1] != self.d_model:
            raise ProbeError(f"activations have d_model={acts.shape[-1]} but probe {self.hook!r} expects "
                             f"{self.d_model}; score activations from the same model and hook")
        dtype = acts.dtype if acts.dtype in (torch.float32, torch.float64) else torch.float32
        w = self.w_eff.to(device=acts.device, dtype=dtype)
        return acts.to(dtype) @ w + self.b_eff

    def predict(self, acts_ND: Tensor) -> Tensor:
        """bool per row: ``score > threshold``."""
        return self.score(acts_ND) > self.threshold

    def metadata(self) -> dict:
        return _json_safe({
            "format": FORMAT, "format_version": FORMAT_VERSION, "undertow_version": self.undertow_version,
            "created": self.created, "model_fingerprint": self.model_fingerprint, "hook": self.hook,
            "position": self.position, "probe_type": self.probe_type, "d_model": self.d_model,
            "threshold": self.threshold, "training_data_hash": self.training_data_hash,
            "metrics": self.metrics, "config": self.config, "extra": self.extra,
            "weights_file": WEIGHTS_FILE})

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``probe.safetensors`` and ``probe.json`` atomically (tmp + rename); returns the directory."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight.contiguous(), "bias": torch.tensor([self.bias], dtype=torch.float32),
                   "mean": self.mean.contiguous(), "std": self.std.contiguous()}
        fd, tmp_w = tempfile.mkstemp(dir=out, suffix=".safetensors.tmp")
        os.close(fd)
        save_file(tensors, tmp_w, metadata={"format": FORMAT, "hook": self.hook})
        meta = self.metadata()
        meta["weights_sha256"] = sha256_file(Path(tmp_w))
        meta["metadata_sha256"] = hashlib.sha256(_canonical(meta)).hexdigest()
        fd, tmp_m = tempfile.mkstemp(dir=out, suffix=".json.tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True, allow_nan=False)
        os.replace(tmp_w, out / WEIGHTS_FILE)
        os.replace(tmp_m, out / META_FILE)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, expected_fingerprint: str | None = None,
             allow_fingerprint_mismatch: bool = False) -> Probe:
        """Load and verify a saved probe (checksums, shapes, and the model fingerprint if one is expected)."""
        meta, tensors = _read_verified(Path(directory))
        fp = meta.get("model_fingerprint")
        if expected_fingerprint is not None and fp != expected_fingerprint:
            msg = (f"probe in {directory} was trained on model fingerprint {fp!r} but the current model is "
                   f"{expected_fingerprint!r}")
            if not allow_fingerprint_mismatch:
                raise ProbeError(msg + "; use a probe trained on this model, or pass "
                                 "allow_fingerprint_mismatch=True if you know the activations are compatible")
            warnings.warn(msg + " (allowed by allow_fingerprint_mismatch=True)", ProbeWarning, stacklevel=2)
        if tensors["weight"].numel() != meta.get("d_model"):
            raise ProbeError(f"{directory}: weights have d_model={tensors['weight'].numel()} but probe.json "
                             f"says {meta.get('d_model')}; the artifact is inconsistent, re-save it")
        return cls(weight=tensors["weight"], bias=float(tensors["bias"].reshape(-1)[0]), mean=tensors["mean"],
                   std=tensors["std"], hook=meta["hook"], probe_type=meta["probe_type"],
                   threshold=meta.get("threshold") if meta.get("threshold") is not None else float("nan"),
                   model_fingerprint=fp, position=meta.get("position"),
                   training_data_hash=meta.get("training_data_hash"), metrics=meta.get("metrics") or {},
                   config=meta.get("config") or {}, extra=meta.get("extra") or {}, created=meta.get("created", ""),
                   undertow_version=meta.get("undertow_version", ""))


_META_FIELDS = {"format_version": int, "hook": str, "probe_type": str, "d_model": int,
                "threshold": (float, type(None)), "position": (str, type(None)),
                "model_fingerprint": (str, type(None)), "training_data_hash": (str, type(None)),
                "metrics": (dict, type(None)), "config": (dict, type(None)), "extra": (dict, type(None)),
                "created": (str, type(None)), "undertow_version": (str, type(None))}
_TENSORS = ("weight", "bias", "mean", "std")
_FIX = "re-download or re-train the probe"


def _read_verified(directory: Path) -> tuple[dict, dict[str, Tensor]]:
    """Metadata and tensors of a saved probe, every field type-checked and both checksums verified; any
    problem is one ``ProbeError`` naming the file, the field and the fix (``core.validate``)."""
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise ProbeError(f"{directory} is not a saved probe (needs {META_FILE} and {WEIGHTS_FILE}); "
                         "save one with Probe.save(dir)")
    meta = load_json(meta_path, ProbeError, f"the file is corrupted, {_FIX}")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ProbeError(f"{meta_path} is not an undertow probe (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    expect(meta.get("format_version"), int, "format_version", str(meta_path), ProbeError, _FIX)
    if meta["format_version"] > FORMAT_VERSION:
        raise ProbeError(f"{meta_path} has format_version {meta['format_version']}; upgrade undertow to load it")
    want = meta.get("metadata_sha256")
    try:
        got = hashlib.sha256(_canonical(meta)).hexdigest()
    except ValueError:  # NaN / Infinity: Python's json reads them, but a saved probe never holds one
        raise ProbeError(f"{meta_path} holds a non-finite number (NaN or Infinity), which a saved probe never "
                         f"does: it was edited or corrupted; {_FIX}") from None
    if want != got:
        raise ProbeError(f"{meta_path} does not match its metadata_sha256 (recorded {want}, computed {got}): "
                         "it was edited or corrupted; re-download or re-train the probe")
    for name, kinds in _META_FIELDS.items():
        expect(meta.get(name), kinds, name, str(meta_path), ProbeError, _FIX)
    want, got = meta.get("weights_sha256"), sha256_file(weights_path)
    if want != got:
        raise ProbeError(f"{weights_path} does not match the weights_sha256 in {META_FILE} (recorded {want}, "
                         f"computed {got}): it was modified or corrupted; re-download or re-train the probe")
    header = safetensors_header(weights_path, ProbeError, _FIX)
    bad = [n for n in _TENSORS if n not in header or header[n]["dtype"] != "F32" or len(header[n]["shape"]) != 1]
    if bad:
        raise ProbeError(f"{weights_path}: tensors {bad} are missing or not 1-D float32; the artifact is "
                         f"incomplete, {_FIX}")
    return meta, load_file(weights_path)
