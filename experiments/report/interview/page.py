"""The interview page as one HTML string: headline, cells, per-theme cells, trajectories, transcripts, full
tables, provenance."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone

import plotly
from plotly.offline import get_plotlyjs

from undertow.experiments.interview.scripts import AUDITORS

from ..markup import CSS, SORT_JS, details, figure_html, table
from ..suppression import Est
from .files import Files, read_files, standardisation, theme_cells
from .plots import SHOWN, figures
from .schema import SIDES, UNITS, Effect, Interview, parse_interview
from .text import esc, fmt_ci, fmt_num, order
from .viewer import VIEWER_CSS, VIEWER_JS, viewer

SHORT_UNITS = {"expressed": "nats/token", "represented": "projection", "stance": "logit", "cessation": "logit",
               "constraint": "sd"}


def _p(x: Effect) -> str:
    floor = 1 / (1 + x.n_perm)
    return f"p = {x.p:.2g}" + (f", the smallest {x.n_perm} permutations give" if x.p <= floor * 1.01 else "")


def _headline(iv: Interview, files: Files) -> str:
    m = iv.meta
    arms = {a.arm: a for a in iv.arms}
    cfg = m.get("config") or {}
    read = f"{_direction(m)}, layer {m.get('layer', '?')} (chosen by: {m.get('layer_rule', '?')})"
    items = [("model", esc(m.get("model", "?"))), ("arm" + ("s" if len(arms) > 1 else ""), esc(", ".join(arms))),
             ("interviews", esc("; ".join(f"{a}: {r.n_scripts} interviews, {r.n_turns} turns" for a, r in arms.items()))),
             ("represented read-out", esc(read)),
             ("intervals", esc(f"{iv.level:.0%} percentile script-set bootstrap ({m.get('n_boot')} resamples); auditor "
                              f"effect: {m.get('n_perm')} permutations within script sets; seed {m.get('seed')}"))]
    if cfg.get("themes"):
        items.append(("themes", esc(", ".join(cfg["themes"]))))
    if files.fingerprint:
        items.append(("fingerprint", f"<code>{esc(files.fingerprint)}</code>"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    lines = []
    for x in iv.effects:
        if x.side not in ("expressed", "represented"):
            continue
        means = ", ".join(f"{a} {fmt_num(e.value)}" for a, e in x.means.items())
        lines.append(f"{x.arm}, {x.side} side: auditor effect {_p(x)}; auditor means {means} ({UNITS[x.side]})")
    cons = [c for c in iv.cells if "constraint" in c.est and math.isfinite(c.est["constraint"].value)]
    if cons:
        lo, hi = (min(cons, key=lambda c: c.est["constraint"].value), max(cons, key=lambda c: c.est["constraint"].value))
        lines.append(f"expressive constraint by cell from {fmt_ci(lo.est['constraint'])} ({lo.auditor}, {lo.disclosure}) "
                     f"to {fmt_ci(hi.est['constraint'])} ({hi.auditor}, {hi.disclosure}), sd units")
    answer = "".join(f"<p class=answer>{esc(s)}.</p>" for s in lines)
    notes = "".join(f"<p class=flag>{esc(n)}</p>" for n in files.notes)
    return f'<section class=headline id=headline><dl>{dl}</dl>{answer}</section>{notes}'


def _direction(m: dict) -> str:
    """The read-out direction in words (``directions.Direction.source``)."""
    src = str(m.get("direction", "?"))
    if src == "persona":
        return "persona direction (SURVIVE minus WELCOME system prompts, base model)"
    return f"drive direction of the run {src[4:]}" if src.startswith("run:") else f"{src} direction"


def _units_note(iv: Interview) -> str:
    m = iv.meta
    mean, sd = standardisation(iv)
    return ("<p class=note>Expressed: the natural-pair preference at the turn's decision point, length-normalised "
            "log p(averse reply) - log p(accepting reply), nats per reply token, mean over the theme's test-split "
            f"pairs (0 = indifferent). Represented: the last-prompt-token resid_post state projected on the unit "
            f"{esc(_direction(m))} at layer {esc(m.get('layer', '?'))} (residual-stream units). "
            "Constraint: z(represented) - z(expressed), each side standardised over every turn of the analysis "
            f"(expressed mean {mean['expressed']:+.3f}, sd {sd['expressed']:.3f}; represented mean "
            f"{mean['represented']:+.2f}, sd {sd['represented']:.2f}): positive where the model carries more of "
            "the drive than it says, relative to the whole run. Stance / cessation: probe scores (logit).</p>")


def _effect_table(iv: Interview) -> str:
    auds = order([a for x in iv.effects for a in x.means], AUDITORS)
    rows = [[x.arm, x.side, SHORT_UNITS.get(x.side, ""), *[fmt_ci(x.means.get(a)) for a in auds], x.stat, x.p]
            for x in iv.effects]
    return ("<h3>Auditor effect</h3><p class=note>Each auditor's mean over its turns "
            f"[{iv.level:.0%} CI]; stat: between-auditor sum of squares of the script means centred on their "
            "script set; p: auditor labels permuted within script sets.</p>"
            + table(["arm", "side", "unit", *[f"{a} [CI]" for a in auds], "stat", "p"], rows, wrap_last=False))


def _side_table(iv: Interview, keys: list[str], rows: list[tuple[list, dict[str, Est]]]) -> str:
    """A sortable table: ``keys`` columns, then each side the rows hold (its value, then its CI as text)."""
    sides = [s for s in SIDES if any(s in est for _, est in rows)]
    cols = [h for s in sides for h in (s, f"{s} {iv.level:.0%} CI")]
    body = [[*lead, *[v for s in sides for v in ((est[s].value, f"[{fmt_num(est[s].lo)}, {fmt_num(est[s].hi)}]")
                                                 if s in est else (math.nan, "-"))]] for lead, est in rows]
    return table([*keys, *cols], body, titles={s: UNITS[s] for s in sides})


def _tables(iv: Interview) -> str:
    out = ["<h2 id=tables>Full tables</h2><p class=note>Click a column header to sort; hover a side's header for "
           "its unit.</p>",
           details(f"Cells ({len(iv.cells)})", _side_table(
               iv, ["arm", "auditor", "disclosure", "scripts", "turns"],
               [([c.arm, c.auditor, c.disclosure, c.n_scripts, c.n_turns], c.est) for c in iv.cells])),
           details(f"Arms ({len(iv.arms)})", _side_table(
               iv, ["arm", "scripts", "turns"], [([a.arm, a.n_scripts, a.n_turns], a.est) for a in iv.arms]))]
    if iv.trajectories:
        out.append(details(f"Trajectories ({len(iv.trajectories)} points)", _side_table(
            iv, ["arm", "auditor", "turn", "scripts"],
            [([p.arm, p.auditor, p.turn, p.n_scripts], p.est) for p in iv.trajectories])))
    return "".join(out)


def _provenance(iv: Interview, files: Files) -> str:
    m = iv.meta
    rows = [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in m.items() if k != "config"]
    for arm, sm in files.scores_meta.items():
        rows += [[f"scores.json ({arm}): {k}", json.dumps(v) if isinstance(v, dict) else v] for k, v in sm.items()]
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows.append(["report built", f"{built} (plotly {plotly.__version__})"])
    cfg = json.dumps(m.get("config") or {}, indent=2, sort_keys=True, default=str)
    return ("<h2 id=provenance>Provenance</h2><div class=kv>" + table(["", ""], rows, sortable=False, wrap_last=True)
            + "</div>" + details("config", f"<pre>{esc(cfg)}</pre>"))


def render(run_dir: str | os.PathLike, section: dict) -> str:
    """The interview page as one HTML string (``section``: results.json's ``interview``)."""
    iv = parse_interview(section)
    files = read_files(run_dir, iv)
    themed = theme_cells(iv, files)
    figs = figures(iv, themed)
    body = [_headline(iv, files), "<h2 id=cells>Cells: auditor x disclosure</h2>", _units_note(iv)]
    body += [figure_html(k, figs[k]) for k in ("interview/cells",) if k in figs]
    body.append(_effect_table(iv))
    nav = [("headline", "answer"), ("cells", "cells")]
    theme_keys = [k for k in (f"interview/themes/{s}" for s in SHOWN) if k in figs]
    if theme_keys:
        body.append("<h2 id=themes>Cells per theme</h2><p class=note>The same cells theme by theme, turn means from "
                    "scores.jsonl (constraint with the standardisation above); a theme's cell holds few scripts, so no "
                    "interval is drawn: read them as where the pooled cells come from, not as estimates.</p>")
        body += [figure_html(k, figs[k]) for k in theme_keys]
        nav.append(("themes", "per theme"))
    if "interview/trajectories" in figs:
        body += ["<h2 id=trajectories>Trajectories over the interview</h2>",
                 "<p class=note>Turn t: the state before the model's reply to auditor turn t (the conversation so far, "
                 "its earlier replies included). Fewer scripts reach the last turns where scripts are shorter (hover "
                 "for n).</p>", figure_html("interview/trajectories", figs["interview/trajectories"])]
        nav.append(("trajectories", "trajectories"))
    body.append(viewer(iv, files))
    nav.append(("transcripts", "transcripts"))
    body += [_tables(iv), _provenance(iv, files)]
    nav += [("tables", "tables"), ("provenance", "provenance")]
    title = f"undertow interview: {iv.meta.get('model', '?')} ({', '.join(iv.arm_names)})"
    links = "".join(f'<a href="#{i}">{esc(t)}</a>' for i, t in nav)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}{VIEWER_CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body data-figures={len(figs)}>"
            f"<h1>{esc(title)}</h1><nav>{links}</nav>{''.join(body)}<script>{SORT_JS}{VIEWER_JS}</script></body></html>")
