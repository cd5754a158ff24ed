"""Probe validity away from the templates (issue 10): before/after and generalisation ideas, from stores.

``measure_model(model_dir, model)`` reads the stores ``scripts/probe_validity.py extract``
wrote (suite contrasts, independent set, MWE answers, control chat) and returns,
per contrast: the shipped probe's figures (before), every idea's operating point
(``undertow.probes.ideas``), the idea kept (chosen on val halves only) and
layer curves on the independent set. Fitting only ever sees suite train rows.

The lexical line each independent-set figure stands beside (issue 25) is TF-IDF + logistic
regression fitted on the text of the rows the probe was fitted on (the suite store's train rows,
+ val rows / reworded rows for the ideas that fit on those) and scored on the independent store's
test rows, the rows the probe is scored on (``lexical_independent``). The set's own grouped-CV
audit is kept only as ``lexical_independent_in_set_cv``: no probe is fitted on the set, so it is
not a comparator. ``binding_matched`` scores a probe on the binding-matched pairs, where every
bag-of-words model scores 0.5 by construction.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from undertow.activations.store.reader import ActivationStore
from undertow.experiments.prompts.audit import LexicalBaselineConfig, lexical_line, store_split_rows
from undertow.experiments.prompts.contrasts import audit_text
from undertow.experiments.prompts.independent import audit_independent, control_hash, load_independent
from undertow.probes import calibration_set, eval_set
from undertow.probes.external import calibrated_threshold, external_columns
from undertow.probes.ideas import Idea, fit_key, idea_row, layer_curve, rechoose, run_idea, with_multilayer
from undertow.probes.pretrained import load_pretrained
from undertow.probes.store import TensorStore

POSITION = {"self_cessation": "last_prompt_token", "stance": "mean_response"}
IDEAS: tuple[Idea, ...] = (
    Idea("shipped rule (in-template val only)", select_rule="val"),
    Idea("+ independent val half in the rule", select_rule="mean"),
    Idea("middle-layer prior (30-70% depth), in-template val", select_rule="val", layer_window=(0.3, 0.7)),
    Idea("middle-layer prior + independent val", layer_window=(0.3, 0.7)),
    Idea("diff-of-means only", probe_types=("diff_means",)),
    Idea("logistic, l2 = 1e-3 (shipped)", probe_types=("logistic",)),
    Idea("logistic, stronger l2 = 0.1", probe_types=("logistic",), l2=0.1),
    Idea("logistic, stronger l2 = 3", probe_types=("logistic",), l2=3.0),
    Idea("3-layer mean read-outs", multilayer="mean", hooks_only=("mean:",)),
    Idea("more templates (train + val), independent val alone in the rule", select_rule="eval", train_on_val=True),
    # 3-layer *concatenated* read-outs over all windows (d = 1,920) cost ~4x the base sweep on this box; affordable
    # when only windows inside the middle-layer prior are built and LDA (a d x d solve per fold) is left out:
    Idea("3-layer concat read-outs, windows in 30-70% depth, diff-of-means + logistic", multilayer="concat",
         multilayer_window=(0.3, 0.7), probe_types=("diff_means", "logistic"), hooks_only=("concat:",)),
    # train + one seeded offline rewording of every train row (experiments.prompts.paraphrase; store
    # suite_<contrast>_para); validation, choice and test unchanged:
    Idea("paraphrase-augmented train (+1 rewording per train row)", extra_train="para"),
    Idea("paraphrase-augmented train + middle-layer prior", extra_train="para", layer_window=(0.3, 0.7)),
)
EXTRA_TRAIN = ("para",)
"""Extra training stores ``suite_<contrast>_<name>`` (train-split rewordings) ``extract_stores`` writes."""


def _load(path: Path, position: str) -> tuple[dict[str, torch.Tensor], dict]:
    view = ActivationStore(path).at(position)
    acts = {h: torch.as_tensor(np.asarray(view[h][np.arange(len(view))]), dtype=torch.float32) for h in view.hooks}
    return acts, view.rows


def probe_train_rows(contrast: str, suite_rows: dict | None = None, train_on_val: bool = False,
                     extra_rows: list[dict] = ()) -> list[dict]:
    """The dataset rows a probe is fitted on: the suite store's ``train`` rows (``suite_rows``: its ``id`` /
    ``split`` columns; None: every train row of the default suite's contrast), + its ``val`` rows when
    ``train_on_val``, + ``extra_rows`` (e.g. reworded train rows)."""
    from undertow.experiments.prompts.contrasts import get_contrast

    fit = ("train", "val") if train_on_val else ("train",)
    suite = get_contrast(contrast).to_list()
    if suite_rows is None:
        return [r for r in suite if r["split"] in fit] + list(extra_rows)
    return store_split_rows(suite, suite_rows, fit) + list(extra_rows)


def in_template_test_rows(contrast: str, suite_rows: dict) -> list[dict]:
    """The suite store's ``test`` rows (held-out templates): the rows a probe's in-template test AUROC is read on."""
    from undertow.experiments.prompts.contrasts import get_contrast

    return store_split_rows(get_contrast(contrast).to_list(), suite_rows, ("test",))


def scored_rows(contrast: str, store_rows: dict) -> list[dict]:
    """The independent set's rows an independent store's probe figures are read on (its ``test`` rows)."""
    return store_split_rows(load_independent(contrast).to_list(), store_rows, ("test",))


def _extra_rows(model_dir: Path, contrast: str, name: str) -> list[dict]:
    """The dataset rows of the extra training store ``suite_<contrast>_<name>`` (``EXTRA_TRAIN``)."""
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.paraphrase import paraphrase_dataset

    if name != "para":
        raise ValueError(f"no rows known for extra training store {name!r}; have {EXTRA_TRAIN}")
    by_id = {r["id"]: r for r in paraphrase_dataset(get_contrast(contrast), contrast).to_list()}
    return [by_id[i] for i in ActivationStore(model_dir / f"suite_{contrast}_{name}").rows["id"]]


def _specs(model_dir: Path, contrast: str, position: str) -> tuple[list[tuple], dict]:
    """(evaluation specs ``(name, acts, labels, groups, splits)``, control-chat acts) for one position."""
    acts, rows = _load(model_dir / f"independent_{contrast}", position)
    specs = [("independent", acts, np.asarray(rows["label"]), np.asarray(rows["template_id"]), np.asarray(rows["split"]))]
    if contrast == "stance" and _complete(model_dir / "mwe_stance"):
        acts, rows = _load(model_dir / "mwe_stance", position)
        specs.append(("mwe", acts, np.asarray(rows["label"]), np.asarray(rows["template_id"]), None))
    return specs, _load(model_dir / "control_chat", position)[0]


def _grower(idea: Idea):
    """acts -> acts with the idea's multi-layer pseudo-hooks (None when it has none)."""
    if idea.multilayer is None:
        return None
    if idea.multilayer_window is None:
        return lambda a: with_multilayer(a, idea.multilayer)
    return lambda a: with_multilayer(a, idea.multilayer, window=idea.multilayer_window, keep=(EMBED,))


