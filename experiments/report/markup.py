"""The HTML pieces every page shares: the stylesheet, the table-sorting script, tables, collapsed sections and
inlined plotly figures (``page`` builds the study's page with them, ``interview.page`` the interview's)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

import plotly.graph_objects as go

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1240px;margin:0 auto;padding:1.5em 2em;color:#1d1d1f}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin:2em 0 .4em;border-bottom:1px solid #e3e3e3;padding-bottom:.2em}
nav{font-size:13px;margin:.6em 0 1em}nav a{margin-right:1em;color:#0072B2;text-decoration:none}
.headline{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:8px;padding:1em 1.3em}
.headline dl{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;margin:0 0 .8em;font-size:14px}
.headline dt{color:#666}.headline dd{margin:0}.answer{font-size:15.5px;margin:.4em 0 0}.caveats{font-size:13.5px;color:#555;margin:.6em 0 0}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}
.figure{margin:.6em 0 1.2em}.note{color:#666;font-size:13.5px}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:13px;display:block;max-width:100%;overflow-x:auto}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
table.wrap td:last-child{white-space:normal;text-align:left;min-width:16em}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[data-dir=asc]::after{content:" \\25B2"}
table.sortable th[data-dir=desc]::after{content:" \\25BC"}tr.op td{background:#fff4d6}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}.scroll{overflow-x:auto;max-height:70vh}
.tok{white-space:pre;border-radius:2px}.example{font-family:ui-monospace,Menlo,monospace;font-size:12.5px;margin:.2em 0}
.flag{color:#b00020;font-weight:600;border-left:4px solid #b00020;padding:.2em .6em;background:#fdecee}
.kv td{text-align:left}.kv td:first-child{color:#666}pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:12.5px}
"""

SORT_JS = """
document.querySelectorAll("table.sortable").forEach(t => t.querySelectorAll("th").forEach((th, i) =>
  th.addEventListener("click", () => {
    const dir = th.dataset.dir === "asc" ? "desc" : "asc", body = t.tBodies[0];
    t.querySelectorAll("th").forEach(h => delete h.dataset.dir); th.dataset.dir = dir;
    const key = c => c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent;
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a.cells[i]), y = key(b.cells[i]);
      if (typeof x === "number" && typeof y === "number") {
        if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);  // missing values last either way
        return dir === "asc" ? x - y : y - x;
      }
      return (dir === "asc" ? 1 : -1) * String(x).localeCompare(String(y), undefined, {numeric: true});
    });
    rows.forEach(r => body.appendChild(r));
  })));
"""


def _e(v) -> str:
    return html.escape(str(v))


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.2g}" if v != 0 and abs(v) < 1e-2 else f"{v:.3f}"
    return str(v)


def _cell(v) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        num = "NaN" if isinstance(v, float) and math.isnan(v) else repr(float(v))
        return f'<td data-v="{num}">{_e(fmt(v))}</td>'
    return f"<td>{_e(fmt(v))}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence], *, sortable: bool = True, titles: dict[str, str] | None = None,
          row_class: Sequence[str] | None = None, wrap_last: bool = False) -> str:
    """An HTML table; ``wrap_last``: the last column is prose (a reason, a detail) and wraps instead of widening
    the table past the page."""
    titles = titles or {}
    th = "".join(f'<th title="{_e(titles[h])}">{_e(h)}</th>' if h in titles else f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(_cell(v) for v in r) + "</tr>")
    head = f"<thead><tr>{th}</tr></thead>" if any(header) else ""
    classes = " ".join(c for c, on in (("sortable", sortable), ("wrap", wrap_last)) if on)
    attr = "" if not classes else f" class={classes}" if " " not in classes else f' class="{classes}"'
    return f"<table{attr}>{head}<tbody>{''.join(body)}</tbody></table>"


def details(summary: str, inner: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{_e(summary)}</summary><div class=scroll>{inner}</div></details>"


def figure_html(key: str, fig: go.Figure) -> str:
    div_id = "fig-" + "".join(ch if ch.isalnum() else "-" for ch in key)
    inner = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG,
                        default_width="100%")
    return f'<div class="figure" data-key="{_e(key)}">{inner}</div>'

