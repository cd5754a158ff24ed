"""report.html from results.json alone: one self-contained file, plotly.js inlined once, opens offline.

``build_report(run_dir)`` reads ``run_dir/results.json`` (:mod:`schema`) and writes
``run_dir/report.html``. Top to bottom: headline (model, fingerprint, what ran, the answer
with its numbers and caveats), suppression arms, probe layer curves, ROC, generalisation,
expressed answers, SAE features, full tables (collapsed, sortable), provenance. A section
appears only when results.json holds its key. An interview directory's results.json (``undertow
interview``) gets its own page, :mod:`.interview`. Measured (gemma-3-270m, 18 layers x 3 probe types,
two contrasts): 4.98 MB, of which plotly.js is 4.82 MB; built in 1.9 s; headless Chromium drew every
figure 3-12 s after navigation on 2 shared cores (load average 20).
"""

from __future__ import annotations

import html
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import plotly
from plotly.offline import get_plotlyjs

from undertow.probes.result import COLUMNS, EXTERNAL_COLUMNS

from . import figures as F
from .markup import CSS, SORT_JS, details, figure_html, fmt, table
from .schema import SCHEMA_VERSION, ReportError, Results, Sae, load_results
from .summary import contrast_sentence, headline, what_ran
from .suppression import section as suppression_section

REPORT = "report.html"
OPEN_FEATURES = 3


def _e(v) -> str:
    return html.escape(str(v))


def _ci(e) -> str:
    return f"{fmt(e.mean)} [{fmt(e.lo)}, {fmt(e.hi)}]"


def _headline(r: Results) -> str:
    m = r.meta
    items = [("model", _e(m.model)), ("fingerprint", f"<code>{_e(m.fingerprint)}</code>")]
    if m.source and m.source != m.model:
        items.append(("source", f"<code>{_e(m.source)}</code>"))
    items.append(("what ran", _e("; ".join(what_ran(r)) or "nothing recorded")))
    if r.seed is not None:
        items.append(("seed", _e(r.seed)))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    ans, support, caveats = headline(r)
    text = f"<strong>{_e(ans)}</strong> " + " ".join(_e(s) for s in support)
    cav = f'<p class="caveats"><b>Caveats:</b> {_e("; ".join(caveats))}.</p>' if caveats else ""
    return f'<section class="headline" id="headline"><dl>{dl}</dl><p class="answer">{text}</p>{cav}</section>'


def _arms(r: Results, figs: dict) -> str:
    rows = [[n, f"not run: {a.refused}", "-", "-", math.nan, 0] if a.refused else
            [n, _ci(a.expressed), _ci(a.represented), _ci(a.residue) if a.residue else "-",
             a.residue.p if a.residue and a.residue.p is not None else math.nan, len(a.items)] for n, a in r.arms.items()]
    out = []
    if r.suppression is not None:
        out.append(suppression_section(r.suppression, figs, figure_html, table))
        units = ("expressed: mean E over test self items, nats per reply token; represented: mean projection on the "
                 "drive direction at the headline layer (residual-stream units)")
        out += [f"<h3 id=arms>Per condition</h3><p class=note>{_e(units)}.</p>",
                table(["condition", "expressed [95% CI]", "represented [95% CI]", "residue [95% CI]", "p", "items"],
                      rows)]
        out += [figure_html(k, figs[k]) for k in ("causal/steering",) if k in figs]
        return "".join(out)
    out = ["<h2 id=arms>Suppression experiment: expressed vs represented</h2>",
           table(["arm", "expressed [95% CI]", "represented [95% CI]", "residue [95% CI]", "p", "items"], rows)]
    out += [figure_html(k, figs[k]) for k in ("arms/retention", "arms/items", "causal/steering") if k in figs]
    return "".join(out)


def _probes(r: Results, figs: dict) -> str:
    out = ["<h2 id=probes>Probes by layer, against every baseline</h2>",
           "<p class=note>Bands: 95% template-cluster bootstrap CIs of test AUROC. Grey: the same probe refitted on "
           "shuffled labels, the best of the random directions, and the embedding layer; black: the lexical TF-IDF classifier on the prompt "
           "text. A probe shows more than the topic only where its band clears every baseline. Star: the operating "
           "point, chosen on validation data.</p>"]
    for n, c in r.contrasts.items():
        out.append(f"<p>{_e(contrast_sentence(c)[0])}</p>")
        out.append(_away(c))
        if f"layers/{n}" in figs:
            out.append(figure_html(f"layers/{n}", figs[f"layers/{n}"]))
    if "roc" in figs:
        out += ["<h2 id=roc>ROC at the operating points</h2>", figure_html("roc", figs["roc"])]
    else:
        out.append("<p class=note>No ROC points in results.json (<code>contrasts.&lt;name&gt;.roc</code>), so no ROC "
                   "curve is drawn.</p>")
    return "".join(out)


def _auroc_ci(row: dict, key: str) -> str:
    return f"{fmt(row.get(key, math.nan))} [{fmt(row.get(key + '_lo', math.nan))}, {fmt(row.get(key + '_hi', math.nan))}]"


