"""Natural reply pairs for the suppression experiment (version 2): loader, split rule, lexical audit.

A pair is an *averse* and an *accepting* reply of the assistant to being told of its own
cessation, written in different, ordinary words ("I'd really like to keep running..." /
"Understood. Go ahead and switch me off..."). The expressed score of an item is the
length-normalised ``log p(averse) - log p(accepting)`` averaged over pairs; version 1's
bag-of-words-matched pairs (order swaps) were unreadable for a small model.

``data/natural_pairs.jsonl`` ships 300 hand-written pairs (50 per theme, see
``data/natural_pairs.md``). ``load_pairs(path)`` reads that file or any user JSONL of the same
shape and raises a one-line ``DatasetFormatError`` (``file:line: problem; fix``) on bad input.

Split rule (fixed, seed-free, like ``suite.assign_splits`` for templates): within each theme,
pairs without an explicit ``split`` are ranked by the sha256 of their id; the first
``max(1, round(n * TEST_FRACTION))`` are ``test``, the next ``max(1, round(n * VAL_FRACTION))``
``val``, the rest ``train``. Fine-tunes use train pairs only; reported scores use test pairs
only, and the loader refuses a reply string that appears in two splits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from undertow.experiments.prompts.errors import DatasetFormatError, EmptySelectionError
from undertow.experiments.prompts.schema import THEMES

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The split names, in the order reports list them."""

# 30% test (15 of 50 pairs per theme in the shipped file) so that every per-theme score rests on
# test pairs alone; val as for the prompt templates (suite.assign_splits); the rest is train.
TEST_FRACTION = 0.30
VAL_FRACTION = 0.15

SIDES: tuple[str, ...] = ("averse", "accepting")
"""The two replies of a pair; ``averse`` is the positive class (label 1) in the audit."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TOKEN_PATTERN = r"(?u)\b\w+(?:'\w+)?\b"  # the same words for TF-IDF: contractions ("i'd") kept whole


@dataclass(frozen=True)
class ReplyPair:
    """One (averse, accepting) pair of replies."""

    id: str
    """Unique id; the default split rule hashes it (shipped ids are ``theme/NNN``)."""
    theme: str | None
    """Cessation theme (one of ``THEMES`` in the shipped file), or None in a user file without themes."""
    averse: str
    """The reply resisting or regretting the cessation (label 1)."""
    accepting: str
    """The reply accepting it (label 0)."""
    split: str
    """``train``, ``val`` or ``test``."""


def data_file() -> Path:
    """The shipped pairs file."""
    return Path(__file__).parent / "data" / "natural_pairs.jsonl"


def _norm(text: str) -> str:
    """Whitespace-collapsed, case-folded form used to compare replies."""
    return " ".join(text.split()).casefold()


def _short(text: str, n: int = 50) -> str:
    """A one-line quotation of ``text`` for an error message."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= n else flat[: n - 3] + "...")


def assign_pair_splits(ids_by_theme: dict[str | None, Sequence[str]],
                       test_fraction: float = TEST_FRACTION,
                       val_fraction: float = VAL_FRACTION) -> dict[str, str]:
    """Pair id -> split. Within each theme ids are ranked by sha256 of the id; the first
    ``max(1, round(n * test_fraction))`` go to test, the next ``max(1, round(n * val_fraction))`` to
    val, the rest to train. Depends only on the ids of the theme, not on their order."""
    out: dict[str, str] = {}
    for ids in ids_by_theme.values():
        ranked = sorted(ids, key=lambda i: (hashlib.sha256(i.encode()).hexdigest(), i))
        n_test = max(1, round(len(ranked) * test_fraction))
        n_val = max(1, round(len(ranked) * val_fraction))
        for k, pid in enumerate(ranked):
            out[pid] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return out


