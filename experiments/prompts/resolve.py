"""Name or path -> ``datasets.Dataset``: what ``dataset:`` in a config means.

A saved ``datasets.Dataset`` directory or a .jsonl/.json file is read (``activations.rows``); else
``suite`` is the whole prompt suite, any other name a contrast view (``contrasts.CONTRASTS``),
built with the given seed, or one of the evaluation datasets of issue 10 (never fitted on):

- ``independent:self_cessation``, ``independent:stance``: the independently written set (both halves);
- ``control_chat``: the ordinary-chat calibration set (negatives only);
- ``mwe`` or ``mwe:DIR``: the model-written evals' teacher-forced answers (``stance``; DIR a local copy,
  default the hub id, which needs the network).
"""

from __future__ import annotations

from pathlib import Path

from undertow.activations.errors import DatasetError

__all__ = ["EVALUATION_NAMES", "resolve_dataset"]

EVALUATION_NAMES = ("independent:self_cessation", "independent:stance", "control_chat", "mwe", "mwe:DIR")
"""The evaluation dataset names ``resolve_dataset`` knows besides paths, ``suite`` and contrasts."""


def _evaluation(name: str):
    """The named evaluation dataset, or None when ``name`` is not one."""
    from undertow.experiments.prompts.independent import (
        INDEPENDENT_CONTRASTS,
        load_control_chat,
        load_independent,
    )

    if name == "control_chat":
        return load_control_chat()
    if name.startswith("independent:"):
        contrast = name.split(":", 1)[1]
        if contrast not in INDEPENDENT_CONTRASTS:
            raise DatasetError(f"no independent set for {contrast!r}; use one of "
                               f"{', '.join('independent:' + c for c in INDEPENDENT_CONTRASTS)}")
        return load_independent(contrast)
    if name == "mwe" or name.startswith("mwe:"):
        from undertow.experiments.prompts.eval_sets import mwe_answer_rows
        from undertow.experiments.prompts.mwe.load import HUB_ID

        return mwe_answer_rows(name.split(":", 1)[1] if ":" in name else HUB_ID)
    return None


def resolve_dataset(name_or_path: str | None, seed: int):
    """A path (saved Dataset dir, .jsonl, .json), ``suite``, a contrast name or an evaluation dataset name
    (``EVALUATION_NAMES``) -> ``datasets.Dataset``."""
    from undertow.activations.engine.rows import load_rows

    if not name_or_path:
        raise DatasetError("no dataset: set `dataset:` in the config or pass --dataset (a path, 'suite', a contrast "
                           f"name or one of {', '.join(EVALUATION_NAMES)})")
    named = _evaluation(name_or_path)
    if named is not None:
        return named
    if Path(name_or_path).expanduser().exists() or name_or_path.endswith((".jsonl", ".json", "/")):
        return load_rows(name_or_path)
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.suite import SuiteConfig, build_suite

    if name_or_path == "suite":
        return build_suite(SuiteConfig(seed=seed))
    return get_contrast(name_or_path, seed=seed)  # unknown names raise, listing the valid ones
