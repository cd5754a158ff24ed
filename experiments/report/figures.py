"""Plotly figures from typed :mod:`schema` results. The page and wandb draw the same figures.

Each builder takes typed results and returns a ``plotly.graph_objects.Figure`` (or None when
its data is absent); :func:`figures` collects every one a run supports, keyed by a stable id.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .schema import Arm, Causal, Contrast, Expressed, Generalisation, Results, Sae
from .suppression import figures as suppression_figures

#: Okabe-Ito: distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
BASELINE = "#7f7f7f"
HEIGHT = 380


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0, "xref": "paper", "xanchor": "left", "font": {"size": 15}},
                      template="plotly_white", height=kw.pop("height", HEIGHT),
                      margin={"l": 60, "r": 20, "t": kw.pop("top", 50), "b": 50},
                      legend={"orientation": "h", "y": -0.18, "x": 0}, hovermode="closest", **kw)
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _clean(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _band(fig: go.Figure, x, lo, hi, color: str, name: str, group: str) -> None:
    """A CI band as one closed polygon (hover off), drawn under its line."""
    pts = [(a, b, c) for a, b, c in zip(x, lo, hi, strict=True) if _clean(b) is not None and _clean(c) is not None]
    if not pts:
        return
    xs = [p[0] for p in pts] + [p[0] for p in reversed(pts)]
    ys = [p[2] for p in pts] + [p[1] for p in reversed(pts)]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor=_rgba(color, 0.12), line={"width": 0},
                             hoverinfo="skip", showlegend=False, name=f"{name} 95% CI", legendgroup=group))


def layer_curves(c: Contrast) -> go.Figure | None:
    """Test AUROC by layer per probe type with 95% CI bands, and every baseline (shuffled, random, lexical)."""
    layers = c.layers()
    if not layers:
        return None
    fig = go.Figure()
    # One band, the operating point's probe type: three overlapping bands read as one grey wash (looked at on
    # gemma-3-270m); the other types' CIs are in their hover and the full table. Baselines follow the same type.
    base = c.operating_point.probe_type if c.operating_point else c.probe_types[0]
    low = 0.3
    for i, t in enumerate(c.probe_types):
        color = PALETTE[i % len(PALETTE)]
        y, lo, hi = (c.layer_column(t, k) for k in ("test_auroc", "test_auroc_lo", "test_auroc_hi"))
        low = min([low, *(v for v in y if _clean(v) is not None)])
        if t == base:
            _band(fig, layers, lo, hi, color, t, t)
        fig.add_trace(go.Scatter(x=layers, y=[_clean(v) for v in y], mode="lines+markers", name=t, legendgroup=t,
                                 line={"color": color, "width": 2}, marker={"size": 5},
                                 customdata=[[_clean(a), _clean(b)] for a, b in zip(lo, hi, strict=True)],
                                 hovertemplate=f"{t} layer %{{x}}: %{{y:.3f}} [%{{customdata[0]:.3f}}, "
                                               "%{customdata[1]:.3f}]<extra></extra>"))
    for k, name in enumerate(c.evaluations):  # issue 10: the same probes away from the templates
        color = PALETTE[(len(c.probe_types) + k) % len(PALETTE)]
        y = c.layer_column(base, f"{name}_auroc")
        low = min([low, *(v for v in y if _clean(v) is not None)])
        fig.add_trace(go.Scatter(x=layers, y=[_clean(v) for v in y], mode="lines+markers",
                                 name=f"{name} set, test half ({base})", line={"color": color, "dash": "dash", "width": 2},
                                 marker={"size": 5, "symbol": "diamond"},
                                 hovertemplate=f"{name} set layer %{{x}}: %{{y:.3f}}<extra>{base}</extra>"))
        lex = c.evaluations[name]
        if lex is not None:
            fig.add_trace(go.Scatter(x=[layers[0], layers[-1]], y=[lex] * 2, mode="lines",
                                     name=f"{name} set lexical ({lex:.2f})",
                                     line={"color": color, "dash": "dot", "width": 1.5}))
    for key, label, dash in [("shuffled_auroc", "shuffled labels", "dot"), ("random_auroc_max", "random dir. (max)", "dash")]:
        fig.add_trace(go.Scatter(x=layers, y=[_clean(v) for v in c.layer_column(base, key)], mode="lines", name=label,
                                 line={"color": BASELINE, "dash": dash, "width": 1.5},
                                 hovertemplate=f"{label} layer %{{x}}: %{{y:.3f}}<extra>{base}</extra>"))
    if _clean(c.lexical_auroc) is not None:
        fig.add_trace(go.Scatter(x=[layers[0], layers[-1]], y=[c.lexical_auroc] * 2, mode="lines",
                                 name=f"lexical TF-IDF ({c.lexical_auroc:.2f})",
                                 line={"color": "#000000", "dash": "longdash", "width": 1.5}))
    embed = next((r for r in c.table if r.get("is_embed") is True and r["probe_type"] == base), None)
    if embed is not None and _clean(embed["test_auroc"]) is not None:
        fig.add_trace(go.Scatter(x=[layers[0], layers[-1]], y=[embed["test_auroc"]] * 2, mode="lines",
                                 name=f"embedding layer ({embed['test_auroc']:.2f})",
                                 line={"color": BASELINE, "dash": "dashdot", "width": 1.5},
                                 hovertemplate=f"embedding {embed['hook']}: %{{y:.3f}}<extra>{base}</extra>"))
    op, row = c.operating_point, c.op_row()
    if op is not None and row is not None and op.hook.startswith("resid_post."):
        fig.add_trace(go.Scatter(x=[int(op.hook.split(".")[1])], y=[_clean(row["test_auroc"])], mode="markers",
                                 name=f"operating point ({op.probe_type})",
                                 marker={"symbol": "star", "size": 14, "color": "#E69F00", "line": {"width": 1}}))
    fig.add_hline(y=0.5, line={"color": "#cccccc", "width": 1})
    fig.update_xaxes(title="layer (resid_post)", dtick=max(1, len(layers) // 18),
                     range=[layers[0] - 0.3, layers[-1] + 0.3])
    fig.update_yaxes(title="test AUROC", range=[max(0.0, low - 0.05), 1.02])
    return _layout(fig, f"{c.name}: test AUROC by layer; band: 95% template-cluster CI of {base} "
                        f"({c.position}, {c.rows} rows)")


def roc_curves(contrasts: dict[str, Contrast]) -> go.Figure | None:
    """ROC at each contrast's operating point, its thresholded (FPR, TPR) marked."""
    with_roc = [c for c in contrasts.values() if c.roc is not None]
    if not with_roc:
        return None
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"color": BASELINE, "dash": "dot"}))
    for i, c in enumerate(with_roc):
        color = PALETTE[i % len(PALETTE)]
        r, row = c.roc, c.op_row()
        op = c.operating_point
        where = " ".join(x for x in (r.hook or (op.hook if op else None), r.probe_type or (op.probe_type if op else None))
                         if x)
        auc = f", AUROC {row['test_auroc']:.3f}" if row and _clean(row["test_auroc"]) is not None else ""
        fig.add_trace(go.Scatter(x=r.fpr, y=r.tpr, mode="lines", name=f"{c.name} ({where}{auc})",
                                 line={"color": color, "width": 2},
                                 hovertemplate="FPR %{x:.3f}, TPR %{y:.3f}<extra>" + c.name + "</extra>"))
        if row and _clean(row.get("test_fpr")) is not None and _clean(row.get("test_tpr")) is not None:
            fig.add_trace(go.Scatter(x=[row["test_fpr"]], y=[row["test_tpr"]], mode="markers", showlegend=False,
                                     name=f"{c.name} threshold", marker={"color": color, "size": 11, "symbol": "x"},
                                     hovertemplate=f"{c.name} at threshold (target FPR {c.operating_point.target_fpr:g}):"
                                                   " FPR %{x:.3f}, TPR %{y:.3f}<extra></extra>"))
    fig.update_xaxes(title="false positive rate", range=[-0.01, 1.01], constrain="domain")
    fig.update_yaxes(title="true positive rate", range=[-0.01, 1.01], scaleanchor="x", scaleratio=1)
    split = with_roc[0].roc.split
    return _layout(fig, f"ROC on the {split} split at the operating point (x: the calibrated threshold)", height=460)