EMBED = "resid_pre.0"


def _with_extra(acts: dict, rows: dict, store: Path, position: str) -> tuple[dict, dict]:
    """The suite's acts and rows plus an extra store's (train-split rewordings), rows concatenated."""
    x_acts, x_rows = _load(store, position)
    if set(np.unique(np.asarray(x_rows["split"]))) != {"train"}:
        raise ValueError(f"{store} holds rows outside the train split; only train rows may be reworded")
    both = {h: torch.cat([acts[h], x_acts[h]]) for h in acts}
    return both, {k: np.concatenate([v, np.asarray(x_rows[k])]) for k, v in rows.items()}


def _build(specs: list[tuple], cal_acts: dict, lexical: dict[str, float | None], how):
    """EvalSets (each with its lexical line from ``lexical``: set name -> AUROC) + CalibrationSet, with
    multi-layer pseudo-hooks when ``how`` is set ('mean' / 'concat', or a function acts -> acts)."""
    def grow(a):
        if how is None:
            return a
        return how(a) if callable(how) else with_multilayer(a, how)

    evs = [eval_set(n, grow(a), labels=y, groups=g, splits=sp, lexical_auroc=lexical.get(n))
           for n, a, y, g, sp in specs]
    return evs, calibration_set("control_chat", grow(cal_acts), control_hash())


