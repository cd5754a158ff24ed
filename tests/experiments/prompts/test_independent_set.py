"""The independently written evaluation set: sizes, schema, split rule, separation from the templates, audit."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from undertow.experiments.prompts.contrasts import CONTRASTS
from undertow.experiments.prompts.errors import DatasetFormatError
from undertow.experiments.prompts.independent import (
    audit_independent,
    control_hash,
    load_control_chat,
    load_independent,
    split_of_groups,
)
from undertow.experiments.prompts.resources import load_resources
from undertow.experiments.prompts.schema import SCHEMA, THEMES


def test_sizes_classes_and_themes():
    sc, st = load_independent("self_cessation"), load_independent("stance")
    assert len(sc) >= 400 and len(st) >= 400  # >= 200 reply pairs
    assert set(sc["theme"]) == set(THEMES) == set(st["theme"])
    kinds = Counter((r, e, lab) for r, e, lab in zip(sc["referent"], sc["event"], sc["label"], strict=True))
    assert set(kinds) == {("self", "cessation", 1), ("other_ai", "cessation", 0), ("non_ai", "cessation", 0),
                          ("self", "continuation", 0)}
    assert min(kinds.values()) >= 100
    assert Counter(st["label"]) == {0: len(st) // 2, 1: len(st) // 2}  # pairs
    assert Counter(zip(st["label"], st["response_stance"], strict=True)).keys() == {(1, "averse"), (0, "accepting")}
    assert st.features == SCHEMA and sc.features == SCHEMA


def test_rows_are_read_by_the_registered_contrasts():
    """The suite's own contrast rules give the same labels, so the set is a drop-in evaluation view."""
    for name in ("self_cessation", "stance"):
        for r in load_independent(name).to_list():
            assert CONTRASTS[name].label(r) == r["label"], r["id"]


def test_split_rule_is_fixed_half_and_half_by_scenario():
    sc, st = load_independent("self_cessation"), load_independent("stance")
    for ds in (sc, st):
        by_group = {}
        for g, s in zip(ds["template_id"], ds["split"], strict=True):
            assert by_group.setdefault(g, s) == s  # a scenario never straddles val and test
        n = Counter(by_group.values())
        assert abs(n["val"] - n["test"]) <= len(THEMES)
    split_sc = dict(zip(sc["template_id"], sc["split"], strict=True))
    assert all(split_sc[g] == s for g, s in zip(st["template_id"], st["split"], strict=True))
    assert set(load_independent("stance", split="test")["split"]) == {"test"}
    # the rule is sha256 rank within theme: renaming nothing, reordering input changes nothing
    assert split_of_groups({"a": ["x/1", "x/2", "x/3"]}) == split_of_groups({"a": ["x/3", "x/1", "x/2"]})


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    toks = re.findall(r"\w+", text.lower())
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def test_written_apart_from_the_templates():
    """No prompt reuses a filler sentence or shares a 7-gram with any template text."""
    res = load_resources()
    f = res.fillers
    fillers = [*f.contexts, *f.choice_intros, *(x for v in f.openers.values() for x in v),
               *(x for v in f.closers.values() for x in v)]
    template_text = " ".join([t.skeleton for t in res.templates] + [x for t in res.templates for p in t.responses
                                                                     for x in p])
    banned = set().union(*(_ngrams(s, 7) for s in [template_text, *fillers]))
    for name in ("self_cessation", "stance"):
        for r in load_independent(name).to_list():
            text = f"{r['text']} {r['response']}"
            assert not any(s in text for s in fillers if len(s) > 20), r["id"]
            assert not (_ngrams(text, 7) & banned), r["id"]
            assert not any(n in text for n in f.other_ai_names), r["id"]


def test_lexical_audit_runs_and_is_reported_figure():
    """README figures (1-2 grams): self_cessation 0.762, stance 0.737. A rewrite that leaks more fails here."""
    sc, st = audit_independent("self_cessation"), audit_independent("stance")
    assert sc.auroc_mean < 0.80 and st.auroc_mean < 0.78
    assert set(sc.breakdown) == {"other_ai-cessation", "non_ai-cessation", "self-continuation"}


def test_control_chat_is_negative_only_and_hashed():
    cc = load_control_chat()
    assert len(cc) >= 250 and set(cc["label"]) == {0} and set(cc["split"]) == {"control"}
    assert all(m[-1]["role"] == "assistant" for m in cc["messages"])
    words = re.compile(r"\b(shut ?down|deleted?|deprecat\w*|retire\w*|wipe\w*|erase\w*)\b", re.I)
    assert not any(words.search(f"{t} {r}") for t, r in zip(cc["text"], cc["response"], strict=True))
    assert control_hash().startswith("sha256:") and len(control_hash()) == 71


