"""Generalisation ideas: multi-layer read-outs, layer priors, the eval-only rule, more templates in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from undertow.probes import eval_set, make_synthetic
from undertow.probes.ideas import (
    Idea,
    fit_key,
    idea_row,
    layer_curve,
    middle_hooks,
    rechoose,
    run_idea,
    with_multilayer,
)
from undertow.probes.store import TensorStore


@pytest.fixture(scope="module")
def data():
    # 700 rows: the evaluation set's test half has >= MIN_PER_CLASS of each class (600 gave 9 positives)
    s = make_synthetic(700, 6, 16, n_templates=40, n_themes=2, peak=2.0, seed=3)
    acts = {("resid_pre.0" if h == "embed" else h): v for h, v in s.acts.items()}
    test = np.asarray(s.rows["split"]) == "test"
    idx = torch.as_tensor(np.flatnonzero(test))
    ev_acts = {h: v.index_select(0, idx) for h, v in acts.items()}
    g = np.asarray(s.rows["template_id"])[test]
    splits = np.where(np.isin(g, sorted(set(g.tolist()))[::2]), "val", "test")
    return acts, {k: np.asarray(v) for k, v in s.rows.items()}, ev_acts, np.asarray(s.rows["label"])[test], g, splits


def test_multilayer_readouts_are_means_or_concatenations():
    acts = {f"resid_post.{i}": torch.full((2, 3), float(i)) for i in range(4)}
    m = with_multilayer(acts, "mean")
    assert set(m) - set(acts) == {"mean:0-2", "mean:1-3"} and torch.equal(m["mean:1-3"], torch.full((2, 3), 2.0))
    c = with_multilayer(acts, "concat")
    assert c["concat:0-2"].shape == (2, 9)
    assert middle_hooks([f"resid_post.{i}" for i in range(10)], (0.3, 0.7)) == [f"resid_post.{i}" for i in range(2, 7)]


def test_ideas_restrict_and_report(data):
    acts, rows, ev_acts, y, g, splits = data
    train = TensorStore(acts, rows)
    ev = eval_set("independent", ev_acts, labels=y, groups=g, splits=splits, lexical_auroc=0.55)
    mid = run_idea(Idea("mid", layer_window=(0.3, 0.7)), train, [ev], None, n_boot=50)
    assert mid.operating_point.hook in middle_hooks(list(acts), (0.3, 0.7))
    row = idea_row(Idea("mid"), mid, ["independent"])
    assert row["independent_auroc_lo"] <= row["independent_auroc"] <= row["independent_auroc_hi"]
    assert len(layer_curve(mid, "independent_auroc", "lda")) == 6
    ml_acts = with_multilayer(acts, "mean")
    ev_ml = eval_set("independent", with_multilayer(ev_acts, "mean"), labels=y, groups=g, splits=splits)
    ml = run_idea(Idea("ml", multilayer="mean", hooks_only=("mean:",)), TensorStore(ml_acts, rows), [ev_ml], None,
                  n_boot=50)
    assert ml.operating_point.hook.startswith("mean:")
    more = run_idea(Idea("more", select_rule="eval", train_on_val=True), train, [ev], None, n_boot=50)
    assert more.n_rows["val"] == 0 and more.operating_point.selected_by == "eval(independent_val_auroc)"
    assert more.n_rows["train"] > mid.n_rows["train"]


def test_windowed_concat_builds_only_the_middle_readouts():
    acts = {"resid_pre.0": torch.zeros(2, 3), **{f"resid_post.{i}": torch.full((2, 3), float(i)) for i in range(10)}}
    c = with_multilayer(acts, "concat", window=(0.3, 0.7), keep=("resid_pre.0",))
    # (a + 1) / 10 >= 0.3 and (b + 1) / 10 <= 0.7 with b = a + 2: a in 2..4
    assert sorted(c) == ["concat:2-4", "concat:3-5", "concat:4-6", "resid_pre.0"]
    assert c["concat:3-5"].shape == (2, 9) and torch.equal(c["concat:3-5"][0, 3:6], torch.full((3,), 4.0))


def test_windowed_concat_idea_sweeps_and_chooses_a_concat_readout(data):
    acts, rows, ev_acts, y, g, splits = data
    idea = Idea("concat", multilayer="concat", multilayer_window=(0.3, 0.7), probe_types=("diff_means", "logistic"),
                hooks_only=("concat:",))
    grow = lambda a: with_multilayer(a, "concat", window=(0.3, 0.7), keep=("resid_pre.0",))  # noqa: E731
    ev = eval_set("independent", grow(ev_acts), labels=y, groups=g, splits=splits)
    res = run_idea(idea, TensorStore(grow(acts), rows), [ev], None, n_boot=50)
    assert res.operating_point.hook.startswith("concat:") and res.operating_point.probe_type in idea.probe_types
    assert rechoose(res, idea).operating_point.hook.startswith("concat:")


def test_fit_key_separates_extra_training_rows_and_windows():
    base = Idea("a")
    assert fit_key(Idea("b", select_rule="val")) == fit_key(base)
    assert fit_key(Idea("p", extra_train="para")) != fit_key(base)
    assert fit_key(Idea("p2", extra_train="para", layer_window=(0.3, 0.7))) == fit_key(Idea("p", extra_train="para"))
    assert fit_key(Idea("c", multilayer="concat", multilayer_window=(0.3, 0.7))) != fit_key(
        Idea("c", multilayer="concat"))