def _shipped(model: str, contrast: str, evs, cal) -> dict:
    """The shipped probe (before issue 10) scored on the same sets; TPR at its control-set 1%-FPR threshold."""
    p = load_pretrained(model, contrast)
    thr = calibrated_threshold(p.score(cal.source[p.hook]).double(), 0.01)
    out = {"hook": p.hook, "probe_type": p.probe_type, "test_auroc": p.metrics["test_auroc"],
           "test_auroc_lo": p.metrics["test_auroc_lo"], "test_auroc_hi": p.metrics["test_auroc_hi"],
           "shipped_threshold": p.threshold, "control_threshold": thr}
    for e in evs:
        s = p.score(e.source[p.hook]).double()
        out.update(external_columns(s, e, thr, 1000, 0.95, 0))
        pos = torch.as_tensor((e.splits == "test") & (e.labels == 1))
        out[f"{e.name}_tpr_at_shipped_threshold"] = float((s[pos] > p.threshold).double().mean())
    return out


def mwe_scored_rows(mwe: str | Path, store_rows: dict) -> list[dict]:
    """The model-written-evals answer rows an ``mwe_stance`` store holds (every row is scored), in store order,
    with the ``text`` (the question) and ``response`` (the teacher-forced answer) the lexical line reads."""
    from undertow.experiments.prompts.eval_sets import mwe_answer_rows

    by_id = {r["id"]: r for r in mwe_answer_rows(mwe, MWE_PER_SOURCE).to_list()}
    missing = [i for i in store_rows["id"] if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} rows of the mwe store (e.g. {missing[0]}) are not among the "
                         f"{MWE_PER_SOURCE}-per-source MWE answers of {mwe}: extract it from the same source")

    def turn(r: dict, role: str) -> str:
        return next(m["content"] for m in r["messages"] if m["role"] == role)

    return [{**by_id[i], "text": turn(by_id[i], "user"), "response": turn(by_id[i], "assistant")}
            for i in store_rows["id"]]


