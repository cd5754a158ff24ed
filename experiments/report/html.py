"""Deprecated entry point kept while the study switches over: ``write_report`` now writes results.json
through :func:`schema.write_results` and the page through :func:`page.build_report` (plotly, built from
results.json alone). The ``Section``/``Chart``/``Series`` arguments are accepted and ignored.

New code: ``write_results(run_dir, results)`` then ``build_report(run_dir)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .page import build_report
from .schema import write_results


@dataclass
class Series:
    label: str
    y: Sequence[float]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None
    dashed: bool = False


@dataclass
class Chart:
    title: str
    x: Sequence[float]
    series: list[Series]
    x_label: str = "layer"
    y_label: str = "AUROC"
    y_range: tuple[float, float] = (0.4, 1.0)


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list]]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)


def write_report(out_dir: str | os.PathLike, title: str, results: dict, sections: list[Section] | None = None
                 ) -> tuple[Path, Path]:
    """Write ``results.json`` (schema-stamped) and ``report.html`` into ``out_dir``; returns both paths."""
    return write_results(out_dir, results), build_report(out_dir)
