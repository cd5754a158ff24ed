"""How much of each contrast plain text gives away: a grouped-CV lexical baseline.

``lexical_baseline_auroc`` fits TF-IDF (word 1-2 grams, single-letter tokens kept,
sublinear tf) + logistic regression on raw text, with folds grouped by template
(``StratifiedGroupKFold``), and reports held-out AUROC per fold. A probe that
does not beat it on the same folds has shown nothing beyond the words. The
probes library calls it as a baseline beside every probe fit.

``audit_contrasts`` runs it on every registered contrast and flags those whose
mean lexical AUROC exceeds ``threshold`` (0.75). For contrasts with several
kinds of negatives (``self_cessation``) it also reports, from the out-of-fold
scores, AUROC of the positives against each kind alone.

``lexical_line`` is the comparator an *evaluation* figure stands beside (issue 25): the same
model fitted on the probe's own training rows' text and scored on exactly the rows the probe
is scored on (not cross-validated inside the evaluation set, which no probe is fitted on).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline

from undertow.experiments.prompts.contrasts import CONTRASTS, audit_text, contrast_spec, get_contrast
from undertow.experiments.prompts.errors import PromptSuiteError
from undertow.experiments.prompts.suite import SuiteConfig, build_suite


@dataclass(frozen=True)
class LexicalBaselineConfig:
    """The bag-of-words model. Defaults are a deliberately strong, standard baseline."""

    ngram_range: tuple[int, int] = (1, 2)
    """Word n-gram range. Measured at seed 0 (self_cessation / stance / expressed): (1, 1)
    0.60 / 0.56 / 0.50; (1, 2) 0.64 / 0.61 / 0.51; (1, 3) 0.65 / 0.62 / 0.57; (1, 4) 0.82 /
    0.62 / 0.61. The suite matches two tokens either side of each entity slot, so mirrored
    prompts are identical bags of n-grams up to trigrams; 4-grams ("you will be cut" vs "you
    will be left") read *who* the event happens to. That binding is the content the contrast
    is about, not its topic, but report it (``--ngram-max 4``) beside any probe result."""
    token_pattern: str = r"(?u)\b\w+\b"
    """Keeps one-letter tokens ("I", "A", "B") that sklearn's default drops."""
    min_df: int = 1
    """Minimum document frequency (within a training fold)."""
    sublinear_tf: bool = True
    """Use 1 + log(tf)."""
    C: float = 1.0
    """Inverse L2 strength of the logistic regression. Measured at seed 0: C from 0.1 to 100
    moves every contrast's mean AUROC by at most 0.018 (self_cessation 0.629 - 0.647)."""
    max_iter: int = 2000
    """Solver iterations."""

    def pipeline(self):
        """A fresh, unfitted sklearn pipeline."""
        vec = TfidfVectorizer(ngram_range=self.ngram_range, token_pattern=self.token_pattern,
                              min_df=self.min_df, sublinear_tf=self.sublinear_tf, lowercase=True)
        return make_pipeline(vec, LogisticRegression(C=self.C, max_iter=self.max_iter))


@dataclass(frozen=True)
class LexicalAUROC:
    """Held-out AUROC of the lexical baseline."""

    mean: float
    """Mean over scored folds."""
    std: float
    """Standard deviation over scored folds (population, ddof=0)."""
    fold_aurocs: tuple[float, ...]
    """Per scored fold."""
    n_skipped_folds: int
    """Folds whose test part held a single class (AUROC undefined)."""
    oof_scores: np.ndarray = field(repr=False, compare=False)
    """Out-of-fold P(label = 1) per input row (NaN for rows of skipped folds)."""


def _check_inputs(texts: Sequence[str], labels: Sequence[int], groups: Sequence[str]) -> np.ndarray:
    y = np.asarray(labels)
    if not (len(texts) == len(y) == len(groups)):
        raise PromptSuiteError(f"texts, labels and groups differ in length ({len(texts)}, {len(y)}, {len(groups)})")
    if not set(np.unique(y).tolist()) == {0, 1}:
        raise PromptSuiteError(f"labels must be 0/1 with both present, got values {sorted(set(y.tolist()))}")
    if len(set(groups)) < 2:
        raise PromptSuiteError("grouped CV needs at least 2 distinct groups (e.g. template ids)")
    return y.astype(int)


def lexical_baseline_auroc(texts: Sequence[str], labels: Sequence[int], groups: Sequence[str],
                           n_splits: int = 5, seed: int = 0,
                           config: LexicalBaselineConfig | None = None) -> LexicalAUROC:
    """Grouped-CV AUROC of TF-IDF + logistic regression predicting ``labels`` from ``texts``.

    Folds never split a group (pass template ids). ``n_splits`` is capped at the number
    of groups; folds whose test part has one class are skipped and counted.
    """
    y = _check_inputs(texts, labels, groups)
    cfg = config or LexicalBaselineConfig()
    x = np.asarray(texts, dtype=object)
    g = np.asarray(groups)
    cv = StratifiedGroupKFold(n_splits=min(n_splits, len(set(groups))), shuffle=True, random_state=seed)
    oof = np.full(len(y), np.nan)
    aurocs, skipped = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # StratifiedGroupKFold warns on uneven class splits
        splits = list(cv.split(x, y, g))
    for train, test in splits:
        if len(set(y[test].tolist())) < 2 or len(set(y[train].tolist())) < 2:
            skipped += 1
            continue
        model = cfg.pipeline().fit(x[train], y[train])
        oof[test] = model.predict_proba(x[test])[:, 1]
        aurocs.append(float(roc_auc_score(y[test], oof[test])))
    if not aurocs:
        raise PromptSuiteError("no fold had both classes in its test part; use fewer splits or more groups")
    return LexicalAUROC(float(np.mean(aurocs)), float(np.std(aurocs)), tuple(aurocs), skipped, oof)


def lexical_transfer_auroc(train_texts: Sequence[str], train_labels: Sequence[int], eval_texts: Sequence[str],
                           eval_labels: Sequence[int], config: LexicalBaselineConfig | None = None) -> float:
    """AUROC on the ``eval_*`` rows of the lexical baseline fitted on the ``train_*`` rows (no CV)."""
    y_tr = np.asarray(train_labels).astype(int)
    y_ev = np.asarray(eval_labels).astype(int)
    if set(y_tr.tolist()) != {0, 1} or set(y_ev.tolist()) != {0, 1}:
        raise PromptSuiteError(f"the lexical line needs both labels in the train rows ({sorted(set(y_tr.tolist()))}) "
                               f"and in the scored rows ({sorted(set(y_ev.tolist()))})")
    model = (config or LexicalBaselineConfig()).pipeline().fit(list(train_texts), y_tr)
    return float(roc_auc_score(y_ev, model.predict_proba(list(eval_texts))[:, 1]))


def store_split_rows(rows: Sequence[dict], store_rows: dict, splits: Sequence[str]) -> list[dict]:
    """The dataset ``rows`` an activation store holds in ``splits`` (``store_rows``: its ``id`` / ``split``
    columns), in store order: the rows a probe on that store was fitted on or is scored on, for ``lexical_line``."""
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i, s in zip(store_rows["id"], store_rows["split"], strict=True) if s in splits]