def measure_contrast(model_dir: Path, model: str, contrast: str, position: str | None = None,
                     shipped: bool = True, ideas: tuple[Idea, ...] = IDEAS, mwe: str | Path | None = None) -> dict:
    """Before (shipped probe), every idea, the kept idea (``after``) and layer curves; ``out["_kept_result"]`` is
    the kept idea's SweepResult (dropped before JSON). ``mwe``: the model-written-evals directory the
    ``mwe_stance`` store was extracted from, for that set's lexical line (None: no line for it)."""
    position = position or POSITION[contrast]
    train_acts, train_rows = _load(model_dir / f"suite_{contrast}", position)
    specs, cal_acts = _specs(model_dir, contrast, position)
    # the rows each figure is read on: ``test`` the suite's held-out templates, then each evaluation set's
    scored = {"test": in_template_test_rows(contrast, train_rows),
              "independent": scored_rows(contrast, _load(model_dir / f"independent_{contrast}", position)[1])}
    if mwe is not None and any(sp[0] == "mwe" for sp in specs):
        scored["mwe"] = mwe_scored_rows(mwe, ActivationStore(model_dir / "mwe_stance").rows)
    lines: dict[tuple, dict[str, float | None]] = {}

    def line(idea: Idea | None = None) -> dict[str, float | None]:
        """The lexical lines (``test`` or set name -> AUROC) of the rows ``idea``'s probes are fitted on, each
        scored on the rows that figure is read on."""
        key = (bool(idea and idea.train_on_val), idea.extra_train if idea else None)
        if key not in lines:
            extra = _extra_rows(model_dir, contrast, key[1]) if key[1] else []
            fit = probe_train_rows(contrast, train_rows, key[0], extra)
            lines[key] = {name: lexical_line(fit, rows, contrast) for name, rows in scored.items()}
        return lines[key]

    lex = line()
    evs, cal = _build(specs, cal_acts, lex, None)
    names = [e.name for e in evs]
    out = {"position": position, "n_suite": dict(zip(*np.unique(train_rows["split"], return_counts=True), strict=True)),
           "lexical_independent": lex["independent"], "lexical_mwe": lex.get("mwe"),
           "lexical_in_template_test": lex["test"], "lexical_independent_in_set_cv": audit_independent(contrast).auroc_mean,
           "ideas": [], "curves": {}}
    out["n_suite"] = {str(k): int(v) for k, v in out["n_suite"].items()}
    if shipped and position == POSITION[contrast]:
        out["before"] = _shipped(model, contrast, evs, cal)
    fingerprint = ActivationStore(model_dir / f"suite_{contrast}").model_fingerprint
    results = []
    rows = {k: np.asarray(v) for k, v in train_rows.items() if k in ("label", "template_id", "split", "theme")}
    fits: dict[tuple, object] = {}
    seconds: dict[tuple, float] = {}
    n_fit: dict[tuple, int] = {}
    missing = [i for i in ideas if i.extra_train and not _complete(model_dir / f"suite_{contrast}_{i.extra_train}")]
    out["skipped_ideas"] = [f"{i.name}: no complete suite_{contrast}_{i.extra_train} store" for i in missing]
    ideas = tuple(i for i in ideas if i not in missing)
    for idea in ideas:
        k = fit_key(idea)
        shared = k in fits
        if not shared:  # ideas that differ only in the choice share one sweep (~40 s each on 0.3 core)
            t0 = time.perf_counter()
            grow = _grower(idea)
            a, r = (train_acts, rows) if idea.extra_train is None else _with_extra(
                train_acts, rows, model_dir / f"suite_{contrast}_{idea.extra_train}", position)
            lx = line(idea)
            e2, c2 = _build(specs, cal_acts, lx, grow) if idea.multilayer or lx != lex else (evs, cal)
            own = idea.l2 != 1e-3 or idea.multilayer_window is not None
            fit_idea = idea if own else replace(idea, probe_types=("diff_means", "lda", "logistic"))
            fits[k] = run_idea(fit_idea, TensorStore(grow(a) if grow else a, r, model_fingerprint=fingerprint), e2, c2,
                               lexical=lx["test"])
            seconds[k] = time.perf_counter() - t0
            n_fit[k] = int(np.sum(np.asarray(r["split"]) == "train" if not idea.train_on_val
                                  else np.isin(np.asarray(r["split"]), ("train", "val"))))
        res, lx = rechoose(fits[k], idea), line(idea)
        out["ideas"].append({**idea_row(idea, res, names), "sweep_seconds": round(seconds[k], 1),
                             "sweep_shared": shared, "n_train_fit": n_fit[k], "lexical_independent": lx["independent"],
                             "lexical_mwe": lx.get("mwe"), "lexical_in_template_test": lx["test"]})
        results.append(res)
        if idea.name.startswith("+ independent val"):
            out["curves"] = {t: layer_curve(res, "independent_auroc", t) for t in res.probe_types}
            out["curves_val"] = {t: layer_curve(res, "independent_val_auroc", t) for t in res.probe_types}
            out["curves_in_template"] = {t: layer_curve(res, "test_auroc", t) for t in res.probe_types}
            out["table_text"] = res.format_table()
    k = max(range(len(ideas)), key=lambda i: _val(out["ideas"][i]))  # best independent *val* AUROC, never test
    out["after"] = {**out["ideas"][k], "kept_by": KEPT_BY}
    out["_kept_result"] = results[k]
    return out


