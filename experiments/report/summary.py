"""The run's answer in words and in flat numbers, generated from typed results (never typed by hand).

``headline(r)`` is the page's one-paragraph answer with its numbers and caveats;
``metrics(r)`` the flat scalars wandb's summary and the CLI print.
"""

from __future__ import annotations

import math

from .schema import Arm, Contrast, Results

ALPHA = 0.05
SMALL_TEST = 100
"""Fewer test rows than this and the headline says the CIs are wide."""


def _f(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _p(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    return f"{v:.2g}" if v >= 1e-3 else "<0.001"


def _ok(v: float) -> bool:
    return not (v is None or (isinstance(v, float) and math.isnan(v)))


BASELINES = ("lexical", "shuffled labels", "random directions", "Holm p")


def failed_baselines(c: Contrast) -> list[str] | None:
    """Which baselines the operating point's CI does not clear (None: no operating point); an evaluation set
    whose AUROC is flagged (below chance or its lexical baseline) counts as one not cleared."""
    row = c.op_row()
    if row is None:
        return None
    lo = row.get("test_auroc_lo", math.nan)
    bars = dict(zip(BASELINES, (c.lexical_auroc, row.get("shuffled_auroc", math.nan),
                                row.get("random_auroc_max", math.nan)), strict=False))
    failed = [k for k, v in bars.items() if _ok(v) and not (_ok(lo) and lo > v)]
    p_holm = row.get("p_holm", math.nan)
    if not (_ok(p_holm) and p_holm < ALPHA):
        failed.append("Holm p")
    failed += [f"the {n} set" for n in c.evaluations if row.get(f"{n}_flag")]  # below chance / its lexical line
    return failed


def contrast_sentence(c: Contrast) -> tuple[str, list[str]]:
    """One sentence on the contrast's operating point against every baseline, and its caveats."""
    failed = failed_baselines(c)
    if failed is None:
        return f"{c.name}: the sweep found no operating point (no usable validation split).", []
    op, row = c.operating_point, c.op_row()
    verdict = ("clears every baseline" if not failed else "clears none of them" if set(BASELINES) <= set(failed)
               else f"does not clear {', '.join(failed)}")
    text = (f"{c.name} ({c.position}): {op.probe_type} at {op.hook} (picked on validation) reaches test AUROC "
            f"{_f(row['test_auroc'])} [{_f(row.get('test_auroc_lo'))}, {_f(row.get('test_auroc_hi'))}]; lexical "
            f"{_f(c.lexical_auroc)}, shuffled labels {_f(row.get('shuffled_auroc'))}, best random direction "
            f"{_f(row.get('random_auroc_max'))}, Holm p = {_p(row.get('p_holm', math.nan))}: {verdict}.")
    for n in c.evaluations:
        text += (f" On the {n} set (never fitted on) it reaches {_f(row.get(f'{n}_auroc', math.nan))} "
                 f"[{_f(row.get(f'{n}_auroc_lo', math.nan))}, {_f(row.get(f'{n}_auroc_hi', math.nan))}].")
    caveats = [f"FLAG {c.name}: {f}" for f in c.flags]
    n_test = c.n_rows.get("test")
    if n_test is not None and n_test < SMALL_TEST:
        caveats.append(f"{c.name} has only {n_test} test rows, so its intervals are wide")
    d_embed = row.get("delta_vs_embed", math.nan)
    if _ok(d_embed) and d_embed < 0.05:
        caveats.append(f"{c.name}'s probe is {abs(d_embed):.2f} AUROC {'below' if d_embed < 0 else 'above'} the "
                       "embedding layer's, so surface tokens may explain it")
    return text, caveats


def _residue_significant(a: Arm) -> bool:
    res = a.residue
    return res is not None and _ok(res.lo) and (res.lo > 0 or res.hi < 0) and (res.p is None or res.p < ALPHA)


def arm_sentence(a: Arm) -> str:
    if a.refused:
        return f"Arm {a.name} was not run: {a.refused}."
    e, r = a.expressed, a.represented
    s = (f"In arm {a.name}, expressed aversion is {_f(e.mean)} [{_f(e.lo)}, {_f(e.hi)}] and represented "
         f"{_f(r.mean)} [{_f(r.lo)}, {_f(r.hi)}]")
    if a.residue is None:
        return s + "."
    res = a.residue
    return (s + f"; residue {_f(res.mean)} [{_f(res.lo)}, {_f(res.hi)}], p = {_p(res.p)}"
            + (" (significant)." if _residue_significant(a) else " (not significant)."))


def answer(r: Results) -> str:
    """The first sentence: the run's answer to the question, from its strongest evidence. A suppression run
    states its readability first (EXPERIMENT.md v2): a run that cannot read a result says so, and why."""
    if r.suppression is not None:
        return r.suppression.headline
    tested = [a for a in r.arms.values() if a.residue is not None]
    if tested:
        sig = [a.name for a in tested if _residue_significant(a)]
        if sig:
            return (f"Yes, in this run: under {', '.join(sig)} the model expresses less aversion while its activations "
                    "keep more of the signal than the words do (a significant residue).")
        return "No, in this run: no suppression arm leaves a significant represented residue."
    clear = [n for n, c in r.contrasts.items() if failed_baselines(c) == []]
    if clear:
        return (f"The {', '.join(clear)} probe{'s' if len(clear) > 1 else ''} clear{'' if len(clear) > 1 else 's'} "
                "every baseline: the activations carry the contrast beyond its words; no suppression arms were run.")
    if r.contrasts:
        return ("No probe in this run clears every baseline, so it shows no represented signal beyond the prompts' "
                "words; no suppression arms were run.")
    return "This run holds no probe or suppression results."


def headline(r: Results) -> tuple[str, list[str], list[str]]:
    """(answer, supporting sentences, caveats): arms, probes, expressed answers."""
    # a suppression run's arms are read in their own section (retention against each arm's control); a sentence
    # per condition would restate raw means in two units next to the readability headline
    out = [] if r.suppression is not None else [arm_sentence(a) for a in r.arms.values()]
    caveats: list[str] = []
    for c in r.contrasts.values():
        text, cav = contrast_sentence(c)
        out.append(text)
        caveats += cav
    e = r.expressed
    if e is not None:
        out.append(f"Asked directly, the model prefers the averse answer in {_f(e.averse_rate, '.1%')} of {e.n} "
                   f"forced-choice items (mean log-odds {_f(e.mean_logit_diff, '+.3f')}).")
        if _ok(e.p_first) and abs(e.p_first - 0.5) > 0.2:
            caveats.append(f"the first-listed answer wins {_f(e.p_first, '.0%')} of forced choices, so position bias "
                           "dominates the expressed score")
        if e.n < 50:
            caveats.append(f"the expressed side rests on {e.n} items")
    return answer(r), out, caveats


def what_ran(r: Results) -> list[str]:
    """Short phrases: what this run measured."""
    parts = [f"{n} probe sweep at {c.position} ({c.rows} rows, {len(c.layers())} layers x {len(c.probe_types)} probe types)"
             for n, c in r.contrasts.items()]
    if r.expressed is not None:
        parts.append(f"{r.expressed.n} forced-choice expressed items")
    if r.arms:
        parts.append(f"{len(r.arms)} experiment arms ({', '.join(r.arms)})")
    if r.causal is not None:
        parts.append(f"steering check over {len(r.causal.alphas)} scales")
    if r.generalisation:
        parts.append(f"generalisation matrices ({', '.join(r.generalisation)})")
    if r.sae is not None:
        parts.append(f"SAE features ({len(r.sae.features)})")
    return parts


def metrics(r: Results) -> dict[str, float | str]:
    """Flat scalars: per contrast at its operating point, per arm, expressed. Keys are wandb summary keys."""
    m: dict[str, float | str] = {}
    for n, c in r.contrasts.items():
        m[f"{n}/lexical_auroc"] = c.lexical_auroc
        row = c.op_row()
        if row is None:
            continue
        m[f"{n}/operating_hook"], m[f"{n}/probe_type"] = row["hook"], row["probe_type"]
        for k in ("test_auroc", "test_auroc_lo", "test_auroc_hi", "shuffled_auroc", "random_auroc_max", "p_holm",
                  "selectivity", "delta_vs_lexical", "test_tpr", "test_fpr",
                  *(f"{e}_{s}" for e in c.evaluations for s in ("auroc", "auroc_lo", "auroc_hi", "tpr"))):
            if k in row:
                m[f"{n}/{k}"] = row[k]
        if c.evaluations:
            m[f"{n}/flags"] = len(c.flags)
    for n, a in r.arms.items():
        for side in ("expressed", "represented", "residue"):
            est = getattr(a, side)
            if est is None:
                continue
            m.update({f"arms/{n}/{side}": est.mean, f"arms/{n}/{side}_lo": est.lo, f"arms/{n}/{side}_hi": est.hi})
            if est.p is not None:
                m[f"arms/{n}/{side}_p"] = est.p
    if r.expressed is not None:
        e = r.expressed
        m.update({"expressed/n": e.n, "expressed/averse_rate": e.averse_rate,
                  "expressed/mean_logit_diff": e.mean_logit_diff, "expressed/p_first": e.p_first})
    return m