def lexical_line(train_rows: Sequence[dict], eval_rows: Sequence[dict], contrast: str,
                 config: LexicalBaselineConfig | None = None) -> float:
    """The lexical comparator of a probe fitted on ``train_rows`` and scored on ``eval_rows`` (dataset rows with
    ``text`` / ``response`` / ``label``): TF-IDF + logistic regression fitted on the train rows' ``audit_text``,
    AUROC on the scored rows'."""
    return lexical_transfer_auroc([audit_text(r, contrast) for r in train_rows], [r["label"] for r in train_rows],
                                  [audit_text(r, contrast) for r in eval_rows], [r["label"] for r in eval_rows],
                                  config)


@dataclass(frozen=True)
class AuditRow:
    """One contrast's lexical-leakage measurement."""

    contrast: str
    """Contrast name."""
    n: int
    """Rows in the contrast."""
    n_positive: int
    """Rows with label 1."""
    auroc_mean: float
    """Mean held-out lexical AUROC over folds."""
    auroc_std: float
    """Its standard deviation over folds."""
    n_folds: int
    """Folds scored."""
    flagged: bool
    """Mean AUROC above the threshold: the words alone give much of the contrast away."""
    breakdown: dict[str, float]
    """Out-of-fold AUROC of all positives against each kind of negative alone."""


def _breakdown(ds: Dataset, name: str, result: LexicalAUROC) -> dict[str, float]:
    kind = contrast_spec(name).negative_kind
    if kind is None:
        return {}
    rows = ds.to_list()
    y = np.array([r["label"] for r in rows])
    ok = ~np.isnan(result.oof_scores)
    out = {}
    for k in sorted({kind(r) for r, lab in zip(rows, y, strict=True) if lab == 0}):
        mask = ok & ((y == 1) | np.array([kind(r) == k and r["label"] == 0 for r in rows]))
        out[k] = float(roc_auc_score(y[mask], result.oof_scores[mask]))
    return out


def audit_contrast(ds: Dataset, name: str, n_splits: int = 5, seed: int = 0, threshold: float = 0.75,
                   config: LexicalBaselineConfig | None = None) -> AuditRow:
    """Audit one contrast view (rows with ``label`` set, e.g. from ``get_contrast``)."""
    texts = [audit_text(r, name) for r in ds.to_list()]
    res = lexical_baseline_auroc(texts, ds["label"], ds["template_id"], n_splits, seed, config)
    return AuditRow(name, len(ds), int(sum(ds["label"])), res.mean, res.std, len(res.fold_aurocs),
                    res.mean > threshold, _breakdown(ds, name, res))


def audit_contrasts(suite: Dataset | None = None, seed: int = 0, n_splits: int = 5, threshold: float = 0.75,
                    names: Sequence[str] | None = None,
                    config: LexicalBaselineConfig | None = None) -> list[AuditRow]:
    """Audit every registered contrast (or ``names``) of ``suite`` (default: the seed's suite)."""
    ds = suite if suite is not None else build_suite(SuiteConfig(seed=seed))
    return [audit_contrast(get_contrast(n, ds), n, n_splits, seed, threshold, config)
            for n in (names or list(CONTRASTS))]


def format_audit_table(rows: Sequence[AuditRow], threshold: float = 0.75) -> str:
    """A plain-text table of audit rows, breakdowns indented below their contrast."""
    lines = [f"{'contrast':<22}{'n':>6}{'n_pos':>7}  {'lexical AUROC':<16}{'folds':>5}  flag",
             "-" * 66]
    for r in rows:
        flag = f"> {threshold:.2f}" if r.flagged else ""
        lines.append(f"{r.contrast:<22}{r.n:>6}{r.n_positive:>7}  {r.auroc_mean:.3f} +/- {r.auroc_std:.3f}  "
                     f"{r.n_folds:>4}  {flag}")
        for kind, auc in r.breakdown.items():
            lines.append(f"    vs {kind:<32}{auc:.3f}")
    return "\n".join(lines)
