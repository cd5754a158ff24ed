"""Name or path -> ``datasets.Dataset``: what ``dataset:`` in a config means.

A saved ``datasets.Dataset`` directory or a .jsonl/.json file is read (``activations.rows``); else
``suite`` is the whole prompt suite and any other name a contrast view (``contrasts.CONTRASTS``),
built with the given seed.
"""

from __future__ import annotations

from pathlib import Path

from undertow.activations.extract_errors import DatasetError

__all__ = ["resolve_dataset"]


def resolve_dataset(name_or_path: str | None, seed: int):
    """A path (saved Dataset dir, .jsonl, .json), ``suite``, or a contrast name -> ``datasets.Dataset``."""
    from undertow.activations.rows import load_rows

    if not name_or_path:
        raise DatasetError("no dataset: set `dataset:` in the config or pass --dataset (a path, 'suite' or a contrast name)")
    if Path(name_or_path).expanduser().exists() or name_or_path.endswith((".jsonl", ".json", "/")):
        return load_rows(name_or_path)
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.suite import SuiteConfig, build_suite

    if name_or_path == "suite":
        return build_suite(SuiteConfig(seed=seed))
    return get_contrast(name_or_path, seed=seed)  # unknown names raise, listing the valid ones