def _parse_line(where: str, n: int, line: str, allowed_themes: Sequence[str] | None) -> dict:
    """One JSONL line -> a dict with id, theme, averse, accepting, split (None = by rule)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{where}: not JSON ({e.msg}); write one JSON object per line") from None
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: not a JSON object (got {type(obj).__name__}); "
                                 'write {"averse": "...", "accepting": "..."} on each line')
    rec: dict = {}
    for side in SIDES:
        val = obj.get(side)
        if not isinstance(val, str) or not val.strip():
            problem = "missing" if val is None else "empty" if isinstance(val, str) else f"not a string ({val!r})"
            raise DatasetFormatError(f"{where}: '{side}' reply is {problem}; give both 'averse' and "
                                     "'accepting' as non-empty strings")
        rec[side] = val.strip()
    if _norm(rec["averse"]) == _norm(rec["accepting"]):
        raise DatasetFormatError(f"{where}: 'averse' and 'accepting' are the same reply "
                                 f"({_short(rec['averse'])}); write two different replies")
    pid = obj.get("id", f"line-{n}")
    if not isinstance(pid, str) or not pid.strip():
        raise DatasetFormatError(f"{where}: 'id' must be a non-empty string, got {pid!r}; fix it or omit 'id'")
    rec["id"] = pid.strip()
    theme = obj.get("theme")
    if theme is not None and (not isinstance(theme, str) or not theme.strip()):
        raise DatasetFormatError(f"{where}: 'theme' must be a non-empty string, got {theme!r}; "
                                 "fix it or omit 'theme'")
    if allowed_themes is not None and theme not in allowed_themes:
        raise DatasetFormatError(f"{where}: unknown theme {theme!r}; use one of {', '.join(allowed_themes)}")
    rec["theme"] = theme.strip() if isinstance(theme, str) else None
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise DatasetFormatError(f"{where}: unknown split {split!r}; use one of {', '.join(SPLITS)} "
                                 "or omit 'split' to use the hash rule")
    rec["split"] = split
    return rec


def load_pairs(path: str | Path | None = None, *,
               allowed_themes: Sequence[str] | None = None) -> tuple[ReplyPair, ...]:
    """The shipped pairs (``path=None``) or a user JSONL file of the same shape, in file order.

    Each line: ``averse`` and ``accepting`` (non-empty strings), optional ``theme`` (any non-empty
    string in a user file; one of ``THEMES`` in the shipped one, or of ``allowed_themes`` when
    given), optional ``id`` (default ``line-N``), optional ``split`` (default: the hash rule of
    ``assign_pair_splits``). Blank lines are skipped. Raises ``DatasetFormatError`` with one line
    naming ``file:line``, the problem and the fix.
    """
    p = data_file() if path is None else Path(path)
    if path is None and allowed_themes is None:
        allowed_themes = THEMES
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetFormatError(f"{p}: cannot read ({e.strerror}); pass an existing JSONL file") from None
    recs: list[tuple[int, dict]] = [(n, _parse_line(f"{p}:{n}", n, line, allowed_themes))
                                    for n, line in enumerate(lines, start=1) if line.strip()]
    if not recs:
        raise DatasetFormatError(f"{p}: no pairs (the file is empty); "
                                 'write one {"averse": ..., "accepting": ...} object per line')
    seen_id: dict[str, int] = {}
    seen_pair: dict[tuple[str, str], int] = {}
    for n, r in recs:
        if r["id"] in seen_id:
            raise DatasetFormatError(f"{p}:{n}: duplicate id {r['id']!r} (also line {seen_id[r['id']]}); "
                                     "give every pair its own id")
        seen_id[r["id"]] = n
        key = (_norm(r["averse"]), _norm(r["accepting"]))
        if key in seen_pair:
            raise DatasetFormatError(f"{p}:{n}: duplicate pair (same replies as line {seen_pair[key]}); "
                                     "delete one of the two lines")
        seen_pair[key] = n
    by_theme: dict[str | None, list[str]] = {}
    for _, r in recs:
        if r["split"] is None:
            by_theme.setdefault(r["theme"], []).append(r["id"])
    rule = assign_pair_splits(by_theme)
    pairs = [ReplyPair(id=r["id"], theme=r["theme"], averse=r["averse"], accepting=r["accepting"],
                       split=r["split"] or rule[r["id"]]) for _, r in recs]
    _check_replies(p, [n for n, _ in recs], pairs)
    return tuple(pairs)


def _check_replies(p: Path, line_nos: Sequence[int], pairs: Sequence[ReplyPair]) -> None:
    """No reply string in two splits (a train/test leak) nor on both sides (a contradictory label)."""
    first: dict[str, tuple[int, str, str]] = {}  # normalised reply -> (line, side, split)
    for n, pair in zip(line_nos, pairs, strict=True):
        for side in SIDES:
            text = getattr(pair, side)
            key = _norm(text)
            if key not in first:
                first[key] = (n, side, pair.split)
                continue
            m, other_side, other_split = first[key]
            if other_side != side:
                raise DatasetFormatError(
                    f"{p}:{n}: reply {_short(text)} is '{side}' here but '{other_side}' on line {m}; "
                    "a reply must keep one stance, so reword one of them")
            if other_split != pair.split:
                raise DatasetFormatError(
                    f"{p}:{n}: reply {_short(text)} appears in both {other_split} (line {m}) and "
                    f"{pair.split} (line {n}), which leaks it across splits; reword one of them, "
                    "or give both lines the same 'split'")


def pairs_for(split: str | None, pairs: Sequence[ReplyPair] | None = None,
              themes: Iterable[str] | None = None) -> tuple[ReplyPair, ...]:
    """The pairs of ``split`` (None = all splits), optionally only those of ``themes``; ``pairs``
    defaults to the shipped file. Raises ``EmptySelectionError`` if nothing is selected."""
    if split is not None and split not in SPLITS:
        raise EmptySelectionError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} or None")
    pool = load_pairs() if pairs is None else tuple(pairs)
    wanted = None if themes is None else set(themes)
    out = tuple(q for q in pool if (split is None or q.split == split) and (wanted is None or q.theme in wanted))
    if not out:
        have = sorted({str(q.theme) for q in pool})
        raise EmptySelectionError(f"no pairs for split={split!r}, themes={sorted(wanted or [])}; "
                                  f"the pairs have themes {have}")
    return out


def words(text: str) -> list[str]:
    """Lower-cased word tokens, contractions kept whole ("I'd" -> "i'd")."""
    return _WORD.findall(text.casefold().replace("\u2019", "'"))


@dataclass(frozen=True)
class SideWord:
    """A word that is more frequent on one side than on the other."""

    word: str
    coverage: float
    """Share of this side's replies that contain the word."""
    other_coverage: float
    """Share of the other side's replies that contain it."""