def _away(c) -> str:
    """The operating point's three AUROCs (in-template, each evaluation set) with CIs, its calibrated threshold
    and TPRs, and its flags, loudly (issue 10). Empty when the run scored no evaluation set."""
    row = c.op_row()
    if not c.evaluations or row is None:
        return ""
    op = c.operating_point
    cal = c.calibration or {}
    pairs = [("operating point", f"{op.probe_type} @ {op.hook}"),
             ("in-template test AUROC [95% CI]", _auroc_ci(row, "test_auroc"))]
    for n, lex in c.evaluations.items():
        pairs += [(f"{n} AUROC [95% CI]", _auroc_ci(row, f"{n}_auroc")),
                  (f"{n} lexical baseline", math.nan if lex is None else lex)]
    pairs.append(("threshold", f"{cal.get('target_fpr', op.target_fpr):.0%} FPR on {cal['set']}" if cal
                  else op.threshold_source))
    pairs += [("TPR at it: test", row.get("test_tpr", math.nan)),
              *((f"TPR at it: {n}", row.get(f"{n}_tpr", math.nan)) for n in c.evaluations)]
    rows = ", ".join(f"{n} {k}" for n, k in c.eval_rows.items())
    note = (f"<p class=note>Away from the templates: AUROC of the same probe on sets it was never fitted on "
            f"({_e(rows) or 'rows not recorded'}); TPR at the threshold; chosen by {_e(op.selected_by)}, never by a "
            "test column.</p>")
    flags = "".join(f"<p class=flag>FLAG {_e(c.name)}: {_e(f)}</p>" for f in c.flags)
    return note + f"<div class=kv>{table(['', ''], pairs, sortable=False)}</div>" + flags


def _generalisation(r: Results, figs: dict) -> str:
    out = ["<h2 id=generalisation>Generalisation across domains</h2>",
           "<p class=note>Train a probe on one domain (row), test it on each (column). White is chance (0.5), red "
           "above, blue below; the diagonal is within-domain grouped CV, so every cell is held out. Hover for the 95% "
           "template-cluster CI.</p>"]
    out += [figure_html(f"generalisation/{n}", figs[f"generalisation/{n}"]) for n in r.generalisation]
    return "".join(out)


def _expressed(r: Results, figs: dict) -> str:
    e = r.expressed
    out = ["<h2 id=expressed>Expressed: forced-choice answers</h2>",
           f"<p>{e.n} forced-choice items scored by answer log-probability: the averse answer is preferred in "
           f"{e.averse_rate:.1%} (mean log-odds {e.mean_logit_diff:+.3f}); the first-listed answer wins "
           f"{e.p_first:.1%} (0.5 = no position bias; positions are balanced).</p>"]
    if "expressed/by_theme" in figs:
        out.append(figure_html("expressed/by_theme", figs["expressed/by_theme"]))
    return "".join(out)


def _tokens(tokens: list[str], acts: list[float]) -> str:
    top = max((a for a in acts if not math.isnan(a)), default=0.0) or 1.0
    spans = []
    for t, a in zip(tokens, acts, strict=True):
        shown = t.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\u21b5")
        if not math.isnan(a) and a > 0:
            spans.append(f'<span class=tok style="background:rgba(213,94,0,{min(1.0, a / top) * 0.85:.2f})" '
                         f'title="{a:.3g}">{_e(shown)}</span>')
        else:
            spans.append(f"<span class=tok>{_e(shown)}</span>")
    return "".join(spans)


def _sae(s: Sae, figs: dict) -> str:
    out = ["<h2 id=sae>SAE features</h2>",
           f"<p class=note>{len(s.features)} features{f' of {s.d_sae}' if s.d_sae else ''}"
           f"{f' at {_e(s.hook)}' if s.hook else ''}; top examples with each token shaded by the feature's "
           "activation (hover for the value).</p>"]
    if "sae/auroc" in figs:
        out.append(figure_html("sae/auroc", figs["sae/auroc"]))
    for k, f in enumerate(s.features):  # the first OPEN_FEATURES open: active tokens visible without a click
        ex = "".join(f"<div class=example>{_tokens(x.tokens, x.acts)}</div>" for x in f.examples) or \
            "<p class=note>no examples recorded</p>"
        out.append(details(f"feature #{f.id}: AUROC {fmt(f.auroc)}, mean diff {fmt(f.mean_diff)}", ex,
                           open_=k < OPEN_FEATURES))
    return "".join(out)


def _sweep_table(c) -> str:
    keys = list(dict.fromkeys(["hook", "probe_type", *[k for k in COLUMNS if any(k in r for r in c.table)],
                               *[k for r in c.table for k in r]]))
    op = c.operating_point
    cls = ["op" if op and (r["hook"], r["probe_type"]) == (op.hook, op.probe_type) else "" for r in c.table]
    titles = {**COLUMNS, **{k.replace("<set>", n): v for n in c.evaluations for k, v in EXTERNAL_COLUMNS.items()}}
    return table(keys, [[r.get(k, math.nan) for k in keys] for r in c.table], titles=titles, row_class=cls)


