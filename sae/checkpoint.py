"""Training checkpoints that resume without running anyone's code.

sae-lens' ``SAETrainer`` writes each checkpoint directory itself (``sae_weights.safetensors``,
``cfg.json``, ``sparsity.safetensors``, ``activation_scaler.json`` and ``trainer_state.pt``, a torch
pickle of the optimiser and scheduler state). undertow adds ``undertow_checkpoint.json``, written
atomically *after* those files, listing each one's sha256 and size plus the run's identity. Resume:

1. the newest directory *with* a manifest is the checkpoint (a directory without one was cut off
   mid-write and is skipped);
2. every listed file must match its sha256 (missing, truncated or edited -> ``CheckpointError``);
3. ``trainer_state.pt`` is opened with ``torch.load(weights_only=True)``: tensors, numbers, strings and
   containers only. A crafted pickle (a ``__reduce__`` that calls anything) is refused even when its
   hash was re-listed, before sae-lens' own ``load_trainer_state`` reads the same, verified file.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from sae_lens.constants import TRAINER_STATE_FILENAME

from undertow.core.fileio import atomic_write, sha256_file

from .errors import CheckpointError

MANIFEST = "undertow_checkpoint.json"
FORMAT = "undertow.sae.checkpoint/1"


def write_manifest(path: Path, state: dict) -> None:
    """List every file of checkpoint ``path`` with its sha256; ``state``: tokens seen, identity, ..."""
    files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(path.iterdir()) if p.is_file() and p.name != MANIFEST}
    body = {"format": FORMAT, "files": files, **state}
    atomic_write(path / MANIFEST, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())


def latest(checkpoints_dir: Path) -> Path:
    """The newest complete checkpoint under ``checkpoints_dir`` (by tokens trained)."""
    if not checkpoints_dir.is_dir():
        raise CheckpointError(f"nothing to resume: {checkpoints_dir} does not exist; train without --resume")
    done = [d for d in checkpoints_dir.iterdir() if (d / MANIFEST).is_file()]
    if not done:
        raise CheckpointError(f"nothing to resume: no complete checkpoint (with {MANIFEST}) under {checkpoints_dir}; "
                              "train without --resume")
    return max(done, key=lambda d: read_manifest(d)["n_training_samples"])


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / MANIFEST} is unreadable ({e}); delete {path} and resume from an "
                              "earlier checkpoint") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path / MANIFEST} has format {manifest.get('format')!r}, not {FORMAT}")
    return manifest


def verify(path: Path, identity: dict | None = None) -> dict:
    """Check checkpoint ``path`` (hashes, identity, safe trainer state); returns its manifest."""
    manifest = read_manifest(path)
    for name, entry in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}; delete the directory to resume from an "
                                  "earlier checkpoint, or train without --resume")
        if f.stat().st_size != entry["bytes"] or sha256_file(f) != entry["sha256"]:
            raise CheckpointError(f"checkpoint file {f} is truncated or was modified (sha256 differs from "
                                  f"{MANIFEST}); delete {path} to resume from an earlier checkpoint")
    if TRAINER_STATE_FILENAME not in manifest["files"]:
        raise CheckpointError(f"checkpoint {path} lists no {TRAINER_STATE_FILENAME}; it cannot be resumed")
    if identity is not None:
        for key, value in identity.items():
            if manifest.get("identity", {}).get(key) != value:
                raise CheckpointError(f"checkpoint {path} was written with {key}={manifest.get('identity', {}).get(key)!r}, "
                                      f"this run has {value!r}; resume with the same config or use another out_dir")
    load_trainer_state(path)
    return manifest


def load_trainer_state(path: Path) -> dict:
    """``trainer_state.pt`` through the weights-only unpickler (no code runs); anything else is refused."""
    if os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "0") not in ("", "0"):
        raise CheckpointError("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: it would let checkpoints run code; unset it")
    try:
        return torch.load(path / TRAINER_STATE_FILENAME, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as e:
        reason = str(e).splitlines()[0][:160]
        raise CheckpointError(f"{path / TRAINER_STATE_FILENAME} is not plain tensor state ({reason}); refusing to "
                              "unpickle it: delete this checkpoint and resume from an earlier one") from None