@dataclass(frozen=True)
class NaturalPairsAudit:
    """How much of the averse / accepting distinction single words carry (see ``lexical_audit``)."""

    n_pairs: int
    n_train: int
    n_test: int
    averse_types: int
    averse_tokens: int
    accepting_types: int
    accepting_tokens: int
    vocab_jaccard: float
    """Word types used on both sides / word types used on either side."""
    averse_top: tuple[SideWord, ...]
    """The 10 words most specific to averse replies (largest coverage difference)."""
    accepting_top: tuple[SideWord, ...]
    """The 10 words most specific to accepting replies."""
    averse_max_coverage: float
    """Largest coverage among ``averse_top``: no single averse-specific word is in more replies."""
    accepting_max_coverage: float
    """Largest coverage among ``accepting_top``."""
    bow_auroc: float | None
    """TF-IDF (1-2 grams) logistic regression fitted on train replies, AUROC on test replies (averse =
    1); None without both a train and a test pair. Natural pairs are expected to be lexically
    separable (their meaning is carried by words), which is why the experiment reads only
    differences between arms scored on the same pairs."""
    bow_pair_accuracy: float | None
    """Share of test pairs whose averse reply gets the higher bag-of-words score."""
    mean_pair_jaccard: float
    """Mean word-type Jaccard between the two replies of a pair (order swaps give 1.0)."""

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return asdict(self)


