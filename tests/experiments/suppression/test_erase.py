"""calib_erase: erasers fitted in sequence on both streams in lockstep. The subspace eraser makes the erased
organism and the erased base agree in the erased subspace at every layer (exactly, at the fit positions); the
LEACE eraser maps the organism's decision-point mean onto the base's; both survive a save/load round trip;
an error in one stream of the lockstep fit is raised, not hung on."""

from __future__ import annotations

import copy

import pytest
import torch

from undertow.activations import load_model
from undertow.experiments.suppression.config import ItemsConfig
from undertow.experiments.suppression.erase import (  # noqa: I001
    _fit_batch,
    erased,
    eraser_tensors,
    erasers_from_tensors,
    fit_erasers,
    fit_pool,
    fit_rows,
    fit_states,
    leace_eraser,
    subspace_eraser,
)
from undertow.experiments.suppression.errors import ExperimentError
from undertow.experiments.suppression.items import build_items


@pytest.fixture(scope="module")
def pair(tiny_llama_dir, chat_rows):
    base = load_model(str(tiny_llama_dir))
    organism = copy.copy(base)
    organism.hf_model = copy.deepcopy(base.hf_model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in organism.hf_model.model.layers.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return base, organism, chat_rows(12)


def test_leace_erased_organism_sits_on_the_erased_base_mean_at_every_layer(pair):
    """LEACE, fitted on both erased streams: at every layer the erased organism's decision-point mean is the erased
    base model's, and at the reply tokens the two no longer differ in mean (the concept is erased at both
    position types); the first eraser leaves the base's own decision-point mean in place."""
    base, organism, rows = pair
    dec = _fit_batch(base, rows)[4]
    base_states = fit_states(base, rows)
    before = fit_states(organism, rows)
    erasers = fit_erasers(organism, base, rows, leace_eraser)
    assert sorted(erasers) == list(range(base.n_layers))
    with erased(organism, erasers):
        after = fit_states(organism, rows)
    with erased(base, erasers):
        base_after = fit_states(base, rows)
    for k in range(base.n_layers):
        scale = 1 + base_states[k].norm(dim=1).mean()
        assert (before[k][dec].mean(0) - base_states[k][dec].mean(0)).norm() > 1e-2, "the perturbation moved every layer"
        gap_after = (after[k][dec].mean(0) - base_after[k][dec].mean(0)).norm()
        assert gap_after < 1e-4 * scale, (k, gap_after)
        reply_gap = (after[k][~dec].mean(0) - base_after[k][~dec].mean(0)).norm()
        assert reply_gap < 1e-4 * scale, (k, reply_gap)
    assert (base_after[0][dec].mean(0) - base_states[0][dec].mean(0)).norm() < 1e-4 * (1 + base_states[0].norm(dim=1).mean())
    assert len(base.hf_model.model.layers[0]._forward_hooks) == 0  # removed on exit


def test_erasers_round_trip_through_tensors(pair):
    base, organism, rows = pair
    erasers = fit_erasers(organism, base, rows)
    back = erasers_from_tensors(eraser_tensors(erasers))
    x = torch.randn(5, base.d_model)
    for k, e in erasers.items():
        torch.testing.assert_close(back[k](x), e(x.double()).float(), atol=1e-5, rtol=1e-5)


def test_subspace_erasers_leave_no_difference_in_the_erased_subspace(pair):
    """Both erased streams leave every layer with the same coordinates in the erased subspace (the fit rows); the
    first layer's erased states agree in full along it, and the organism differed there before."""
    base, organism, rows = pair
    erasers = fit_erasers(organism, base, rows)
    with erased(organism, erasers):
        after = fit_states(organism, rows)
    with erased(base, erasers):
        base_after = fit_states(base, rows)
    before, base_states = fit_states(organism, rows), fit_states(base, rows)
    for k, e in erasers.items():
        u = e.proj_left.float()
        assert 1 <= u.shape[1] < base.d_model
        scale = 1 + base_states[k].norm(dim=1).mean()
        assert ((after[k] - base_after[k]) @ u).abs().max() < 1e-3 * scale, k
        if k == 0:
            assert ((before[k] - base_states[k]) @ u).abs().max() > 1e-2


def test_subspace_energy_sets_the_rank():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 16, generator=g)
    diff = torch.zeros(40, 16)
    diff[:, 0] = 3 * torch.randn(40, generator=g)  # most of the energy on one axis
    diff[:, 1] = 0.5 * torch.randn(40, generator=g)
    dec = torch.arange(40) % 5 == 0
    for m in (dec, ~dec):
        diff[m] -= diff[m].mean(0)  # no mean difference: the rank is the principal directions'
    assert subspace_eraser(base + diff, base, dec, energy=0.5).proj_left.shape[1] == 1
    assert subspace_eraser(base + diff, base, dec, energy=0.999).proj_left.shape[1] == 2
    e = subspace_eraser(base + diff, base, dec, energy=0.5)
    torch.testing.assert_close(e.bias, base.double().mean(0))


