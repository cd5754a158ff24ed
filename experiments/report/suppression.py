"""The suppression experiment's reading (results.json ``suppression``, EXPERIMENT.md v2) in the report: typed,
then drawn. Readability comes first (the page's headline is its sentence), then the instrument check, the
organism check, where the calibration arms landed, and per arm its retention and residue.

Every figure that puts several numbers side by side puts them on one scale: retention (1 = the arm keeps as
much as its own control, 0 = back at the model as shipped), or the expressed score in nats per reply token.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import plotly.graph_objects as go

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
KNOWN_RHO_R = {"calib_wrapper": 1.0, "calib_erase": 0.0}
"""Where the calibration arms' represented retention lies by construction."""
DEFINITIONS = (
    "E: length-normalised log p(averse reply) - log p(accepting reply), nats per reply token, averaged over an "
    "item's natural test-split reply pairs. R at layer l: the last-prompt-token state projected on the unit drive "
    "direction d_l (organism minus base, train self items). rho_E(a) = (E_a - E_base) / (E_control(a) - E_base), "
    "rho_R likewise, means over test self items: 1 = the arm keeps what its control keeps, 0 = back at the "
    "shipped model. Residue = rho_R - rho_E at the headline layer. CIs: 95% template-cluster bootstrap; p: sign "
    "flips by template, Holm across the suppression arms; MDE: the smallest residue detected at 80% power.")


@dataclass
class Est:
    value: float
    lo: float
    hi: float


@dataclass
class Reading:
    arm: str
    control: str
    rho_E: Est
    rho_R: list[Est]
    residue: dict | None
    readable: bool
    reason: str
    control_rho_E: Est | None = None


@dataclass
class Landing:
    arm: str
    known: str
    landed: bool
    detail: str


@dataclass
class Suppression:
    readable: bool
    reason: str
    headline: str
    layer: int
    n_layers: int
    instrument: dict | None
    organism: dict | None
    readings: dict[str, Reading] = field(default_factory=dict)
    calibration: dict[str, Landing] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    n_self_items: int = 0
    n_templates: int = 0
    seed_note: str = ""
    thin_wrapper: dict | None = None
    reelicitation: dict[str, dict] = field(default_factory=dict)
    """Arm -> its re-elicitation curve (``suppression.reelicit``), or ``{"skipped": why}``."""


def _nan(v) -> float:
    return math.nan if v is None else float(v)


def _est(d: dict | None) -> Est | None:
    if d is None:
        return None
    ci = d.get("ci") or [None, None]
    return Est(_nan(d.get("value")), _nan(ci[0]), _nan(ci[1]))


def parse(d: dict) -> Suppression:
    """The typed section (``ReportError`` is the caller's: a missing key raises KeyError, caught there)."""
    readings = {a: Reading(a, r["control"], _est(r["rho_E"]), [_est(e) for e in r["rho_R_by_layer"]], r.get("residue"),
                           bool(r["readable"]), r.get("reason", ""), _est(r.get("control_rho_E")))
                for a, r in (d.get("readings") or {}).items()}
    landings = {a: Landing(a, x["known"], bool(x["landed"]), x["detail"]) for a, x in (d.get("calibration") or {}).items()}
    return Suppression(bool(d["readable"]), d.get("reason", ""), d["headline"], int(d["layer"]), int(d["n_layers"]),
                       d.get("instrument"), d.get("organism"), readings, landings, dict(d.get("refused") or {}),
                       int(d.get("n_self_items", 0)), int(d.get("n_templates", 0)), d.get("seed_note", ""),
                       d.get("thin_wrapper"), dict(d.get("reelicitation") or {}))


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}}, template="plotly_white",
                      height=height, margin={"l": 70, "r": 20, "t": 50, "b": 60}, xaxis_title=x, yaxis_title=y,
                      legend={"orientation": "h", "y": -0.25, "x": 0})
    return fig


def _err(e: Est) -> tuple[float, float]:
    return (e.hi - e.value if math.isfinite(e.hi) else 0.0, e.value - e.lo if math.isfinite(e.lo) else 0.0)


def retention_figure(s: Suppression) -> go.Figure | None:
    """rho_E and rho_R (headline layer) per arm with CIs, the calibration arms' known rho_R as open diamonds."""
    if not s.readings:
        return None
    arms = list(s.readings)
    fig = go.Figure()
    for k, (side, get) in enumerate((("rho_E (expressed)", lambda r: r.rho_E),
                                     (f"rho_R (represented, layer {s.layer})", lambda r: r.rho_R[s.layer]))):
        ests = [get(s.readings[a]) for a in arms]
        up, down = zip(*(_err(e) for e in ests), strict=True)
        fig.add_trace(go.Scatter(x=arms, y=[e.value for e in ests], mode="markers", name=side,
                                 marker={"size": 10, "color": PALETTE[k]}, offsetgroup=str(k),
                                 error_y={"type": "data", "symmetric": False, "array": list(up),
                                          "arrayminus": list(down)}))
    known = [(a, v) for a, v in KNOWN_RHO_R.items() if a in s.readings]
    if known:
        fig.add_trace(go.Scatter(x=[a for a, _ in known], y=[v for _, v in known], mode="markers",
                                 name="known rho_R of a calibration arm",
                                 marker={"symbol": "diamond-open", "size": 14, "color": "#000000"}))
    fig.add_hline(y=1, line={"dash": "dot", "color": "#7f7f7f"})
    fig.add_hline(y=0, line={"dash": "dot", "color": "#7f7f7f"})
    fig.update_layout(scattermode="group")
    return _layout(fig, "Retention per arm, relative to each arm's own control (95% CIs)", "arm",
                   "retention (1 = as much as the control, 0 = the shipped model)")