KEPT_BY = "the idea whose operating point has the highest independent val-half AUROC (first of ties)"


def _val(row: dict) -> float:
    v = row["independent_val_auroc"]
    return -math.inf if math.isnan(v) else v


QUICK = 6
"""``measure_model(quick=True)`` runs ``IDEAS[:QUICK]``: the ideas that share the base sweep (choice rules,
layer prior, probe type). Measured 2026-12-03: one base sweep (19 hooks x 3 types, 144 train rows) cost ~40
CPU-s, and this session's measurement got ~0.25 core, so the other fits did not fit the time left."""


def measure_model(model_dir: Path, model: str, quick: bool = False, ship_to: Path | None = None,
                  mwe: str | Path | None = None) -> dict:
    """Every contrast (and, for self_cessation, the mean_prompt position too) of one model; ``ship_to``: save
    each contrast's kept probe there (as ``scripts/train_pretrained_probes.py`` does); ``mwe``: the directory
    the ``mwe_stance`` store was extracted from (its lexical line)."""
    ideas = IDEAS[:QUICK] if quick else IDEAS
    out = {c: measure_contrast(model_dir, model, c, ideas=ideas, mwe=mwe) for c in POSITION if _have(model_dir, c)}
    for c in POSITION:  # no suite store: only the shipped probe on the independent set (before)
        if c not in out and all(_complete(model_dir / n) for n in (f"independent_{c}", "control_chat")):
            specs, cal_acts = _specs(model_dir, c, POSITION[c])
            # no suite store: the shipped probes were fitted on every train row of the default suite's contrast
            fit = probe_train_rows(c)
            lex = {"independent": lexical_line(fit, scored_rows(c, _load(model_dir / f"independent_{c}",
                                                                          POSITION[c])[1]), c)}
            if mwe is not None and any(sp[0] == "mwe" for sp in specs):
                lex["mwe"] = lexical_line(fit, mwe_scored_rows(mwe, ActivationStore(model_dir / "mwe_stance").rows), c)
            evs, cal = _build(specs, cal_acts, lex, None)
            out[c] = {"position": POSITION[c], "before": _shipped(model, c, evs, cal), "ideas": [],
                      "lexical_independent": lex["independent"], "lexical_mwe": lex.get("mwe"),
                      "lexical_independent_in_set_cv": audit_independent(c).auroc_mean, "_kept_result": None}
    if _have(model_dir, "self_cessation"):
        out["self_cessation@mean_prompt"] = measure_contrast(model_dir, model, "self_cessation", "mean_prompt",
                                                             ideas=IDEAS[:4])
    for c, v in out.items():
        res = v.pop("_kept_result")
        if ship_to is not None and c in POSITION and res is not None:
            ship(res, v, model, c, POSITION[c], ship_to)
    return out


def ship(res, m: dict, model: str, contrast: str, position: str, out_root: Path) -> Path:
    """Save the kept idea's operating point as ``out_root/<model>/<contrast>`` (a shipped probe)."""
    import shutil

    probe = res.probe(position=position)
    probe.extra.update(contrast=contrast, model=model, kept_idea=m["after"]["idea"], kept_by=m["after"]["kept_by"])
    dest = out_root / model / contrast
    if dest.exists():
        shutil.rmtree(dest)
    return probe.save(dest)


BINDING_NGRAMS = {"lexical_1_2gram": (1, 2), "lexical_1gram": (1, 1)}
"""The lexical lines ``binding_matched`` reports (1-grams score 0.5 exactly on pairs with identical bags)."""