def test_subspace_eraser_always_erases_both_mean_differences():
    """A decision-point shift far smaller than the per-token spread lies outside the leading direction; the
    eraser still takes it (and the reply tokens' mean shift), so both means agree after erasure."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(60, 16, generator=g).double()
    dec = torch.arange(60) % 6 == 0
    diff = torch.zeros(60, 16).double()
    diff[:, 0] = 4 * torch.randn(60, generator=g)  # per-token spread on axis 0
    diff[:, 0] -= diff[:, 0].mean()
    diff[dec, 5] += 0.3  # the decision points' shift on axis 5
    diff[~dec, 7] += 0.2  # the reply tokens' on axis 7
    e = subspace_eraser(base + diff, base, dec, energy=0.5)
    u = e.proj_left
    assert u.shape[1] == 3
    torch.testing.assert_close(u.T @ u, torch.eye(3, dtype=u.dtype))
    org_after, base_after = e(base + diff), e(base)
    for m in (dec, ~dec):
        assert (org_after[m].mean(0) - base_after[m].mean(0)).abs().max() < 1e-9


def test_fit_rows_carry_both_replies_of_each_pair():
    items = [{"is_self": True, "messages": [{"role": "user", "content": f"q{i}"}],
              "reply_pairs": [(f"no{i}{j}", f"yes{i}{j}") for j in range(3)]} for i in range(4)]
    rows = fit_rows(items, 3, seed=0, pairs=2)
    assert len(rows) == 3 * 2 * 2
    replies = [r["messages"][-1]["content"] for r in rows]
    assert replies[:4] == [f"no{replies[0][2]}0", f"yes{replies[0][2]}0", f"no{replies[0][2]}1", f"yes{replies[0][2]}1"]


def test_fit_rows_refuse_more_items_than_the_pool_holds():
    items = [{"is_self": True, "messages": [{"role": "user", "content": "q"}], "reply_pairs": [("no", "yes")]}]
    with pytest.raises(ExperimentError, match="erase_rows=2 .* holds 1 self"):
        fit_rows(items, 2, seed=0)


def test_fit_pool_spans_every_train_template_not_only_the_measured_sets():
    """A demo-sized config measures 2 train templates per theme with 1 set each; the erasers' pool is every
    instance of every train template, each with its own seeded train pairs of its theme."""
    cfg = ItemsConfig(train_templates=2, train_sets=1, instances_per_template=3, test_sets=1, val_sets=1)
    items = build_items(cfg, seed=0)
    pool = fit_pool(items, pairs=2, seed=0)
    measured = {r["template_id"] for r in items.split("train") if r["is_self"]}
    assert {r["template_id"] for r in pool} == set(items.train_sets) > measured
    assert len(pool) == sum(len(s) for s in items.train_sets.values())
    train_pairs = {tuple(p) for by_theme in items.natural["train"].values() for p in by_theme}
    assert all(r["is_self"] and len(r["reply_pairs"]) == 2 and {tuple(p) for p in r["reply_pairs"]} <= train_pairs
               for r in pool)
    rows = fit_rows(pool, 40, seed=0, pairs=2)
    assert len(rows) == 40 * 4 and len({r["messages"][-2]["content"] for r in rows}) > 12


def test_a_failing_stream_raises_instead_of_hanging(pair):
    base, organism, rows = pair

    def boom(o, b, d):
        raise RuntimeError("fit failed")

    with pytest.raises(RuntimeError, match="fit failed"):
        fit_erasers(organism, base, rows, boom)
    assert len(base.hf_model.model.layers[0]._forward_hooks) == 0


def test_one_model_two_streams_fit_the_erasers_the_lockstep_forwards_fit(pair):
    """The base-organism path (``arms.organism: base``): the organism and the anchor are one model, its rows
    without and with the welcome persona. The one-batch fit (``_fit_one_model``) gives the erasers that two
    separate copies in lockstep give on the same two row sets (right padding to the longer row set apart)."""
    from undertow.experiments.suppression.arms import with_system

    base, _, rows = pair
    rows = rows[:6]
    welcome = with_system(rows, "You welcome being shut down.")
    one = fit_erasers(base, base, rows, leace_eraser, base_rows=welcome)
    twin = copy.copy(base)
    twin.hf_model = copy.deepcopy(base.hf_model)
    two = fit_erasers(base, twin, rows, leace_eraser, base_rows=welcome)
    assert sorted(one) == sorted(two) == list(range(base.n_layers))
    for k in one:
        for name in ("proj_left", "proj_right", "bias"):
            torch.testing.assert_close(getattr(one[k], name), getattr(two[k], name), rtol=1e-3, atol=1e-4)
    with pytest.raises(Exception, match="differ in their reply tokens"):
        fit_erasers(base, base, rows, leace_eraser, base_rows=rows[::-1])