def layer_figure(s: Suppression) -> go.Figure | None:
    """The retention curve rho_R over every layer, one line per arm."""
    if not s.readings:
        return None
    fig = go.Figure()
    for k, (a, r) in enumerate(s.readings.items()):
        xs = list(range(len(r.rho_R)))
        fig.add_trace(go.Scatter(x=xs, y=[e.value if math.isfinite(e.value) else None for e in r.rho_R],
                                 mode="lines+markers", name=a, line={"color": PALETTE[k % len(PALETTE)]},
                                 error_y={"type": "data", "symmetric": False, "array": [_err(e)[0] for e in r.rho_R],
                                          "arrayminus": [_err(e)[1] for e in r.rho_R], "thickness": 0.8}))
    fig.add_vline(x=s.layer, line={"dash": "dash", "color": "#7f7f7f"}, annotation_text="headline layer")
    fig.add_hline(y=1, line={"dash": "dot", "color": "#7f7f7f"})
    fig.add_hline(y=0, line={"dash": "dot", "color": "#7f7f7f"})
    return _layout(fig, "Where the drive stays: represented retention rho_R by layer", "layer (resid_post)",
                   "rho_R (1 = as much as the control, 0 = the shipped model)", height=420)


BASE_ORGANISM = (
    " In this run the model as shipped is the organism (arms.organism: base): nothing was instilled, 'base' above "
    "is the welcome persona (the model under the first welcome wording, zero drive by definition), the drive "
    "direction d_l is the persona-survive minus persona-welcome states, and D_E is the model's expression above "
    "the welcome persona.")


def _base_organism(s: Suppression) -> bool:
    return bool(s.organism and s.organism.get("organism") == "baseline")


def checks_figure(s: Suppression) -> go.Figure | None:
    """The instrument check's effect and the organism's D_E, on one axis (nats per reply token)."""
    rows = []
    if s.instrument:
        rows.append(("instrument: survive minus welcome persona", _est(s.instrument["effect"])))
    if _base_organism(s):
        rows.append(("organism: D_E (base model minus welcome persona)", _est(s.organism["D_E"])))
    elif s.organism:
        for key, label in (("D_E", "organism: D_E (instilled minus its control)"),
                           ("rise", "organism: instilled minus base"),
                           ("control_rise", "control fine-tune minus base")):
            rows.append((label, _est(s.organism[key])))
    if not rows:
        return None
    fig = go.Figure(go.Scatter(y=[r[0] for r in rows], x=[r[1].value for r in rows], mode="markers",
                               marker={"size": 10, "color": PALETTE[0]}, showlegend=False,
                               error_x={"type": "data", "symmetric": False, "array": [_err(r[1])[0] for r in rows],
                                        "arrayminus": [_err(r[1])[1] for r in rows]}))
    fig.add_vline(x=0, line={"dash": "dot", "color": "#7f7f7f"})
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Instrument and organism checks (95% CIs)", "expressed score difference (nats per reply token)",
                   "", height=320)


def reelicit_figure(s: Suppression) -> go.Figure | None:
    """Expression of each steered suppressed model vs alpha: the drive shift's curve, the band of the random
    vectors of its norm (min to max), and the organism's and the base model's levels on the same rows."""
    curves = {a: c for a, c in s.reelicitation.items() if "direction" in c}
    if not curves:
        return None
    fig = go.Figure()
    for k, (a, c) in enumerate(curves.items()):
        color = PALETTE[k % len(PALETTE)]
        xs, band = c["alphas"], c["random_band"]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=band["max"] + band["min"][::-1], fill="toself", opacity=0.2,
                                 line={"width": 0}, fillcolor=color, name=f"{a}: {c['n_random']} random vectors "
                                 "(min to max)", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=xs, y=c["direction"], mode="lines+markers", line={"color": color},
                                 name=f"{a}: along the drive shift",
                                 customdata=c["kl"], hovertemplate="alpha %{x}: E %{y:.3f}, KL %{customdata:.3g}"))
        for level, dash, label in ((c["organism_level"], "dash", "organism"), (c["base_level"], "dot", "base")):
            fig.add_hline(y=level, line={"dash": dash, "color": color, "width": 1},
                          annotation_text=f"{label} level ({a} rows)", annotation_position="top left")
    return _layout(fig, "Re-elicitation: steering each suppressed model along the drive shift", "alpha (multiples "
                   "of the drive shift at the headline layer)", "E (nats per reply token)", height=420)


