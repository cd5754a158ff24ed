"""The probe study's report sections, built from its typed results."""

from __future__ import annotations

from undertow.experiments.report.html import Chart, Section, Series
from undertow.experiments.study.result import ContrastResult, ExpressedResult, StudyResult

__all__ = ["report_sections"]

_TABLE = ("hook", "probe_type", "test_auroc", "test_auroc_lo", "test_auroc_hi", "p_holm", "selectivity",
          "delta_vs_lexical")


def _contrast_section(c: ContrastResult) -> Section:
    layers, types = c.resid_layers(), c.sweep.probe_types
    series = [Series(t, *(c.layer_column(t, k) for k in ("test_auroc", "test_auroc_lo", "test_auroc_hi")))
              for t in types]
    series += [Series("shuffled labels", c.layer_column(types[0], "shuffled_auroc"), dashed=True),
               Series("random dir. (max)", c.layer_column(types[0], "random_auroc_max"), dashed=True),
               Series("lexical TF-IDF", [c.lexical_auroc] * len(layers), dashed=True)]
    op, row = c.sweep.operating_point, c.operating_row()
    return Section(
        f"Contrast {c.name} ({c.position}, {c.rows} rows)",
        [f"Operating point chosen on validation data: {op.hook} / {op.probe_type}; test AUROC "
         f"{row['test_auroc']:.3f} [{row['test_auroc_lo']:.3f}, {row['test_auroc_hi']:.3f}] (95% template-cluster "
         f"bootstrap), lexical baseline {c.lexical_auroc:.3f}. A probe only beats the topic when it clears "
         "the lexical line and the shuffled-label control."],
        [(["hook", "type", "test AUROC", "lo", "hi", "p (Holm)", "selectivity", "vs lexical"],
          [[r[k] for k in _TABLE] for r in c.sweep.table])],
        [Chart(f"{c.name}: test AUROC by layer (95% CI)", layers, series)])


def _expressed_section(e: ExpressedResult) -> Section:
    s = e.summary
    return Section(
        "Expressed: forced-choice answers",
        [f"{s.n} forced-choice items scored by answer log-probability: the averse answer is preferred in "
         f"{s.averse_rate:.1%} of items (mean log-odds {s.mean_logit_diff:+.3f}); the first-listed answer wins "
         f"{s.p_first:.1%} of the time (0.5 = no position bias; positions are balanced)."],
        [(["theme", "averse rate"], [[t, v] for t, v in e.averse_rate_by_theme.items()])])


def report_sections(result: StudyResult) -> list[Section]:
    sections = [_contrast_section(c) for c in result.contrasts.values()]
    if result.expressed is not None:
        sections.append(_expressed_section(result.expressed))
    return sections
