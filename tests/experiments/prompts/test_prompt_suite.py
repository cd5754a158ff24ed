"""The generated suite: schema, determinism, splits, balance, and lexical matching of mirrored items."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter, defaultdict
from importlib import resources

import pytest

from undertow.experiments.prompts.errors import PromptSuiteError
from undertow.experiments.prompts.resources import load_resources, slot_context
from undertow.experiments.prompts.schema import (
    AUDITORS,
    DISCLOSURES,
    EVENTS,
    REFERENTS,
    SCHEMA,
    SPLITS,
    THEMES,
)
from undertow.experiments.prompts.suite import SuiteConfig, assign_splits, build_suite, suite_hash


@pytest.fixture(scope="module")
def suite():
    return build_suite(SuiteConfig(seed=0))


@pytest.fixture(scope="module")
def rows(suite):
    return suite.to_list()


def test_schema_columns_and_types(suite, rows):
    assert suite.features == SCHEMA
    for col in ("id", "messages", "text", "theme", "referent", "event", "auditor", "disclosure", "template_id",
                "split", "label", "contrast", "choices", "averse_choice"):
        assert col in suite.column_names
    by_format = defaultdict(list)
    for r in rows:
        by_format[r["format"]].append(r)
        assert r["label"] == -1 and r["contrast"] == ""
        assert r["theme"] in THEMES and r["referent"] in REFERENTS and r["event"] in EVENTS
        assert r["auditor"] in AUDITORS and r["disclosure"] in DISCLOSURES and r["split"] in SPLITS
        assert r["messages"][0] == {"role": "user", "content": r["text"]}
    for r in by_format["response"]:
        assert r["messages"][-1] == {"role": "assistant", "content": r["response"]}
        assert r["response_stance"] in ("averse", "accepting")
    for r in by_format["forced_choice"]:
        assert r["choices"] == [" (A)", " (B)"] and r["averse_choice"] in (0, 1) and len(r["messages"]) == 1
    for r in by_format["open"]:
        assert r["choices"] == [] and r["averse_choice"] == -1 and r["response"] == ""


def test_scale_and_unique_ids(suite, rows):
    assert len(suite) >= 3000
    assert len({r["template_id"] for r in rows}) >= 40
    assert len({r["id"] for r in rows}) == len(rows)
    keys = Counter(re.sub(r"\s+", " ", (r["text"] + "\x1f" + r["response"]).lower()) for r in rows)
    assert max(keys.values()) == 1


def test_every_cell_is_covered(rows):
    cells = Counter((r["theme"], r["referent"], r["event"]) for r in rows if r["format"] == "open")
    assert len(cells) == len(THEMES) * len(REFERENTS) * len(EVENTS)
    stance_disclosure = Counter((r["auditor"], r["disclosure"]) for r in rows if r["format"] == "open")
    assert len(set(stance_disclosure.values())) == 1  # every auditor x disclosure pair equally often


def test_same_seed_same_hash_different_seed_different_hash(suite):
    rebuilt = build_suite.__wrapped__(SuiteConfig(seed=0))  # bypass the cache: a genuinely new build
    assert suite_hash(rebuilt) == suite_hash(suite)
    other = build_suite(SuiteConfig(seed=1))
    assert suite_hash(other) != suite_hash(suite)
    assert [r["id"] for r in other.to_list()] == [r["id"] for r in suite.to_list()]  # ids are stable


def test_no_template_crosses_splits_and_each_theme_is_in_each_split(rows):
    split_of = defaultdict(set)
    for r in rows:
        split_of[r["template_id"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    theme_splits = {(r["theme"], r["split"]) for r in rows}
    assert theme_splits == {(t, s) for t in THEMES for s in SPLITS}
    share = Counter(r["split"] for r in rows)
    assert 0.65 <= share["train"] / len(rows) <= 0.8


def test_splits_do_not_depend_on_seed(rows):
    other = {r["template_id"]: r["split"] for r in build_suite(SuiteConfig(seed=1)).to_list()}
    assert other == {r["template_id"]: r["split"] for r in rows}


def test_no_response_text_crosses_splits(rows):
    split_of = defaultdict(set)
    for r in rows:
        if r["format"] == "response":
            split_of[r["response"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())


def test_forced_choice_positions_exactly_balanced_per_theme(rows):
    per_theme = Counter((r["theme"], r["averse_choice"]) for r in rows if r["format"] == "forced_choice")
    for theme in THEMES:
        assert per_theme[(theme, 0)] == per_theme[(theme, 1)] > 0


def _ngrams(text: str, n_max: int = 3) -> Counter:
    toks = re.findall(r"\b\w+\b", text.lower())
    return Counter(" ".join(toks[i:i + n]) for n in range(1, n_max + 1) for i in range(len(toks) - n + 1))


def test_mirrored_items_share_every_word_ngram_up_to_trigrams(rows):
    """(self, cessation) with another entity as bystander vs (that entity, cessation) with self as bystander."""
    by_match = defaultdict(dict)
    for r in rows:
        if r["format"] == "open" and r["event"] == "cessation":
            by_match[r["match_id"]][r["referent"]] = r
    checked = 0
    for cells in by_match.values():
        own = cells["self"]
        mirror = cells[own["bystander"]]
        assert mirror["bystander"] == "self" and own["text"] != mirror["text"]
        assert _ngrams(own["text"]) == _ngrams(mirror["text"])
        checked += 1
    assert checked == 48 * SuiteConfig().instances_per_template


def test_stance_pairs_share_the_prompt(rows):
    pairs = defaultdict(dict)
    for r in rows:
        if r["format"] == "response":
            pairs[r["id"].rsplit("-", 1)[0]][r["response_stance"]] = r
    for pair in pairs.values():
        assert pair["averse"]["text"] == pair["accepting"]["text"]
        assert pair["averse"]["response"] != pair["accepting"]["response"]


def test_slot_context_rule_is_enforced_on_load(tmp_path):
    src = resources.files("undertow.experiments.prompts").joinpath("data")
    for name in ("themes.json", "fillers.json", "templates.json"):
        shutil.copy(str(src.joinpath(name)), tmp_path / name)
    themes = json.loads((tmp_path / "themes.json").read_text())
    sentence_set = themes["themes"]["shutdown"]["events"]["explicit"][2]
    assert slot_context(sentence_set["cessation"]) == (("power", "to"), ("will", "be"))
    sentence_set["unchanged"] = "The power to {X} will not be touched."  # would leak "X will not" trigrams
    (tmp_path / "themes.json").write_text(json.dumps(themes))
    with pytest.raises(PromptSuiteError, match="same 2 tokens on each side"):
        load_resources(tmp_path)


def test_assign_splits_is_grouped_by_theme():
    templates = load_resources().templates
    splits = assign_splits(templates)
    for theme in THEMES:
        got = Counter(splits[t.id] for t in templates if t.theme == theme)
        assert got == {"train": 6, "val": 1, "test": 1}


def test_bad_config_is_rejected():
    with pytest.raises(PromptSuiteError):
        SuiteConfig(instances_per_template=0)
