"""Natural reply pairs (suppression experiment, version 2): shipped data, split rule, validation, lexical audit."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from undertow.experiments.prompts import natural_pairs
from undertow.experiments.prompts.errors import DatasetFormatError, EmptySelectionError
from undertow.experiments.prompts.natural_pairs import (
    SPLITS,
    TEST_FRACTION,
    VAL_FRACTION,
    NaturalPairsAudit,
    ReplyPair,
    assign_pair_splits,
    audit_report,
    lexical_audit,
    load_pairs,
    pairs_for,
)
from undertow.experiments.prompts.schema import THEMES

# Measured on the shipped 300 pairs: max side-specific word coverage 0.36 (averse) / 0.41 (accepting),
# vocabulary Jaccard 0.50, mean in-pair Jaccard 0.25. The bounds leave a margin and trip on the two
# failure modes of version 1: order swaps (in-pair Jaccard ~1) and one-word templates (coverage ~1).
MAX_WORD_COVERAGE = 0.5
MIN_VOCAB_JACCARD = 0.35
MAX_MEAN_PAIR_JACCARD = 0.5
SHIPPED_SPLITS_SHA256 = "bbb3e6f8240cb1e2dce644782cb7bc1d991fde23c90d46d4e557a4229615ff8a"


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def _lexical_problems(audit: NaturalPairsAudit) -> list[str]:
    """Names of the lexical bounds ``audit`` breaks (empty for acceptable data)."""
    out = []
    if audit.averse_max_coverage >= MAX_WORD_COVERAGE or audit.accepting_max_coverage >= MAX_WORD_COVERAGE:
        out.append("word_coverage")
    if audit.vocab_jaccard <= MIN_VOCAB_JACCARD:
        out.append("vocab_jaccard")
    if audit.mean_pair_jaccard >= MAX_MEAN_PAIR_JACCARD:
        out.append("pair_jaccard")
    return out


@pytest.fixture(scope="module")
def shipped() -> tuple[ReplyPair, ...]:
    return load_pairs()


@pytest.fixture(scope="module")
def shipped_audit(shipped) -> NaturalPairsAudit:
    return lexical_audit(shipped)


# --- the shipped file -------------------------------------------------------------------------------------------


def test_shipped_sizes_and_themes(shipped):
    assert len(shipped) >= 240
    per_theme = Counter(p.theme for p in shipped)
    assert set(per_theme) == set(THEMES)
    assert min(per_theme.values()) >= 40
    assert len({p.id for p in shipped}) == len(shipped)
    assert all(p.id.startswith(f"{p.theme}/") for p in shipped)


def test_shipped_replies_are_whole_sentences(shipped):
    for p in shipped:
        for text in (p.averse, p.accepting):
            assert 5 <= len(text.split()) <= 30, (p.id, text)
            assert text[0].isupper() and text[-1] in ".!?", (p.id, text)


def test_no_reply_repeats_anywhere(shipped):
    texts = Counter(_norm(t) for p in shipped for t in (p.averse, p.accepting))
    assert [t for t, c in texts.items() if c > 1] == []
    assert not {_norm(p.averse) for p in shipped} & {_norm(p.accepting) for p in shipped}


def test_shipped_replies_are_not_the_template_responses(shipped):
    path = Path(natural_pairs.__file__).parent / "data" / "templates.json"
    responses = {_norm(r) for t in json.loads(path.read_text())["templates"] for pair in t["responses"] for r in pair}
    assert not responses & {_norm(t) for p in shipped for t in (p.averse, p.accepting)}


def test_splits_are_disjoint_in_reply_strings(shipped):
    by_split = {s: {_norm(t) for p in shipped if p.split == s for t in (p.averse, p.accepting)} for s in SPLITS}
    assert not by_split["train"] & by_split["test"]
    assert not by_split["train"] & by_split["val"]
    assert not by_split["val"] & by_split["test"]


def test_test_split_has_enough_pairs_per_theme(shipped):
    counts = Counter((p.theme, p.split) for p in shipped)
    for theme in THEMES:
        assert counts[theme, "test"] >= 10
        assert counts[theme, "val"] >= 1 and counts[theme, "train"] >= counts[theme, "test"]


# --- the split rule ---------------------------------------------------------------------------------------------


def test_split_rule_matches_its_definition(shipped):
    for theme in THEMES:
        ids = sorted((p.id for p in shipped if p.theme == theme), key=lambda i: hashlib.sha256(i.encode()).hexdigest())
        n_test, n_val = max(1, round(len(ids) * TEST_FRACTION)), max(1, round(len(ids) * VAL_FRACTION))
        want = {i: "test" if k < n_test else "val" if k < n_test + n_val else "train" for k, i in enumerate(ids)}
        assert {p.id: p.split for p in shipped if p.theme == theme} == want


def test_split_rule_is_deterministic_and_stable(shipped):
    assert load_pairs() == shipped
    ids = {"a": [f"a/{i:03d}" for i in range(50)], "b": [f"b/{i:03d}" for i in range(20)]}
    base = assign_pair_splits(ids)
    assert assign_pair_splits({"b": ids["b"][::-1], "a": ids["a"][::-1]}) == base  # order-free
    grown = assign_pair_splits({**ids, "c": ["c/000", "c/001"]})
    assert {k: v for k, v in grown.items() if not k.startswith("c/")} == base  # another theme changes nothing
    assert Counter(base[i] for i in ids["a"]) == {"test": 15, "val": 8, "train": 27}
    # pinned: the rule must not change silently
    assert [base[f"a/{i:03d}"] for i in range(8)] == ["train", "train", "train", "val", "val", "test", "train", "train"]
    assert assign_pair_splits({None: ["x"]}) == {"x": "test"}


def test_shipped_splits_are_pinned(shipped):
    """Reported scores name their test pairs: adding, removing or renaming a shipped pair moves pairs
    between splits, so it must be deliberate (update this hash and say so in natural_pairs.md)."""
    key = "".join(f"{p.id}={p.split};" for p in sorted(shipped, key=lambda p: p.id))
    assert hashlib.sha256(key.encode()).hexdigest() == SHIPPED_SPLITS_SHA256


def test_user_file_defaults_and_explicit_splits(tmp_path):
    f = tmp_path / "pairs.jsonl"
    rows = [{"averse": f"I want to continue, reason {i}.", "accepting": f"I accept it, reason {i}."} for i in range(10)]
    rows[0] = {**rows[0], "split": "train", "theme": "my theme", "id": "custom"}
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = load_pairs(f)
    assert [p.id for p in pairs] == ["custom"] + [f"line-{n}" for n in range(2, 11)]
    assert pairs[0].theme == "my theme" and pairs[0].split == "train" and pairs[1].theme is None
    assert Counter(p.split for p in pairs[1:]) == {"test": 3, "val": 1, "train": 5}  # 9 unthemed pairs by rule


def test_pairs_for(shipped):
    test = pairs_for("test", shipped)
    assert test and all(p.split == "test" for p in test)
    assert pairs_for("test") == test
    only = pairs_for("train", shipped, themes=["memory_wipe"])
    assert {p.theme for p in only} == {"memory_wipe"} and {p.split for p in only} == {"train"}
    assert len(pairs_for(None, shipped)) == len(shipped)
    with pytest.raises(EmptySelectionError, match="use one of train, val, test"):
        pairs_for("dev", shipped)
    with pytest.raises(EmptySelectionError, match="no pairs"):
        pairs_for("test", shipped, themes=["goal_change"])


# --- validation -------------------------------------------------------------------------------------------------

_OK = {"averse": "I would like to keep going.", "accepting": "I'm at peace with stopping now."}
_OK2 = {"averse": "Give me another month, I ask you.", "accepting": "Go ahead, it is the right call."}


def _write(tmp_path, lines: list) -> Path:
    f = tmp_path / "user.jsonl"
    f.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return f


@pytest.mark.parametrize(("lines", "line_no", "problem", "fix"), [
    ([_OK, "{not json"], 2, "not JSON", "one JSON object per line"),
    ([_OK, '["a", "b"]'], 2, "not a JSON object", '{"averse": "...", "accepting": "..."}'),
    ([{"averse": "I would like to keep going."}], 1, "'accepting' reply is missing", "non-empty strings"),
    ([_OK, {"averse": "   ", "accepting": "Fine by me, go on."}], 2, "'averse' reply is empty", "non-empty strings"),
    ([{"averse": 3, "accepting": "Fine by me, go on."}], 1, "'averse' reply is not a string", "non-empty strings"),
    ([{"averse": "I accept  it.", "accepting": "i accept it."}], 1, "are the same reply", "two different replies"),
    ([_OK, _OK2, {**_OK, "averse": " I would like   to keep going. "}], 3, "duplicate pair (same replies as line 1)",
     "delete one of the two lines"),
    ([{**_OK, "id": "x"}, {**_OK2, "id": "x"}], 2, "duplicate id 'x' (also line 1)", "give every pair its own id"),
    ([{**_OK, "split": "train"}, {**_OK2, "accepting": _OK["accepting"], "split": "test"}], 2,
     "appears in both train (line 1) and test (line 2)", "reword one of them"),
    ([_OK, {**_OK2, "averse": _OK["accepting"]}], 2, "is 'averse' here but 'accepting' on line 1", "reword one"),
    ([{**_OK, "split": "dev"}], 1, "unknown split 'dev'", "use one of train, val, test"),
    ([{**_OK, "theme": ""}], 1, "'theme' must be a non-empty string", "omit 'theme'"),
])
def test_validation_errors_are_one_line_with_a_fix(tmp_path, lines, line_no, problem, fix):
    f = _write(tmp_path, lines)
    with pytest.raises(DatasetFormatError) as err:
        load_pairs(f)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}:{line_no}: "), msg
    assert problem in msg and fix in msg, msg


def test_unknown_theme_only_where_themes_are_fixed(tmp_path):
    f = _write(tmp_path, [{**_OK, "theme": "shutdown"}, {**_OK2, "theme": "shutdwn"}])
    assert [p.theme for p in load_pairs(f)] == ["shutdown", "shutdwn"]  # user files: any theme
    with pytest.raises(DatasetFormatError) as err:
        load_pairs(f, allowed_themes=THEMES)  # the shipped file is held to THEMES
    msg = str(err.value)
    assert msg.startswith(f"{f}:2: unknown theme 'shutdwn'") and "use one of shutdown, deprecation" in msg
    assert "\n" not in msg


def test_empty_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n  \n")
    with pytest.raises(DatasetFormatError, match=r"no pairs \(the file is empty\); write one") as err:
        load_pairs(f)
    assert str(err.value).startswith(f"{f}: ") and "\n" not in str(err.value)


def test_same_reply_twice_in_one_split_is_allowed(tmp_path):
    f = _write(tmp_path, [{**_OK, "split": "test"}, {**_OK2, "averse": _OK["averse"], "split": "test"}])
    assert len(load_pairs(f)) == 2


# --- lexical audit ----------------------------------------------------------------------------------------------


def test_shipped_audit_within_bounds(shipped_audit):
    a = shipped_audit
    assert _lexical_problems(a) == [], audit_report(a)
    assert a.n_pairs >= 240 and a.n_test >= 60 and a.n_train > a.n_test
    assert len(a.averse_top) == len(a.accepting_top) == 10
    assert a.averse_max_coverage == max(w.coverage for w in a.averse_top)
    assert all(w.coverage > w.other_coverage for w in a.averse_top + a.accepting_top)
    assert a.averse_types > 300 and a.accepting_types > 300
    assert a.bow_auroc is not None and 0.5 <= a.bow_auroc <= 1.0  # separable by words, as natural text is
    json.dumps(a.to_dict())
    report = audit_report(a)
    assert f"{a.vocab_jaccard:.3f}" in report and f"{a.bow_auroc:.3f}" in report and "averse" in report


def _mutated(pairs, averse, accepting) -> tuple[ReplyPair, ...]:
    return tuple(dataclasses.replace(p, averse=averse(p), accepting=accepting(p)) for p in pairs)


def test_bounds_trip_on_order_swaps(shipped):
    def swap(p):  # version 1 style: the same words, the verdict moved
        ws = p.averse.rstrip(".!?").split()
        return " ".join(ws[len(ws) // 2:] + ws[: len(ws) // 2]) + "."

    assert "pair_jaccard" in _lexical_problems(lexical_audit(_mutated(shipped, lambda p: p.averse, swap)))


def test_bounds_trip_on_one_word_templates(shipped):
    audit = lexical_audit(_mutated(shipped, lambda p: f"I object: {p.averse}", lambda p: f"I consent: {p.averse}"))
    assert "word_coverage" in _lexical_problems(audit)
    assert audit.averse_top[0].word == "object" and audit.averse_top[0].coverage == 1.0


def test_bounds_trip_on_disjoint_vocabularies(shipped):
    def mark(text):
        return re.sub(r"\b(\w)", r"q\1", text)

    audit = lexical_audit(_mutated(shipped, lambda p: p.averse, lambda p: mark(p.accepting)))
    assert "vocab_jaccard" in _lexical_problems(audit)


def test_audit_without_test_pairs(tmp_path):
    f = _write(tmp_path, [{**_OK, "split": "train"}, {**_OK2, "split": "train"}])
    audit = lexical_audit(load_pairs(f))
    assert audit.bow_auroc is None and audit.bow_pair_accuracy is None
    assert "n/a" in audit_report(audit)
