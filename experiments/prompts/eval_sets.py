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
                        seed: int = 0) -> list[EvalDataset]:
    """The evaluation and calibration datasets for ``contrast`` (``self_cessation`` or ``stance``).
    ``mwe_source``: a model-written-evals directory; None skips them."""
    out = [EvalDataset("independent", load_independent(contrast), "evaluate")]
    if contrast == "stance" and mwe_source is not None:
        from undertow.experiments.prompts.mwe.load import load_model_written_evals

        items, _ = load_model_written_evals(mwe_source)
        rows = answer_rows(items, per_source=mwe_per_source, seed=seed)
        out.append(EvalDataset("mwe", rows, "evaluate"))
    out.append(EvalDataset("control_chat", load_control_chat(), "calibrate", control_hash()))
    return out