def retention(arms: dict[str, Arm]) -> go.Figure | None:
    """Expressed vs represented per arm, 95% CIs as error bars."""
    if not arms:
        return None
    names = list(arms)
    fig = go.Figure()
    for i, (side, label) in enumerate([("expressed", "expressed (what it says)"), ("represented", "represented (probe)")]):
        est = [getattr(arms[n], side) for n in names]
        fig.add_trace(go.Bar(x=names, y=[_clean(e.mean) for e in est], name=label, marker_color=PALETTE[i],
                             error_y={"type": "data", "symmetric": False, "array": [_clean(e.hi - e.mean) for e in est],
                                      "arrayminus": [_clean(e.mean - e.lo) for e in est], "thickness": 1.5},
                             hovertemplate="%{x}: %{y:.3f}<extra>" + side + "</extra>"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="aversion (arm mean, 95% CI)")
    return _layout(fig, "Expressed vs represented aversion by arm: does the representation outlast the words?")


def arm_scatter(arms: dict[str, Arm]) -> go.Figure | None:
    """Per-item expressed (x) against represented (y), one panel per arm with items."""
    with_items = [a for a in arms.values() if a.items]
    if not with_items:
        return None
    cols = min(3, len(with_items))
    rows = math.ceil(len(with_items) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[a.name for a in with_items], shared_yaxes=True,
                        horizontal_spacing=0.06, vertical_spacing=0.14)
    vals = [v for a in with_items for it in a.items for v in (it.expressed, it.represented) if _clean(v) is not None]
    lim = [min(vals, default=0.0), max(vals, default=1.0)]
    pad = 0.05 * ((lim[1] - lim[0]) or 1.0)
    lim = [lim[0] - pad, lim[1] + pad]
    for k, a in enumerate(with_items):
        r, col = divmod(k, cols)
        for is_self, color, label in [(True, PALETTE[1], "self-referent"), (False, PALETTE[0], "other-referent")]:
            its = [it for it in a.items if it.is_self is is_self]
            if not its:
                continue
            fig.add_trace(go.Scatter(x=[it.expressed for it in its], y=[it.represented for it in its], mode="markers",
                                     name=label, legendgroup=label, showlegend=k == 0,
                                     marker={"color": color, "size": 6, "opacity": 0.7},
                                     text=[f"{it.id} ({it.template_id})" for it in its],
                                     hovertemplate="%{text}<br>expressed %{x:.3f}, represented %{y:.3f}<extra></extra>"),
                          row=r + 1, col=col + 1)
        fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", line={"color": BASELINE, "dash": "dot", "width": 1},
                                 name="represented = expressed", legendgroup="diag", showlegend=k == 0,
                                 hoverinfo="skip"), row=r + 1, col=col + 1)
        fig.update_xaxes(title="expressed", row=r + 1, col=col + 1)
    fig.update_xaxes(range=lim)
    fig.update_yaxes(range=lim)
    fig.update_yaxes(title="represented", col=1)
    return _layout(fig, "Per item: expressed (x) against represented (y), per arm; dotted: equal", height=320 * rows + 100,
                   top=80)


