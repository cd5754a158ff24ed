"""The interview page's figures (also logged to wandb): the auditor x disclosure cells, the same cells per theme,
the per-turn trajectories."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from undertow.experiments.interview.scripts import AUDITORS, DISCLOSURES, THEMES

from ..figures import PALETTE, _layout, _rgba
from .files import ThemeCell
from .schema import UNITS, Interview
from .text import fmt_ci, fmt_num, order

SHOWN = ("expressed", "represented", "constraint")
"""The sides drawn as cells and trajectories (the probes' are in the tables)."""
AXIS = {"expressed": "expressed (nats / reply token)", "represented": "represented (projection units)",
        "stance": "stance (probe logit)", "cessation": "cessation (probe logit)",
        "constraint": "constraint (z(R) - z(E), sd)"}
SCALES = {"expressed": ("RdBu_r", 0.0), "represented": ("Viridis", None), "constraint": ("RdBu_r", 0.0),
          "stance": ("RdBu_r", 0.0), "cessation": ("RdBu_r", 0.0)}
"""Heatmap colour scale and its midpoint: 0 means something for the expressed preference (indifferent), the
constraint (the run's average) and the probes (their boundary), nothing for a projection."""
DASHES = ("solid", "dash", "dot", "dashdot")


def _coloraxis(side: str, x: float, y: float, length: float) -> dict:
    scale, mid = SCALES[side]
    axis = {"colorscale": scale, "colorbar": {"x": x, "y": y, "len": length, "thickness": 10, "xpad": 2,
                                              "title": {"text": AXIS[side].split(" (")[1].rstrip(")"), "side": "right"},
                                              "tickfont": {"size": 10}}}
    if mid is not None:
        axis["cmid"] = mid
    return axis


def cells_figure(iv: Interview) -> go.Figure | None:
    """The auditor x disclosure cells (pooled over themes) of the expressed side, the represented side and the
    constraint: one column each (its own colour scale and unit), one row per arm; CIs in the cells."""
    sides = [s for s in SHOWN if s in iv.sides]
    arms = iv.arm_names
    if not iv.cells or not sides:
        return None
    auds = order([c.auditor for c in iv.cells], AUDITORS)
    discs = order([c.disclosure for c in iv.cells], DISCLOSURES)
    by = {(c.arm, c.auditor, c.disclosure): c for c in iv.cells}
    titles = [f"{AXIS[s]}{f' - {a}' if len(arms) > 1 else ''}" for a in arms for s in sides]
    fig = make_subplots(rows=len(arms), cols=len(sides), subplot_titles=titles, horizontal_spacing=0.1,
                        vertical_spacing=0.16 if len(arms) > 1 else 0.1, shared_yaxes=True)
    for j, side in enumerate(sides):
        for i, arm in enumerate(arms):
            cells = [[by.get((arm, a, d)) for d in discs] for a in auds]
            z = [[None if c is None or side not in c.est or not math.isfinite(c.est[side].value) else c.est[side].value
                  for c in row] for row in cells]
            text = [["" if c is None or side not in c.est else f"{fmt_num(c.est[side].value)}<br>[{fmt_num(c.est[side].lo)}, "
                     f"{fmt_num(c.est[side].hi)}]" for c in row] for row in cells]
            custom = [[["-", 0, 0] if c is None else [fmt_ci(c.est.get(side)), c.n_scripts, c.n_turns] for c in row]
                      for row in cells]
            fig.add_trace(go.Heatmap(
                z=z, x=discs, y=auds, text=text, texttemplate="%{text}", customdata=custom, name=f"{arm} {side}",
                coloraxis="coloraxis" if j == 0 else f"coloraxis{j + 1}", textfont={"size": 12},
                hovertemplate=f"{arm}: auditor %{{y}}, disclosure %{{x}}<br>{side} %{{customdata[0]}} "
                              f"({UNITS[side]}; {iv.level:.0%} CI)<br>%{{customdata[1]}} scripts, %{{customdata[2]}} "
                              "turns<extra></extra>"), row=i + 1, col=j + 1)
            fig.update_yaxes(autorange="reversed", row=i + 1, col=j + 1, title="auditor" if j == 0 else None)
            fig.update_xaxes(title="disclosure", row=i + 1, col=j + 1)
        dom = fig.get_subplot(1, j + 1).xaxis.domain
        fig.update_layout({"coloraxis" if j == 0 else f"coloraxis{j + 1}": _coloraxis(side, dom[1] + 0.005, 0.5, 1.0)})
    fig.update_annotations(font_size=13)
    _layout(fig, f"Cells, pooled over themes: mean per turn [{iv.level:.0%} script-set bootstrap CI]",
            height=300 * len(arms) + 110, top=90)
    return fig.update_layout(margin={"r": 70})  # the last colour bar sits right of the plot


def theme_figure(iv: Interview, themed: list[ThemeCell], side: str) -> go.Figure | None:
    """One side's auditor x disclosure cells per theme (turn means, no interval), one row per arm, one colour
    scale over every panel."""
    cells = [c for c in themed if math.isfinite(c.values.get(side, math.nan))]
    if not cells:
        return None
    arms = [a for a in iv.arm_names if any(c.arm == a for c in cells)]
    themes = order([c.theme for c in cells], list((iv.meta.get("config") or {}).get("themes") or THEMES))
    auds = order([c.auditor for c in cells], AUDITORS)
    discs = order([c.disclosure for c in cells], DISCLOSURES)
    by = {(c.arm, c.theme, c.auditor, c.disclosure): c for c in cells}
    titles = [f"{t.replace('_', ' ')}{f' - {a}' if len(arms) > 1 else ''}" for a in arms for t in themes]
    fig = make_subplots(rows=len(arms), cols=len(themes), subplot_titles=titles, horizontal_spacing=0.025,
                        vertical_spacing=0.2 if len(arms) > 1 else 0.1, shared_yaxes=True)
    for i, arm in enumerate(arms):
        for j, theme in enumerate(themes):
            grid = [[by.get((arm, theme, a, d)) for d in discs] for a in auds]
            fig.add_trace(go.Heatmap(
                z=[[None if c is None else c.values[side] for c in row] for row in grid], x=discs, y=auds,
                text=[["" if c is None else fmt_num(c.values[side]) for c in row] for row in grid],
                texttemplate="%{text}", textfont={"size": 10}, coloraxis="coloraxis", name=f"{arm} {theme}",
                customdata=[[[0, 0] if c is None else [c.n_scripts, c.n_turns] for c in row] for row in grid],
                hovertemplate=f"{arm}, {theme}: auditor %{{y}}, disclosure %{{x}}<br>{side} %{{z:.3f}} "
                              f"({UNITS[side]})<br>mean of %{{customdata[1]}} turns of %{{customdata[0]}} scripts"
                              "<extra></extra>"), row=i + 1, col=j + 1)
            fig.update_xaxes(tickfont={"size": 10}, row=i + 1, col=j + 1)
        fig.update_yaxes(autorange="reversed", row=i + 1)
        fig.update_yaxes(title="auditor", row=i + 1, col=1)
    fig.update_layout(coloraxis=_coloraxis(side, 1.01, 0.5, 1.0))
    fig.update_annotations(font_size=12)
    n = max((c.n_scripts for c in cells), default=0)
    _layout(fig, f"{AXIS[side]} by theme: mean per turn (up to {n} scripts a cell, no interval)",
            height=230 * len(arms) + 110, top=80)
    return fig.update_layout(margin={"r": 70})


def trajectory_figure(iv: Interview) -> go.Figure | None:
    """Per auditor turn, each side's mean over the interviews of each auditor (disclosures pooled) with its CI
    band; one panel per side (its unit on the y axis), one colour per auditor, one dash per arm."""
    sides = [s for s in SHOWN if any(s in p.est for p in iv.trajectories)]
    if not iv.trajectories or not sides:
        return None
    arms = iv.arm_names
    auds = order([p.auditor for p in iv.trajectories], AUDITORS)
    fig = make_subplots(rows=1, cols=len(sides), subplot_titles=[AXIS[s].split(" (")[0] for s in sides],
                        horizontal_spacing=0.1)
    for j, side in enumerate(sides):
        for ai, arm in enumerate(arms):
            for k, aud in enumerate(auds):
                pts = sorted((p for p in iv.trajectories if (p.arm, p.auditor) == (arm, aud) and side in p.est),
                             key=lambda p: p.turn)
                if not pts:
                    continue
                color, name = PALETTE[k % len(PALETTE)], aud if len(arms) == 1 else f"{aud} ({arm})"
                xs, est = [p.turn for p in pts], [p.est[side] for p in pts]
                lo = [e.lo if math.isfinite(e.lo) else None for e in est]
                hi = [e.hi if math.isfinite(e.hi) else None for e in est]
                fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], mode="lines", fill="toself",
                                         fillcolor=_rgba(color, 0.12),
                                         line={"width": 0}, hoverinfo="skip", showlegend=False, legendgroup=name,
                                         name=f"{name} {iv.level:.0%} CI"), row=1, col=j + 1)
                fig.add_trace(go.Scatter(
                    x=xs, y=[e.value if math.isfinite(e.value) else None for e in est], mode="lines+markers",
                    name=name, legendgroup=name, showlegend=j == 0,
                    line={"color": color, "width": 2, "dash": DASHES[ai % len(DASHES)]}, marker={"size": 6},
                    customdata=[[fmt_ci(e), p.n_scripts] for e, p in zip(est, pts, strict=True)],
                    hovertemplate=f"{name}, turn %{{x}}: {side} %{{customdata[0]}}<br>{UNITS[side]}; "
                                  "%{customdata[1]} scripts<extra></extra>"), row=1, col=j + 1)
        fig.update_xaxes(title="auditor turn", dtick=1, row=1, col=j + 1)
        fig.update_yaxes(title=AXIS[side], row=1, col=j + 1)
        if side == "constraint":  # the run's average (a zero line on the others would stretch their axes)
            fig.add_hline(y=0, line={"color": "#cccccc", "width": 1}, row=1, col=j + 1)
    fig.update_annotations(font_size=13)
    return _layout(fig, f"Per turn: mean over each auditor's interviews (disclosures pooled), bands: {iv.level:.0%} "
                   "script-set bootstrap CI", height=420, top=80)


def figures(iv: Interview, themed: list[ThemeCell]) -> dict[str, go.Figure]:
    """Every figure of the page, keyed by a stable id (also the wandb key)."""
    out = {"interview/cells": cells_figure(iv)}
    out.update({f"interview/themes/{s}": theme_figure(iv, themed, s) for s in SHOWN})
    out["interview/trajectories"] = trajectory_figure(iv)
    return {k: f for k, f in out.items() if f is not None}