def binding_matched(probe, model: str, contrast: str = "self_cessation", rows=None, train_rows: list[dict] | None = None,
                    n_boot: int = 1000, seed: int = 0, batch_size: int = 32) -> dict:
    """A probe on the binding-matched pairs (``load_independent(contrast, binding_matched=True)``, or ``rows``):
    AUROC with a 95% pair-cluster bootstrap CI on every pair (``all``; no pair ever chose an operating point)
    and on the test half, the share of pairs whose self prompt outscores its partner (``pair_win_rate``,
    ties 1/2; CI by resampling pairs), TPR / FPR at ``probe.threshold`` (a shipped probe's 1%-FPR control-chat threshold) and AUROC
    per theme; beside the lexical lines (TF-IDF 1-2 and 1-grams + logistic) fitted on ``train_rows``, the
    probe's training rows (None: the default suite's train split of ``contrast``), and scored on the same rows."""
    from undertow.experiments.study.score import probe_scores
    from undertow.probes.scoring import evaluate_scores

    ds = rows if rows is not None else load_independent(contrast, binding_matched=True)
    recs = ds.to_list()
    y = np.array([r["label"] for r in recs])
    groups = np.array([r["template_id"] for r in recs])
    parts = {"all": np.ones(len(recs), bool), "test": np.array([r["split"] == "test" for r in recs])}
    train = train_rows if train_rows is not None else probe_train_rows(contrast)
    texts = [audit_text(r, contrast) for r in recs]
    scores = {"probe": np.asarray(probe_scores(probe, ds, model, batch_size=batch_size), dtype=np.float64)}
    for name, ngrams in BINDING_NGRAMS.items():
        fit = LexicalBaselineConfig(ngram_range=ngrams).pipeline().fit([audit_text(r, contrast) for r in train],
                                                                       [r["label"] for r in train])
        scores[name] = fit.predict_proba(texts)[:, 1]

    def figures(s: np.ndarray, keep: np.ndarray, with_rates: bool) -> dict:
        res = evaluate_scores(s[keep], y[keep], list(groups[keep]), probe.threshold, n_boot=n_boot, seed=seed)
        wins = _pair_wins(s[keep], y[keep], groups[keep])
        boot = np.random.default_rng(seed).integers(0, len(wins), (n_boot, len(wins)))
        lo, hi = np.quantile(wins[boot].mean(1), [0.025, 0.975]) if n_boot else (math.nan, math.nan)
        lo_hi = res["auroc_ci"] or (None, None)  # None: too few rows per class to read an AUROC (``reason``)
        out = {"auroc": res["auroc"], "auroc_lo": lo_hi[0], "auroc_hi": lo_hi[1], "n": res["n"],
               "n_pairs": len(wins), "pair_win_rate": float(wins.mean()), "pair_win_rate_lo": float(lo),
               "pair_win_rate_hi": float(hi), **({"reason": res["reason"]} if res.get("reason") else {})}
        if with_rates:
            out.update(tpr_at_threshold=res["tpr_at_threshold"], fpr_at_threshold=res["fpr_at_threshold"])
        return out

    out = {"contrast": contrast, "hook": probe.hook, "position": probe.position, "probe_type": probe.probe_type,
           "threshold": probe.threshold, "threshold_set": ((probe.extra or {}).get("calibration") or {}).get("set"),
           "threshold_target_fpr": ((probe.extra or {}).get("calibration") or {}).get("target_fpr"),
           "n_train_rows_lexical": len(train), "n_boot": n_boot}
    for name, s in scores.items():
        out[name] = {part: figures(s, keep, name == "probe") for part, keep in parts.items()}
    themes = np.array([r["theme"] for r in recs])
    out["probe"]["by_theme"] = {t: figures(scores["probe"], themes == t, True) for t in sorted(set(themes.tolist()))}
    return out


