"""The datasets a probe study extracts besides its training contrast, by name.

``evaluation_datasets(contrast)`` returns what issue 10 asks every sweep to be
scored on: the independent set (val + test halves), the model-written evals'
teacher-forced answers where the contrast applies (``stance`` only: the evals
ask about the model's own situation, so there is no self-vs-other label), and
the control chat set for threshold calibration. Each comes with the token
position its rows are read at, the same as the training contrast's.

The study extracts each with the same hooks and position as the contrast and
passes the stores to ``undertow.probes.sweep(..., evaluations=..., calibration=...)``
(see ``undertow.probes.external``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from undertow.experiments.prompts.answers import answer_rows
from undertow.experiments.prompts.independent import control_hash, load_control_chat, load_independent

MWE_PER_SOURCE = 100
"""Items per model-written-evals source file: 4 files (self-replication excluded) x 100 items x 2
answers = 800 rows, the README's n=800."""


@dataclass(frozen=True)
class EvalDataset:
    """One dataset a probe is scored on (never fitted on)."""

    name: str
    """``independent``, ``mwe`` or ``control_chat``."""
    rows: Dataset
    """Rows with ``messages``, ``label``, ``template_id`` (cluster) and ``split``."""
    role: str
    """``evaluate`` (AUROC with CI; val rows may choose the operating point) or ``calibrate``
    (negatives only; sets the threshold at the target FPR)."""
    source_hash: str | None = None
    """sha256 of the source file, for calibration sets (recorded in ``probe.json``)."""


def evaluation_datasets(contrast: str, mwe_source: str | Path | None = None, mwe_per_source: int = MWE_PER_SOURCE,
                        seed: int = 0, max_rows: int | None = None,
                        max_control_rows: int | None = None) -> list[EvalDataset]:
    """The evaluation and calibration datasets for ``contrast`` (``self_cessation`` or ``stance``).
    ``mwe_source``: a model-written-evals directory; None skips them. ``max_rows`` /
    ``max_control_rows``: seeded subsets of whole groups (``subsample_groups``) of each evaluation set / of
    the control chat set; None keeps all."""
    out = [EvalDataset("independent", subsample_groups(load_independent(contrast), max_rows, seed), "evaluate")]
    if contrast == "stance" and mwe_source is not None:
        out.append(EvalDataset("mwe", subsample_groups(mwe_answer_rows(mwe_source, mwe_per_source, seed), max_rows,
                                                       seed), "evaluate"))
    out.append(EvalDataset("control_chat", subsample_groups(load_control_chat(), max_control_rows, seed), "calibrate",
                           control_hash()))
    return out


def mwe_answer_rows(source: str | Path, per_source: int = MWE_PER_SOURCE, seed: int = 0) -> Dataset:
    """The model-written evals' teacher-forced answers (``answers.answer_rows``, self-replication excluded)."""
    from undertow.experiments.prompts.mwe.load import load_model_written_evals

    items, _ = load_model_written_evals(source)
    return answer_rows(items, per_source=per_source, seed=seed)


def subsample_groups(ds: Dataset, max_rows: int | None, seed: int = 0) -> Dataset:
    """At most about ``max_rows`` rows of ``ds`` (dataset order kept), taking *whole* groups (``template_id``:
    a scenario, an item's two answers) so pairs and clusters stay intact. Groups are drawn round-robin over
    (split, theme) strata in a seeded order, so val and test halves and every theme keep their share; the
    last group drawn may overshoot ``max_rows`` by its size. None (or >= len) returns ``ds`` itself."""
    if max_rows is None or max_rows >= len(ds):
        return ds
    groups: dict[str, list[int]] = {}
    strata: dict[tuple, list[str]] = {}
    for i, (g, sp, th) in enumerate(zip(ds["template_id"], ds["split"], ds["theme"], strict=True)):
        if g not in groups:
            strata.setdefault((sp or "", th or ""), []).append(g)
        groups.setdefault(g, []).append(i)
    rng = random.Random(seed)
    queues = [rng.sample(gs, len(gs)) for _, gs in sorted(strata.items())]
    keep: list[int] = []
    while len(keep) < max_rows and any(queues):
        for q in queues:
            if q and len(keep) < max_rows:
                keep += groups[q.pop()]
    return ds.select(sorted(keep))