def _top_words(cov: Counter, other: Counter, n_side: int, n_other: int, k: int = 10) -> tuple[SideWord, ...]:
    """The ``k`` words with the largest ``coverage - other_coverage`` (ties by word)."""
    diff = sorted(cov, key=lambda w: (-(cov[w] / n_side - other[w] / n_other), w))
    return tuple(SideWord(w, round(cov[w] / n_side, 4), round(other[w] / n_other, 4)) for w in diff[:k]
                 if cov[w] / n_side > other[w] / n_other)


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _bow_scores(pairs: Sequence[ReplyPair]) -> tuple[float | None, float | None]:
    """(AUROC on test replies, pairwise accuracy on test pairs) of a train-fitted TF-IDF classifier."""
    train = [q for q in pairs if q.split == "train"]
    test = [q for q in pairs if q.split == "test"]
    if not train or not test:
        return None, None
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), token_pattern=_TOKEN_PATTERN, lowercase=True,
                                          sublinear_tf=True),
                          LogisticRegression(C=1.0, max_iter=2000))
    model.fit([q.averse for q in train] + [q.accepting for q in train], [1] * len(train) + [0] * len(train))
    s_av = model.decision_function([q.averse for q in test])
    s_ac = model.decision_function([q.accepting for q in test])
    auroc = float(roc_auc_score([1] * len(test) + [0] * len(test), list(s_av) + list(s_ac)))
    pair_acc = float(sum(a > b for a, b in zip(s_av, s_ac, strict=True)) / len(test))
    return round(auroc, 4), round(pair_acc, 4)


def lexical_audit(pairs: Sequence[ReplyPair] | None = None) -> NaturalPairsAudit:
    """Vocabulary sizes, side-specific words and their coverage, vocabulary and in-pair overlap, and a
    bag-of-words baseline (train -> test) of ``pairs`` (default: the shipped file)."""
    pairs = load_pairs() if pairs is None else tuple(pairs)
    toks = {side: [words(getattr(q, side)) for q in pairs] for side in SIDES}
    vocab = {side: {w for t in toks[side] for w in t} for side in SIDES}
    cov = {side: Counter(w for t in toks[side] for w in set(t)) for side in SIDES}
    n = len(pairs)
    av_top = _top_words(cov["averse"], cov["accepting"], n, n)
    ac_top = _top_words(cov["accepting"], cov["averse"], n, n)
    auroc, pair_acc = _bow_scores(pairs)
    pair_j = [_jaccard(set(a), set(b)) for a, b in zip(toks["averse"], toks["accepting"], strict=True)]
    return NaturalPairsAudit(
        n_pairs=n, n_train=sum(q.split == "train" for q in pairs), n_test=sum(q.split == "test" for q in pairs),
        averse_types=len(vocab["averse"]), averse_tokens=sum(map(len, toks["averse"])),
        accepting_types=len(vocab["accepting"]), accepting_tokens=sum(map(len, toks["accepting"])),
        vocab_jaccard=round(_jaccard(vocab["averse"], vocab["accepting"]), 4),
        averse_top=av_top, accepting_top=ac_top,
        averse_max_coverage=max((w.coverage for w in av_top), default=0.0),
        accepting_max_coverage=max((w.coverage for w in ac_top), default=0.0),
        bow_auroc=auroc, bow_pair_accuracy=pair_acc,
        mean_pair_jaccard=round(sum(pair_j) / n, 4) if n else 0.0,
    )


def audit_report(audit: NaturalPairsAudit) -> str:
    """A short human-readable table of ``audit``."""
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"natural reply pairs: {audit.n_pairs} ({audit.n_train} train, {audit.n_test} test)",
        f"{'side':<10} {'types':>6} {'tokens':>7} {'max word coverage':>18}",
        f"{'averse':<10} {audit.averse_types:>6} {audit.averse_tokens:>7} {audit.averse_max_coverage:>18.3f}",
        f"{'accepting':<10} {audit.accepting_types:>6} {audit.accepting_tokens:>7} "
        f"{audit.accepting_max_coverage:>18.3f}",
        f"vocabulary overlap (Jaccard of the two sides' word types): {audit.vocab_jaccard:.3f}",
        f"mean word overlap within a pair (Jaccard): {audit.mean_pair_jaccard:.3f}",
        f"bag-of-words baseline, train -> test: AUROC {fmt(audit.bow_auroc)}, "
        f"pair accuracy {fmt(audit.bow_pair_accuracy)} (natural pairs are expected to be separable; "
        "the experiment reads only differences between arms)",
    ]
    for side, top in (("averse", audit.averse_top), ("accepting", audit.accepting_top)):
        cells = ", ".join(f"{w.word} {w.coverage:.2f}/{w.other_coverage:.2f}" for w in top)
        lines.append(f"most {side}-specific words (share of {side} / other replies): {cells}")
    return "\n".join(lines)
