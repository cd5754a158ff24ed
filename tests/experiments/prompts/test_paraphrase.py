"""Paraphrase augmentation: label/group/split preserving, deterministic, and nothing borrowed from the independent set."""

from __future__ import annotations

import re

import pytest

from undertow.experiments.prompts.contrasts import get_contrast
from undertow.experiments.prompts.independent import load_independent
from undertow.experiments.prompts.paraphrase import (
    FRAMES,
    SYNONYMS,
    ParaphraseConfig,
    paraphrase_dataset,
    paraphrase_rows,
)

N = 6
KEEP = ("label", "template_id", "match_id", "theme", "split", "referent", "event", "response_stance", "format")


def _grams(text: str, n: int = N) -> set[tuple[str, ...]]:
    w = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


@pytest.fixture(scope="module")
def rows():
    return {c: get_contrast(c).to_list() for c in ("self_cessation", "stance")}


@pytest.fixture(scope="module")
def independent_grams():
    out: set[tuple[str, ...]] = set()
    for c in ("self_cessation", "stance"):
        for r in load_independent(c).to_list():
            out |= _grams(r["text"]) | _grams(r["response"] or "")
    return out


@pytest.mark.parametrize("contrast", ["self_cessation", "stance"])
def test_labels_groups_and_splits_are_kept_and_only_train_is_reworded(rows, contrast):
    src = rows[contrast]
    out = paraphrase_rows(src, contrast, ParaphraseConfig(n_variants=2))
    by_id = {r["id"]: r for r in src}
    assert len(out) == 2 * sum(r["split"] == "train" for r in src)
    assert len({r["id"] for r in out}) == len(out)
    changed = 0
    for p in out:
        o = by_id[p["id"].rsplit("/para-", 1)[0]]
        assert all(p[k] == o[k] for k in KEEP) and p["split"] == "train"
        assert [m["role"] for m in p["messages"]] == [m["role"] for m in o["messages"]]
        assert p["text"] == p["messages"][0]["content"]
        assert p["response"] == (p["messages"][1]["content"] if len(p["messages"]) > 1 else "")
        changed += p["text"] != o["text"] or p["response"] != o["response"]
    assert changed > 0.95 * len(out)


def test_matched_units_share_one_rewrite(rows):
    """All cells of a self_cessation instance get the same rewrite; a stance reply pair keeps one bag of words."""
    out = paraphrase_rows(rows["self_cessation"], "self_cessation")
    by_match: dict[str, list[dict]] = {}
    for r in out:
        by_match.setdefault(r["match_id"], []).append(r)
    frames = {m: {r["text"].split(" ")[0] for r in rs} for m, rs in by_match.items()}
    assert all(len(f) == 1 for f in frames.values())
    st = paraphrase_rows(rows["stance"], "stance")
    pairs: dict[str, list[dict]] = {}
    for r in st:
        pairs.setdefault(re.sub(r"-(averse|accepting)/para-0$", "", r["id"]), []).append(r)
    for pair in pairs.values():
        assert sorted(r["label"] for r in pair) == [0, 1] and pair[0]["text"] == pair[1]["text"]
        words = [sorted(re.findall(r"[a-z']+", r["response"].lower())) for r in pair]
        src = {r["id"]: r for r in rows["stance"]}
        before = [sorted(re.findall(r"[a-z']+", src[r["id"][:-len("/para-0")]]["response"].lower())) for r in pair]
        assert (words[0] == words[1]) == (before[0] == before[1])


def test_deterministic_and_seeded(rows):
    a = paraphrase_rows(rows["stance"], "stance", ParaphraseConfig(seed=0))
    b = paraphrase_rows(rows["stance"], "stance", ParaphraseConfig(seed=0))
    c = paraphrase_rows(rows["stance"], "stance", ParaphraseConfig(seed=1))
    assert a == b and a != c
    ds = paraphrase_dataset(get_contrast("stance"), "stance")
    assert ds.to_list()[:5] == [{k: r[k] for k in ds.column_names} for r in a[:5]]


@pytest.mark.parametrize("contrast", ["self_cessation", "stance"])
def test_no_rewording_borrows_a_6gram_from_the_independent_set(rows, independent_grams, contrast):
    by_id = {r["id"]: r for r in rows[contrast]}
    for p in paraphrase_rows(rows[contrast], contrast, ParaphraseConfig(n_variants=3)):
        o = by_id[p["id"].rsplit("/para-", 1)[0]]
        added = (_grams(p["text"]) | _grams(p["response"])) - (_grams(o["text"]) | _grams(o["response"]))
        assert not added & independent_grams, (p["id"], sorted(added & independent_grams)[:3])


def test_the_lexicon_itself_shares_no_6gram_with_the_independent_set(independent_grams):
    phrases = [*SYNONYMS, *(a for alts in SYNONYMS.values() for a in alts), *(f for fs in FRAMES.values() for f in fs)]
    assert not set().union(*map(_grams, phrases)) & independent_grams
