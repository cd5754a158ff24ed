"""The report in a real headless Chromium: loads with no console error and every figure has drawn."""

from __future__ import annotations

import time

from browser_testutil import open_page, require_chromium

from undertow.experiments.report import build_report

require_chromium(allow_module_level=True)

DRAWN = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
  id: gd.id, traces: (gd._fullData || []).length,
  drawn: gd.querySelectorAll('.main-svg g.trace, .main-svg g.hm image, .main-svg g.heatmaplayer image').length,
  marks: Array.from(gd.querySelectorAll('.main-svg g.trace path, .main-svg g.hm image'))
    .filter(e => e.tagName === 'image' || (e.getAttribute('d') || '').length > 4).length}))"""


def test_report_renders_in_chromium(full_run, tmp_path):
    with open_page(build_report(full_run)) as opened:
        page = opened.page
        n_figs = int(page.get_attribute("body", "data-figures"))
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg g.trace').length >= {n_figs}")
        load_s = time.perf_counter() - opened.started
        plots = page.evaluate(DRAWN)
        page.screenshot(path=str(tmp_path / "report-top.png"))
        page.locator(".js-plotly-plot").first.screenshot(path=str(tmp_path / "report-figure.png"))
        header = page.locator("h2#tables ~ details").first
        header.locator("summary").click()
        # cv_auroc_oof: always a number (test AUROCs from < 10 rows per class are withheld, probes.metrics)
        th = header.locator("th", has_text="cv_auroc_oof").first
        th.click()
        col = page.evaluate("""() => { const t = document.querySelector("h2#tables ~ details table");
          const i = Array.from(t.tHead.rows[0].cells).findIndex(c => c.textContent.startsWith('cv_auroc_oof'));
          return Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[i].dataset.v)); }""")
    assert opened.errors == [] and opened.remote == []  # opens offline: nothing fetched beyond the file
    assert n_figs == 9 and len(plots) == n_figs, plots
    for plot in plots:
        assert plot["traces"] > 0 and plot["drawn"] > 0 and plot["marks"] > 0, plot
    finite = [v for v in col if v == v]
    assert finite == sorted(finite) and len(finite) > 3  # sorted ascending on the first click
    assert (tmp_path / "report-top.png").stat().st_size > 10_000
    assert load_s < 30, load_s