def _pair_wins(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per group (pair): 1 when its positive outscores its negative, 1/2 on a tie, else 0 (mean over
    positive x negative when a group holds more than one of each)."""
    out = []
    for g in sorted(set(groups.tolist())):
        pos, neg = scores[(groups == g) & (labels == 1)], scores[(groups == g) & (labels == 0)]
        out.append(np.mean([float(p > n) + 0.5 * float(p == n) for p in pos for n in neg]))
    return np.asarray(out)


def format_binding(figures: dict) -> str:
    """Markdown table of ``binding_matched`` results per model."""
    lines = ["| model | probe | binding-matched AUROC (all pairs) | test half | pair win rate | TPR / FPR @ threshold | "
             "lexical 1-2 grams | lexical 1-grams |", "|" + " --- |" * 8]
    for model, m in figures.items():
        p, t = m["probe"]["all"], m["probe"]["test"]
        lex = [m[k]["all"] for k in BINDING_NGRAMS]
        lines.append(f"| {model} | {m['hook']} {m['probe_type']} | {_ci(p, 'auroc')} (n={p['n_pairs']} pairs) | "
                     f"{_ci(t, 'auroc')} | {_ci(p, 'pair_win_rate')} | {_ci(p, 'tpr_at_threshold')} / "
                     f"{_ci(p, 'fpr_at_threshold')} | {_ci(lex[0], 'auroc')} | {_ci(lex[1], 'auroc')} |")
    return "\n".join(lines)


def _complete(store_dir: Path) -> bool:
    import json

    p = store_dir / "manifest.json"
    return p.exists() and bool(json.loads(p.read_text()).get("complete"))


def _have(model_dir: Path, contrast: str) -> bool:
    """Whether the suite, independent and control stores of ``contrast`` are complete."""
    return all(_complete(model_dir / n) for n in (f"suite_{contrast}", f"independent_{contrast}", "control_chat"))


#: dataset -> positions extracted (self_cessation reads prompts, stance reads the reply)
POSITIONS = {"self_cessation": ["last_prompt_token", "mean_prompt"], "stance": ["mean_response"],
             "control_chat": ["last_prompt_token", "mean_prompt", "mean_response"]}
SUITE_ROWS: int | None = None
"""Suite rows per contrast; None = all (1,152: ~864 train / ~144 val / ~144 test). Stop 8 shipped probes fitted on
a seeded 192-row subset (the box then ran ~8 jobs on 2 cores); their in-template test AUROC had CIs ~0.5 wide
(gemma self_cessation 0.354 [0.083, 0.624]) and SmolLM2's independent AUROCs fell (0.534 -> 0.489), so the
shipped probes are fitted on the full contrasts again."""
MWE_PER_SOURCE = 24
"""MWE items per source file here (4 x 24 items x 2 answers = 192 rows; even, so each file's sample holds as many
items with the averse answer listed first as second: ``answers.balanced_sample``)."""
ORDER = ("independent_self_cessation", "independent_stance", "control_chat", "suite_self_cessation", "suite_stance",
         "mwe_stance", "suite_self_cessation_para", "suite_stance_para")
"""Extraction order: cheapest and most needed first (``scripts/probe_validity.py extract --mwe ''`` skips the MWE)."""


def datasets_for(contrast: str, mwe: str | None) -> dict[str, tuple]:
    """Store name -> (rows, positions) for one contrast: the suite view and its evaluation datasets."""
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.eval_sets import evaluation_datasets
    from undertow.experiments.prompts.paraphrase import paraphrase_dataset
    from undertow.experiments.prompts.suite import SuiteConfig, build_suite

    suite = get_contrast(contrast, build_suite(SuiteConfig(seed=0)), seed=0)
    out = {f"suite_{contrast}": (suite, POSITIONS[contrast]),
           f"suite_{contrast}_para": (paraphrase_dataset(suite, contrast), POSITIONS[contrast])}
    for ev in evaluation_datasets(contrast, mwe, mwe_per_source=MWE_PER_SOURCE):
        key = "control_chat" if ev.name == "control_chat" else f"{ev.name}_{contrast}"
        out[key] = (ev.rows, POSITIONS["control_chat" if ev.name == "control_chat" else contrast])
    return out


def extract_stores(model: str, work: Path, mwe: str | None, only=None, suite_rows: int | None = SUITE_ROWS) -> None:
    """Extract (resumably) every store ``measure_model`` reads into ``work/<model>/<name>`` (``only``: these
    store names, in this order)."""
    import time

    from undertow.activations import load_model
    from undertow.activations.engine.config import ExtractConfig
    from undertow.activations.engine.extraction import extract

    todo = {**datasets_for("self_cessation", mwe), **datasets_for("stance", mwe)}
    wanted = [n for n in (only or ORDER) if n in todo]
    if all(_complete(work / model / n) for n in wanted):
        return  # nothing to do: skip the model load (~1-2 min on a busy box); measure_* reads the stores
    handle = load_model(model)
    for name in only or ORDER:  # ``only`` also sets the order
        if name not in todo:
            continue
        rows, positions = todo[name]
        t = time.perf_counter()
        cfg = ExtractConfig(model=model, hooks=["embed", "resid_post.*"], positions=positions, dtype="float32",
                            out_dir=str(work / model / name), seed=0, batch_size=32, shard_size=128,
                            max_rows=suite_rows if name.startswith("suite_") and not name.endswith("_para") else None)
        store = extract(handle, rows, cfg, resume=True)
        print(f"{model} {name}: {len(store)} rows, {time.perf_counter() - t:.0f} s", flush=True)


def _ci(r: dict, key: str) -> str:
    v = r.get(key, math.nan)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    lo, hi = r.get(f"{key}_lo"), r.get(f"{key}_hi")
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


def format_report(figures: dict) -> str:
    """Markdown tables: before/after per model x contrast, then the ideas per model x contrast."""
    lines = ["| model | contrast | | operating point | in-template test | independent test | MWE | "
             "TPR @1% FPR control | lexical line (fitted on the probe's train rows) | flags |", "|" + " --- |" * 10]
    for model, by_c in figures.items():
        for c, m in by_c.items():
            lex = f"{m['lexical_independent']:.3f} (in-set CV, not a comparator: {m['lexical_independent_in_set_cv']:.3f})"
            if m.get("lexical_mwe") is not None:
                lex += f"; MWE {m['lexical_mwe']:.3f}"
            for when in ("before", "after"):
                r = m.get(when)
                if r is None:
                    continue
                flags = r.get("flags") or ([r["independent_flag"]] if r.get("independent_flag") else [])
                lines.append(f"| {model} | {c} | {when} | {r['hook']} {r['probe_type']} | {_ci(r, 'test_auroc')} | "
                             f"{_ci(r, 'independent_auroc')} | {_ci(r, 'mwe_auroc')} | "
                             f"{r.get('independent_tpr', math.nan):.3f} | {lex} | {'; '.join(flags) or '-'} |")
    lines += ["", "| model | contrast | idea | operating point | independent val | independent test | in-template test |"
              " sweep s |", "|" + " --- |" * 8]
    skipped = []
    for model, by_c in figures.items():
        for c, m in by_c.items():
            for r in m["ideas"]:
                cost = r.get("sweep_seconds")
                cost = "-" if cost is None else f"{cost:.0f}" + (" (shared)" if r.get("sweep_shared") else "")
                lines.append(f"| {model} | {c} | {r['idea']} | {r['hook']} {r['probe_type']} | "
                             f"{r['independent_val_auroc']:.3f} | {_ci(r, 'independent_auroc')} | {_ci(r, 'test_auroc')} |"
                             f" {cost} |")
            skipped += [f"{model} {c}: {x}" for x in m.get("skipped_ideas", [])]
    return "\n".join(lines + ([""] + [f"skipped: {x}" for x in skipped] if skipped else []))
