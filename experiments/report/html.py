"""results.json and a self-contained report.html (inline SVG plots, no JavaScript, no CDN).

A report is a list of sections; each holds paragraphs, tables and layer-curve
charts. The HTML opens offline and diff-reviews well; the JSON is the record.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PALETTE = ("#1b6ca8", "#d1495b", "#66a182", "#edae49", "#8d6a9f", "#555555")


@dataclass
class Series:
    """One line on a chart, optionally with a shaded interval."""

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
    """(header, rows) pairs."""
    charts: list[Chart] = field(default_factory=list)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def svg_chart(chart: Chart, width: int = 640, height: int = 300) -> str:
    """A line chart with CI bands as an inline SVG string."""
    ml, mr, mt, mb = 48, 150, 28, 36
    x0, x1 = min(chart.x), max(chart.x)
    y0, y1 = chart.y_range
    sx = lambda x: ml + (x - x0) / ((x1 - x0) or 1) * (width - ml - mr)  # noqa: E731
    sy = lambda y: mt + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * (height - mt - mb)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="{ml}" y="16" font-size="13" font-weight="bold">{html.escape(chart.title)}</text>']
    for k in range(6):
        y = y0 + k * (y1 - y0) / 5
        out.append(f'<line x1="{ml}" x2="{width - mr}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>'
                   f'<text x="{ml - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    for x in chart.x:
        out.append(f'<text x="{sx(x):.1f}" y="{height - mb + 14}" text-anchor="middle">{x:g}</text>')
    out.append(f'<text x="{(ml + width - mr) / 2}" y="{height - 4}" text-anchor="middle">{html.escape(chart.x_label)}</text>')
    for i, s in enumerate(chart.series):
        color = PALETTE[i % len(PALETTE)]
        pts = [(x, y) for x, y in zip(chart.x, s.y, strict=True) if not math.isnan(y)]
        if s.lo is not None and s.hi is not None:
            band = [(sx(x), sy(h)) for x, h in zip(chart.x, s.hi, strict=True)] + \
                   [(sx(x), sy(lo)) for x, lo in reversed(list(zip(chart.x, s.lo, strict=True)))]
            out.append(f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in band)}" fill="{color}" opacity="0.15"/>')
        dash = ' stroke-dasharray="5,4"' if s.dashed else ""
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} '
                   f'points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)}"/>')
        ly = mt + 14 * i + 6
        out.append(f'<line x1="{width - mr + 10}" x2="{width - mr + 30}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>'
                   f'<text x="{width - mr + 34}" y="{ly + 4}">{html.escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)


def render_html(title: str, sections: list[Section], meta: dict) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f4f4f4}.meta{color:#666;font-size:12px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             "<p class='meta'>" + " &middot; ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in meta.items()) + "</p>"]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in sec.paragraphs]
        for chart in sec.charts:
            parts.append(svg_chart(chart))
        for header, rows in sec.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(out_dir: str | os.PathLike, title: str, results: dict, sections: list[Section]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``report.html`` into ``out_dir`` atomically; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rj, rh = out / "results.json", out / "report.html"
    _atomic_write(rj, json.dumps(results, indent=2, sort_keys=True, default=str, allow_nan=True))
    _atomic_write(rh, render_html(title, sections, results.get("meta", {})))
    return rj, rh