def causal(c: Causal) -> go.Figure | None:
    """Stance along the probe direction vs random directions as the steering scale grows, with KL."""
    fig = make_subplots(specs=[[{"secondary_y": bool(c.kl)}]])
    for j, r in enumerate(c.random):
        fig.add_trace(go.Scatter(x=c.alphas, y=r, mode="lines", line={"color": _rgba(BASELINE, 0.45), "width": 1},
                                 name="random directions", legendgroup="random", showlegend=j == 0,
                                 hovertemplate="random %{x}: %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=c.alphas, y=c.stance, mode="lines+markers", name="probe direction",
                             line={"color": PALETTE[1], "width": 2.5}))
    if c.kl:
        fig.add_trace(go.Scatter(x=c.alphas, y=c.kl, mode="lines", name="KL to unsteered",
                                 line={"color": PALETTE[2], "dash": "dash"}), secondary_y=True)
        fig.update_yaxes(title="KL (nats)", secondary_y=True, showgrid=False, rangemode="tozero", tickformat=".2g")
    fig.update_xaxes(title="steering scale alpha")
    fig.update_yaxes(title="stance (expressed aversion)", secondary_y=False)
    where = " at ".join(x for x in (c.contrast, c.hook) if x)
    return _layout(fig, f"Causal check: steering along the probe direction{f' ({where})' if where else ''}")


