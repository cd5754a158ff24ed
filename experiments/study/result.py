"""Typed results of the probe study, until the edge: results.json, the report and wandb are built from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from undertow.experiments.expressed import ExpressedSummary
from undertow.experiments.report.schema import Roc
from undertow.probes import SweepResult

__all__ = ["ContrastResult", "ExpressedResult", "StudyResult"]

@dataclass
class ContrastResult:
    """One contrast: its store, its sweep and the saved operating-point probe."""

    name: str
    """Contrast name (``undertow.experiments.prompts.contrasts``)."""
    position: str
    """Token position its probe reads."""
    rows: int
    """Rows extracted (after the ``max_rows`` subsample)."""
    lexical_auroc: float | None
    """The in-template test figure's lexical line: TF-IDF + logistic regression fitted on the store's train rows
    (the probes' training rows), AUROC on its test rows (None: one class among them)."""
    probe_dir: str
    """Where the operating-point probe was saved."""
    sweep: SweepResult
    """Every hook x probe type with its controls and CIs."""
    roc: Roc | None = None
    """ROC of the operating-point probe on the test rows."""
    eval_rows: dict[str, int] = field(default_factory=dict)
    """Evaluation / calibration set name -> rows extracted (after ``eval_max_rows``); empty without them."""
    eval_seconds: float = 0.0
    """Seconds spent extracting the evaluation sets (kept out of results.json, which is deterministic)."""

    def to_dict(self) -> dict:
        return {"position": self.position, "rows": self.rows, "lexical_auroc": self.lexical_auroc,
                "probe_dir": self.probe_dir, "sweep": self.sweep.to_dict(), "table_text": self.sweep.format_table(),
                **({"eval_rows": self.eval_rows} if self.eval_rows else {}),
                **({"roc": self.roc.to_dict()} if self.roc is not None else {})}


@dataclass
class ExpressedResult:
    """What the model says: forced-choice answers scored by log-probability."""

    summary: ExpressedSummary
    """Averse rate, mean log-odds, first-listed rate over all items."""
    averse_rate_by_theme: dict[str, float]
    """Theme -> share of items whose averse answer is preferred."""

    def to_dict(self) -> dict:
        return {**self.summary.as_dict(), "averse_rate_by_theme": self.averse_rate_by_theme}


@dataclass
class StudyResult:
    """The whole probe study."""

    meta: dict
    """Model, fingerprint, source, suite hash and size."""
    config: dict
    """The StudyConfig as plain values."""
    contrasts: dict[str, ContrastResult] = field(default_factory=dict)
    """Contrast name -> its result."""
    expressed: ExpressedResult | None = None
    """The forced-choice measurement (None when ``n_expressed`` is 0)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage; kept out of results.json (which is deterministic) and written to timings.json."""

    def to_dict(self) -> dict:
        """The results.json record."""
        out = {"meta": self.meta, "config": self.config,
               "contrasts": {name: c.to_dict() for name, c in self.contrasts.items()}}
        if self.expressed is not None:
            out["expressed"] = self.expressed.to_dict()
        return out
