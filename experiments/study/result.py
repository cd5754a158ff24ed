"""Typed results of the probe study, until the edge: results.json, the report and wandb are built from them."""

from __future__ import annotations

from dataclasses import dataclass, field

from undertow.experiments.expressed import ExpressedSummary
from undertow.probes import SweepResult

__all__ = ["ContrastResult", "ExpressedResult", "StudyResult"]

#: the sweep table's columns that the layer curves plot
CURVE_COLUMNS = ("hook", "probe_type", "test_auroc", "test_auroc_lo", "test_auroc_hi", "shuffled_auroc",
                 "random_auroc_max")


@dataclass
class ContrastResult:
    """One contrast: its store, its sweep and the saved operating-point probe."""

    name: str
    """Contrast name (``undertow.experiments.prompts.contrasts``)."""
    position: str
    """Token position its probe reads."""
    rows: int
    """Rows extracted (after the ``max_rows`` subsample)."""
    lexical_auroc: float
    """TF-IDF baseline AUROC on the same rows (template-grouped CV)."""
    probe_dir: str
    """Where the operating-point probe was saved."""
    sweep: SweepResult
    """Every hook x probe type with its controls and CIs."""

    def operating_row(self) -> dict:
        """The sweep row of the operating point (chosen on validation data)."""
        op = self.sweep.operating_point
        return self.sweep.row(op.hook, op.probe_type)

    def resid_layers(self) -> list[int]:
        """Layers of the ``resid_post.{L}`` hooks, in order."""
        return sorted(int(h.split(".")[1]) for h in self.sweep.hooks if h.startswith("resid_post."))

    def layer_column(self, probe_type: str, column: str) -> list[float]:
        """``column`` of ``probe_type`` over ``resid_layers()``."""
        return [self.sweep.row(f"resid_post.{i}", probe_type)[column] for i in self.resid_layers()]

    def to_dict(self) -> dict:
        return {"position": self.position, "rows": self.rows, "lexical_auroc": self.lexical_auroc,
                "probe_dir": self.probe_dir, "sweep": self.sweep.to_dict(), "table_text": self.sweep.format_table()}


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

    def metrics(self) -> dict[str, float | str]:
        """Flat summary numbers (wandb summary, CLI)."""
        s: dict[str, float | str] = {}
        if self.expressed is not None:
            s.update({f"expressed/{k}": v for k, v in self.expressed.summary.as_dict().items()})
        for name, c in self.contrasts.items():
            row = c.operating_row()
            s.update({f"{name}/test_auroc": row["test_auroc"], f"{name}/lexical_auroc": c.lexical_auroc,
                      f"{name}/operating_hook": row["hook"], f"{name}/probe_type": row["probe_type"]})
        return s

    def curves(self) -> dict[str, list[dict]]:
        """Contrast -> the layer-curve columns of its sweep table."""
        return {name: [{k: r[k] for k in CURVE_COLUMNS} for r in c.sweep.table] for name, c in self.contrasts.items()}

    def to_dict(self) -> dict:
        """The results.json record."""
        out = {"meta": self.meta, "config": self.config,
               "contrasts": {name: c.to_dict() for name, c in self.contrasts.items()}}
        if self.expressed is not None:
            out["expressed"] = self.expressed.to_dict()
        return out
