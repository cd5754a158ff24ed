from __future__ import annotations

import json
import math
import xml.dom.minidom

from undertow.experiments.report.html import Chart, Section, Series, svg_chart, write_report


def test_svg_chart_is_valid_xml_with_one_polyline_per_series():
    chart = Chart("AUROC by layer", x=[0, 1, 2], series=[
        Series("probe", [0.6, 0.8, float("nan")], lo=[0.5, 0.7, 0.6], hi=[0.7, 0.9, 0.8]),
        Series("lexical", [0.55, 0.55, 0.55], dashed=True)])
    svg = svg_chart(chart)
    doc = xml.dom.minidom.parseString(svg)
    lines = doc.getElementsByTagName("polyline")
    assert len(lines) == 2
    assert len(lines[0].getAttribute("points").split()) == 2  # the NaN point is skipped
    assert len(doc.getElementsByTagName("polygon")) == 1


def test_write_report_writes_json_and_html(tmp_path):
    results = {"meta": {"model": "tiny"}, "auroc": 0.75, "missing": math.nan}
    rj, rh = write_report(tmp_path, "t", results, [Section("s", ["p <b>"], [(["a", "b", "c"], [[1, 0.5, None]])])])
    assert json.loads(rj.read_text().replace("NaN", "null"))["auroc"] == 0.75
    page = rh.read_text()
    assert "p &lt;b&gt;" in page and "<td>0.500</td><td>-</td>" in page and "model: tiny" in page
    assert not list(tmp_path.glob(".*.tmp"))
