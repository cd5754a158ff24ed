from __future__ import annotations

import re

from plotly.offline import get_plotlyjs

from undertow.experiments.report import build_report
from undertow.experiments.report.figures import figures
from undertow.experiments.report.schema import load_results


def test_study_report_has_headline_layers_tables_provenance_and_no_absent_sections(run_copy):
    page = build_report(run_copy).read_text()
    r = load_results(run_copy)
    assert page.count(get_plotlyjs()[:200]) == 1 and "<script src" not in page  # inlined once, nothing fetched
    for heading in ("id=probes", "id=roc", "id=expressed", "id=tables", "id=provenance"):
        assert heading in page
    for absent in ("id=arms", "id=sae", "id=generalisation"):
        assert absent not in page
    op = r.contrasts["stance"].op_row()
    assert f"{op['test_auroc']:.3f}" in page and r.meta.fingerprint in page and r.meta.suite_hash in page
    assert "no suppression arms were run" in page
    assert int(re.search(r"data-figures=(\d+)", page).group(1)) == len(figures(r)) == 4  # 2 layer curves, ROC, themes
    assert page.count("<details>") == 4 and page.count("<table class=sortable>") >= 3  # 2 sweeps + theme table
    rows = re.findall(r'<tr class="op">', page)
    assert len(rows) == 2  # each contrast's operating point highlighted


def test_full_report_draws_every_section(full_run):
    page = build_report(full_run).read_text()
    for heading in ("id=arms", "id=roc", "id=generalisation", "id=sae", "id=probes", "id=expressed"):
        assert heading in page
    assert "Yes, in this run: under prompted_equanimity, lora_equanimity" in page
    assert page.index("id=arms") < page.index("id=probes") < page.index("id=roc") < page.index("id=generalisation") \
        < page.index("id=sae") < page.index("id=tables") < page.index("id=provenance")
    assert "class=tok style=\"background:rgba(213,94,0," in page  # active SAE tokens marked
    assert "version: torch" in page
    assert len(page.encode()) < 10e6


def test_page_shows_the_three_aurocs_the_calibrated_threshold_and_the_flags(run_copy):
    """Issue 10: per contrast, the operating point on the independent set beside the in-template test, loudly
    flagged when below chance or its lexical line; the layer figure draws the independent set's curve."""
    page = build_report(run_copy).read_text()
    r = load_results(run_copy)
    assert page.count("Away from the templates") == len(r.contrasts) == 2
    assert "independent AUROC [95% CI]" in page and "1% FPR on control_chat" in page and "TPR at it: independent" in page
    n_flags = sum(len(c.flags) for c in r.contrasts.values())
    assert page.count("<p class=flag>") == n_flags
    for c in r.contrasts.values():
        row = c.op_row()
        assert f"{row['independent_auroc']:.3f} [{row['independent_auroc_lo']:.3f}" in page
        names = [t.name for t in figures(r)[f"layers/{c.name}"].data]
        assert any(n.startswith("independent set") for n in names)
    assert 'title="AUROC on an evaluation set' in page  # the full table's new columns explained on hover