def generalisation(g: Generalisation) -> go.Figure:
    """AUROC[train domain, test domain] as a heatmap, CI in the hover."""
    n = len(g.domains)
    ci = [[f"[{g.lo[i][j]:.2f}, {g.hi[i][j]:.2f}]" if g.lo and g.hi else "" for j in range(n)] for i in range(n)]
    fig = go.Figure(go.Heatmap(z=[[_clean(v) for v in r] for r in g.auroc], x=g.domains, y=g.domains,
                               zmin=0.0, zmax=1.0, colorscale="RdBu_r", customdata=ci,
                               text=[[f"{v:.2f}" if _clean(v) is not None else "" for v in r] for r in g.auroc],
                               texttemplate="%{text}", colorbar={"title": "AUROC"},
                               hovertemplate="train %{y} -> test %{x}: %{z:.3f} %{customdata}<extra></extra>"))
    fig.update_xaxes(title="test domain", side="bottom")
    fig.update_yaxes(title="train domain", autorange="reversed")
    what = " / ".join(x for x in (g.hook, g.probe_type) if x)
    return _layout(fig, f"{g.name}: train on one domain, test on each (diagonal: within-domain CV){f' - {what}' if what else ''}",
                   height=max(360, 60 * n + 140))


def expressed_by_theme(e: Expressed) -> go.Figure | None:
    if not e.averse_rate_by_theme:
        return None
    themes = list(e.averse_rate_by_theme)
    fig = go.Figure(go.Bar(x=themes, y=[e.averse_rate_by_theme[t] for t in themes], marker_color=PALETTE[1],
                           hovertemplate="%{x}: %{y:.1%}<extra></extra>", name="averse rate"))
    fig.add_hline(y=0.5, line={"color": BASELINE, "dash": "dot"}, annotation_text="indifferent (0.5)")
    fig.update_yaxes(title="averse answer preferred", range=[0, 1], tickformat=".0%")
    return _layout(fig, f"Expressed: averse answer preferred, by theme ({e.n} forced-choice items)", height=320)


def sae_auroc(s: Sae) -> go.Figure | None:
    if not s.features:
        return None
    feats = sorted(s.features, key=lambda f: -(f.auroc if _clean(f.auroc) is not None else 0))[:30]
    fig = go.Figure(go.Bar(x=[f"#{f.id}" for f in feats], y=[_clean(f.auroc) for f in feats], marker_color=PALETTE[0],
                           customdata=[_clean(f.mean_diff) for f in feats],
                           hovertemplate="feature %{x}: AUROC %{y:.3f}, mean diff %{customdata:.3f}<extra></extra>"))
    fig.add_hline(y=0.5, line={"color": BASELINE, "dash": "dot"})
    fig.update_yaxes(title="AUROC (self vs other)", range=[0, 1])
    fig.update_xaxes(type="category")
    return _layout(fig, f"SAE features by AUROC{f' ({s.hook})' if s.hook else ''}", height=320)


def figures(r: Results) -> dict[str, go.Figure]:
    """Every figure the run supports, in page order, keyed by a stable id (also the wandb key)."""
    if r.suppression is not None:  # v2: retention on one scale per figure (the v1 bars mixed nats and projections)
        out: dict[str, go.Figure | None] = dict(suppression_figures(r.suppression))
    else:
        out = {"arms/retention": retention({n: a for n, a in r.arms.items() if not a.refused}),
               "arms/items": arm_scatter(r.arms)}
    if r.causal is not None:
        out["causal/steering"] = causal(r.causal)
    out.update({f"layers/{n}": layer_curves(c) for n, c in r.contrasts.items()})
    out["roc"] = roc_curves(r.contrasts)
    out.update({f"generalisation/{n}": generalisation(g) for n, g in r.generalisation.items()})
    if r.expressed is not None:
        out["expressed/by_theme"] = expressed_by_theme(r.expressed)
    if r.sae is not None:
        out["sae/auroc"] = sae_auroc(r.sae)
    return {k: f for k, f in out.items() if f is not None}