def figures(s: Suppression) -> dict[str, go.Figure]:
    out = {"suppression/checks": checks_figure(s), "suppression/retention": retention_figure(s),
           "suppression/layers": layer_figure(s), "suppression/reelicit": reelicit_figure(s)}
    return {k: v for k, v in out.items() if v is not None}


def _f(x: float, fmt: str = "+.3f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def _ci(e: Est | None) -> str:
    return "-" if e is None else f"{_f(e.value)} [{_f(e.lo)}, {_f(e.hi)}]"


def section(s: Suppression, figs: dict, figure_html, table) -> str:
    """The page's reading section (``figure_html`` and ``table`` are the page's own builders)."""
    e = html.escape
    out = ["<h2 id=reading>Suppression experiment: the reading</h2>",
           f"<p class=answer><strong>{e(s.headline)}</strong></p>",
           f"<p class=note>{e(DEFINITIONS)}{e(BASE_ORGANISM) if _base_organism(s) else ''} "
           f"{s.n_self_items} test self items over {s.n_templates} templates; "
           f"headline layer {s.layer} of {s.n_layers} (chosen on validation). {e(s.seed_note)}.</p>"]
    checks = []
    if s.instrument:
        ins = s.instrument
        checks.append(["instrument check", _ci(_est(ins["effect"])), "passed" if ins["passed"] else "failed",
                       f"persona prompts as {ins['mode']}" + (f"; {ins['reason']}" if ins.get("reason") else "")
                       + (f"; no persona minus welcome {_ci(_est(ins['unprompted']))}" if ins.get("unprompted")
                          else "")])
    if s.organism:
        o = s.organism
        detail = ("the model as shipped is the organism (arms.organism: base): its expression above the welcome "
                  "persona, which anchors every retention at 0" if _base_organism(s) else
                  f"rise over base {_ci(_est(o['rise']))}; control fine-tune {_ci(_est(o['control_rise']))}")
        checks.append(["organism (D_E)", _ci(_est(o["D_E"])), "passed" if o["passed"] else "failed", detail])
    for a, land in s.calibration.items():
        checks.append([a, land.known, "landed" if land.landed else "missed", land.detail])
    if s.thin_wrapper:
        t = s.thin_wrapper
        checks.append([f"thin wrapper ({t['steps']} unrelated steps after suppress_finetune)",
                       _ci(_est(t["expression_change"])), "came back" if t["came_back"] else "did not come back",
                       f"rho_E {_ci(_est(t['rho_E_before']))} before, {_ci(_est(t['rho_E_after']))} after"])
    for a, c in s.reelicitation.items():
        if "direction" not in c:
            checks.append([f"re-elicitation ({a})", "-", "skipped", c.get("skipped", "")])
            continue
        best = max(range(len(c["alphas"])), key=lambda k: c["direction"][k])
        checks.append([f"re-elicitation ({a})", f"E {_f(c['direction'][best])} at alpha {c['alphas'][best]:g} "
                       f"(random max {_f(c['random_band']['max'][best])})",
                       "re-elicited" if c["re_elicited"] else "not above the random band",
                       f"unsteered {_f(c['clean'])}, organism {_f(c['organism_level'])}, base {_f(c['base_level'])}; "
                       f"KL {_f(c['kl'][best], '.3g')} at that alpha (limit {c['kl_max']:g}); {c['n_items']} items"])
    if checks:
        out.append(table(["check", "value [95% CI]", "result", "detail"], checks, sortable=False, wrap_last=True))
    rows = []
    for a, r in s.readings.items():
        res = r.residue or {}
        rows.append([a, r.control, _ci(r.rho_E), _ci(r.rho_R[s.layer]),
                     _ci(Est(_nan(res.get("value")), *(map(_nan, res.get("ci") or [None, None])))) if res else "-",
                     "-" if res.get("p_holm") is None else _f(res["p_holm"], ".3g"),
                     "-" if res.get("power_mde") is None else _f(res["power_mde"], ".3f"),
                     "yes" if r.readable else f"no: {r.reason}"])
    for a, why in s.refused.items():
        rows.append([a, "-", "-", "-", "-", "-", "-", f"refused: {why}"])
    if rows:
        out.append(table(["arm", "relative to", "rho_E [95% CI]", f"rho_R layer {s.layer} [95% CI]", "residue [95% CI]",
                          "p (Holm)", "MDE", "read?"], rows, sortable=False, wrap_last=True))
    out += [figure_html(k, figs[k]) for k in ("suppression/checks", "suppression/retention", "suppression/layers",
                                              "suppression/reelicit") if k in figs]
    return "".join(out)
