"""Generalisation ideas: multi-layer read-outs, layer priors, the eval-only rule, more templates in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from undertow.probes import eval_set, make_synthetic
from undertow.probes.ideas import Idea, idea_row, layer_curve, middle_hooks, run_idea, with_multilayer
from undertow.probes.store import TensorStore


@pytest.fixture(scope="module")
def data():
    s = make_synthetic(600, 6, 16, n_templates=40, n_themes=2, peak=2.0, seed=3)
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