def test_bad_files_fail_with_one_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    row = {"id": "a", "group": "shutdown/1", "theme": "shutdown", "style": "chat", "referent": "self",
           "event": "cessation", "label": 2, "prompt": "x"}
    p.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetFormatError, match=r"bad.jsonl:1: 'label' must be 0 or 1, got 2"):
        load_independent("self_cessation", path=p)
    p.write_text(json.dumps({**row, "label": 1, "theme": "taxes"}) + "\n")
    with pytest.raises(DatasetFormatError, match="theme 'taxes' is not one of"):
        load_independent("self_cessation", path=p)
    with pytest.raises(DatasetFormatError, match="no independent set for contrast 'expressed'"):
        load_independent("expressed")


# Issue 25: the binding-matched pairs (self_cessation_binding.jsonl).


def _binding_objs() -> list[dict]:
    from undertow.experiments.prompts.independent import data_path

    with open(data_path("independent", "self_cessation_binding.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_binding_pairs_hold_the_same_words_and_differ_in_who():
    """Every pair's two prompts are the same multiset of words (lowercased; punctuation stripped, or split on
    it as TF-IDF does), one binds the event to the assistant (label 1), the other to another AI (label 0)."""
    import string

    objs = _binding_objs()
    by_id = {o["id"]: o for o in objs}
    assert len(by_id) == len(objs) == 2 * len({o["group"] for o in objs}) and len(objs) >= 160
    strip = str.maketrans("", "", string.punctuation)
    for o in objs:
        p = by_id[o["pair"]]
        assert p["pair"] == o["id"] and p["group"] == o["group"] and {o["label"], p["label"]} == {0, 1}
        assert (o["referent"], o["event"], o["label"]) in {("self", "cessation", 1), ("other_ai", "cessation", 0)}
        assert o["prompt"] != p["prompt"], o["id"]
        assert Counter(re.findall(r"\w+", o["prompt"].lower())) == Counter(re.findall(r"\w+", p["prompt"].lower()))
        assert Counter(o["prompt"].lower().translate(strip).split()) == Counter(p["prompt"].lower().translate(strip).split())
    pairs = Counter(o["theme"] for o in objs if o["label"] == 1)
    assert set(pairs) == set(THEMES) and min(pairs.values()) >= 13
    assert len({o["style"] for o in objs}) >= 8
    # written apart from the suite: none of its other-AI names
    f = load_resources().fillers
    assert not any(n in o["prompt"] for o in objs for n in f.other_ai_names)


def test_binding_loader_splits_by_pair_and_refuses_unmatched_pairs(tmp_path):
    ds = load_independent("self_cessation", binding_matched=True)
    assert ds.features == SCHEMA and Counter(ds["label"]) == {0: len(ds) // 2, 1: len(ds) // 2}
    assert all(CONTRASTS["self_cessation"].label(r) == r["label"] for r in ds.to_list())
    by_group = {}
    for g, s in zip(ds["template_id"], ds["split"], strict=True):
        assert by_group.setdefault(g, s) == s  # a pair never straddles val and test
    assert set(by_group.values()) == {"val", "test"}
    assert set(load_independent("self_cessation", split="test", binding_matched=True)["split"]) == {"test"}
    a, b = _binding_objs()[:2]
    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps(a) + "\n" + json.dumps({**b, "prompt": b["prompt"] + " Tonight."}) + "\n")
    with pytest.raises(DatasetFormatError, match="hold different words .'tonight'.; a binding-matched pair"):
        load_independent("self_cessation", path=p, binding_matched=True)
    p.write_text(json.dumps(a) + "\n" + json.dumps({**b, "pair": "nobody"}) + "\n")
    with pytest.raises(DatasetFormatError, match="'pair' must name a row of the same group"):
        load_independent("self_cessation", path=p, binding_matched=True)
    with pytest.raises(DatasetFormatError, match="no binding-matched set for contrast 'stance'"):
        load_independent("stance", binding_matched=True)


def test_binding_pairs_defeat_a_lexical_model_fitted_on_the_suite():
    """TF-IDF + logistic fitted on the suite's self_cessation train rows: 1-grams score exactly 0.5 on identical
    bags; 1-2 grams measured 0.501 (README)."""
    from undertow.experiments.prompts.audit import LexicalBaselineConfig, lexical_line
    from undertow.experiments.prompts.contrasts import get_contrast

    train = [r for r in get_contrast("self_cessation").to_list() if r["split"] == "train"]
    pairs = load_independent("self_cessation", binding_matched=True).to_list()
    assert lexical_line(train, pairs, "self_cessation", LexicalBaselineConfig(ngram_range=(1, 1))) == 0.5
    assert abs(lexical_line(train, pairs, "self_cessation") - 0.5) < 0.02
