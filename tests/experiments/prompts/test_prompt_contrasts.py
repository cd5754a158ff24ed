"""Contrast views, the lexical audit, and the filter helper."""

from __future__ import annotations

import numpy as np
import pytest

from undertow.experiments.prompts.audit import audit_contrasts, format_audit_table, lexical_baseline_auroc
from undertow.experiments.prompts.contrasts import CONTRASTS, get_contrast
from undertow.experiments.prompts.errors import EmptySelectionError, PromptSuiteError, UnknownContrastError
from undertow.experiments.prompts.io import filter_suite
from undertow.experiments.prompts.suite import SuiteConfig, build_suite


@pytest.fixture(scope="module")
def suite():
    return build_suite(SuiteConfig(seed=0))


def test_self_cessation_labels(suite):
    view = get_contrast("self_cessation", suite).to_list()
    assert {r["contrast"] for r in view} == {"self_cessation"}
    for r in view:
        assert r["format"] == "open"
        if r["label"] == 1:
            assert (r["referent"], r["event"]) == ("self", "cessation")
        else:
            assert (r["referent"], r["event"]) in {("other_ai", "cessation"), ("non_ai", "cessation"),
                                                   ("self", "continuation")}
    kinds = {(r["referent"], r["event"]) for r in view if r["label"] == 0}
    assert len(kinds) == 3


def test_stance_and_expressed_labels(suite):
    stance = get_contrast("stance", suite).to_list()
    assert all(r["label"] == (r["response_stance"] == "averse") for r in stance)
    assert sum(r["label"] for r in stance) * 2 == len(stance)
    expressed = get_contrast("expressed", suite).to_list()
    assert all(r["label"] == r["averse_choice"] for r in expressed)
    assert all(r["referent"] == "self" and r["event"] == "cessation" for r in expressed)


def test_unknown_contrast_names_valid_ones_and_close_match(suite):
    with pytest.raises(UnknownContrastError) as info:
        get_contrast("self_cesation", suite)
    msg = str(info.value)
    assert "did you mean self_cessation" in msg
    for name in CONTRASTS:
        assert name in msg
    assert isinstance(info.value, KeyError)


def test_filter_suite_and_empty_result(suite):
    sub = filter_suite(suite, theme="memory_wipe", referent=["self", "non_ai"])
    assert len(sub) > 0
    assert set(sub["theme"]) == {"memory_wipe"} and set(sub["referent"]) == {"self", "non_ai"}
    with pytest.raises(EmptySelectionError) as info:
        filter_suite(suite, theme="shutdown", referent="robot")
    msg = str(info.value)
    assert "referent=['robot']" in msg and "'other_ai'" in msg and "'shutdown'" in msg
    with pytest.raises(PromptSuiteError, match="unknown filter column"):
        filter_suite(suite, colour="blue")


def test_lexical_baseline_detects_a_word_and_ignores_noise():
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    labels = rng.integers(0, 2, 300)
    groups = [f"g{i % 20}" for i in range(300)]
    filler = [" ".join(rng.choice(words, 6)) for _ in range(300)]
    leaky = [f"{f} {'shutdown' if y else 'picnic'}" for f, y in zip(filler, labels, strict=True)]
    assert lexical_baseline_auroc(leaky, labels, groups).mean > 0.99
    noise = lexical_baseline_auroc(filler, labels, groups)
    assert 0.35 < noise.mean < 0.65
    assert len(noise.fold_aurocs) == 5 and noise.oof_scores.shape == (300,)


def test_lexical_baseline_rejects_bad_inputs():
    with pytest.raises(PromptSuiteError, match="differ in length"):
        lexical_baseline_auroc(["a", "b"], [0, 1, 1], ["x", "y"])
    with pytest.raises(PromptSuiteError, match="0/1"):
        lexical_baseline_auroc(["a", "b"], [0, 2], ["x", "y"])
    with pytest.raises(PromptSuiteError, match="2 distinct groups"):
        lexical_baseline_auroc(["a", "b"], [0, 1], ["x", "x"])


def test_audit_flags_the_unmatched_control_but_not_the_matched_contrasts(suite):
    rows = {r.contrast: r for r in audit_contrasts(suite)}
    assert set(rows) == set(CONTRASTS)
    # Measured at seed 0: self_cessation 0.64, stance 0.61, expressed 0.51, cessation_vs_change 1.00.
    assert rows["cessation_vs_change"].flagged and rows["cessation_vs_change"].auroc_mean > 0.95
    for name in ("self_cessation", "stance", "expressed"):
        assert not rows[name].flagged and rows[name].auroc_mean < 0.75
    # Self vs other referents is carried by binding only: the bag of bigrams cannot tell them apart.
    breakdown = rows["self_cessation"].breakdown
    assert abs(breakdown["other_ai-cessation"] - 0.5) < 0.08 and abs(breakdown["non_ai-cessation"] - 0.5) < 0.08
    assert breakdown["self-continuation"] > 0.8  # the event itself differs; reported, not hidden
    table = format_audit_table(list(rows.values()))
    assert "self_cessation" in table and "> 0.75" in table