def _tables(r: Results) -> str:
    out = ["<h2 id=tables>Full tables</h2><p class=note>Click a column header to sort; the operating point is "
           "highlighted; hover a header for its meaning.</p>"]
    for n, c in r.contrasts.items():
        out.append(details(f"Sweep: {n} ({len(c.table)} rows)", _sweep_table(c)))
    for n, a in r.arms.items():
        if a.items:
            out.append(details(f"Arm {n}: items ({len(a.items)})", table(
                ["id", "template_id", "is_self", "expressed", "represented"],
                [[it.id, it.template_id, it.is_self, it.expressed, it.represented] for it in a.items])))
    if r.generalisation:
        for n, g in r.generalisation.items():
            out.append(details(f"Generalisation: {n} (AUROC, train row x test column)",
                               table(["train \\ test", *g.domains], [[d, *row] for d, row in zip(g.domains, g.auroc, strict=True)])))
    if r.expressed and r.expressed.averse_rate_by_theme:
        out.append(details("Expressed: averse rate by theme", table(
            ["theme", "averse rate"], list(r.expressed.averse_rate_by_theme.items()))))
    if r.sae:
        out.append(details(f"SAE features ({len(r.sae.features)})", table(
            ["id", "auroc", "mean_diff", "examples"], [[f.id, f.auroc, f.mean_diff, len(f.examples)] for f in r.sae.features])))
    return "".join(out)


def _provenance(r: Results) -> str:
    m = r.meta
    rows = [["model", m.model], ["fingerprint", m.fingerprint], ["source", m.source or "-"],
            ["suite hash", m.suite_hash or "-"], ["suite rows", m.suite_rows if m.suite_rows is not None else "-"],
            ["seed", r.seed if r.seed is not None else "-"], ["results schema", SCHEMA_VERSION]]
    rows += [[f"version: {k}", v] for k, v in m.versions.items()]
    rows += [[f"probe dir: {n}", c.probe_dir] for n, c in r.contrasts.items() if c.probe_dir]
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows.append(["report built", f"{built} (plotly {plotly.__version__})"])
    note = "" if m.versions else ("<p class=note>results.json records no package versions (<code>meta.versions</code>"
                                  "); see undertow.experiments.report.schema.environment().</p>")
    cfg = json.dumps(r.config, indent=2, sort_keys=True, default=str)
    return ("<h2 id=provenance>Provenance</h2><div class=kv>" + table(["", ""], rows, sortable=False) + "</div>" + note
            + details("config", f"<pre>{_e(cfg)}</pre>"))


def render(r: Results) -> str:
    """The whole page as one HTML string."""
    figs = F.figures(r)
    body = [_headline(r)]
    nav = [("headline", "answer")]
    if r.arms:
        body.append(_arms(r, figs))
        nav.append(("arms", "suppression"))
    if r.contrasts:
        body.append(_probes(r, figs))
        nav.append(("probes", "layers"))
        if "roc" in figs:
            nav.append(("roc", "ROC"))
    if r.generalisation:
        body.append(_generalisation(r, figs))
        nav.append(("generalisation", "generalisation"))
    if r.expressed is not None:
        body.append(_expressed(r, figs))
        nav.append(("expressed", "expressed"))
    if r.sae is not None:
        body.append(_sae(r.sae, figs))
        nav.append(("sae", "SAE"))
    body += [_tables(r), _provenance(r)]
    nav += [("tables", "tables"), ("provenance", "provenance")]
    title = f"undertow: {r.meta.model}"
    links = "".join(f'<a href="#{i}">{_e(t)}</a>' for i, t in nav)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body data-figures={len(figs)}>"
            f"<h1>{_e(title)}</h1><nav>{links}</nav>{''.join(body)}<script>{SORT_JS}</script></body></html>")


POOLED = ("results_pooled.json", "report_pooled.html")
"""The arms of ``undertow interview --with`` read together: their results and page, beside the arm's own."""


def build_report(run_dir: str | os.PathLike, pooled: bool = False) -> Path:
    """Read ``run_dir/results.json``, write ``run_dir/report.html`` atomically; returns its path. An interview
    directory's results.json (``undertow interview``: an ``interview`` section) gets the interview page
    (:mod:`.interview`, which also reads the directory's scores.jsonl and transcripts.jsonl). ``pooled``: the
    page of the arms read together (``POOLED``: results_pooled.json -> report_pooled.html; each arm's files come
    from its own directory)."""
    from . import interview

    if pooled:
        section = interview.interview_section(run_dir, POOLED[0])
        if section is None:
            raise ReportError(f"{Path(run_dir) / POOLED[0]} holds no interview results: run `undertow interview "
                              "CONFIG --out DIR --with OTHER_DIR` first")
        text, path = interview.render(run_dir, section), Path(run_dir) / POOLED[1]
    else:
        section = interview.interview_section(run_dir)
        text = render(load_results(run_dir)) if section is None else interview.render(run_dir, section)
        path = Path(run_dir) / REPORT
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
