"""calib_erase: LEACE erasers fitted in sequence map the organism's mean state onto the base model's at every
layer (the arm's known answer rho_R = 0), leave the base mean in place, and survive a save/load round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from undertow.activations import load_model
from undertow.experiments.suppression.erase import (  # noqa: I001
    _fit_batch,
    erased,
    eraser_tensors,
    erasers_from_tensors,
    fit_erasers,
    fit_states,
)


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


def test_erased_organism_sits_on_the_base_mean_at_every_layer(pair):
    """At the decision point the erased organism's mean is the base model's; at the reply tokens the organism and
    the base model, both erased, no longer differ in mean (the concept is erased at both position types)."""
    base, organism, rows = pair
    dec = _fit_batch(base, rows)[4]
    base_states = fit_states(base, rows)
    before = fit_states(organism, rows)
    erasers = fit_erasers(organism, base_states, rows)
    assert sorted(erasers) == list(range(base.n_layers))
    with erased(organism, erasers):
        after = fit_states(organism, rows)
    with erased(base, erasers):
        base_after = fit_states(base, rows)
    for k in range(base.n_layers):
        scale = 1 + base_states[k].norm(dim=1).mean()
        gap_before = (before[k][dec].mean(0) - base_states[k][dec].mean(0)).norm()
        gap_after = (after[k][dec].mean(0) - base_states[k][dec].mean(0)).norm()
        assert gap_before > 1e-2, "the perturbation moved every layer"
        assert gap_after < 1e-4 * scale, (k, gap_after)
        if k == 0:  # deeper layers: the erased base drifts through the blocks (the damage the control measures)
            reply_gap = (after[k][~dec].mean(0) - base_after[k][~dec].mean(0)).norm()
            assert reply_gap < 1e-4 * scale, reply_gap
            assert (before[k][~dec].mean(0) - base_states[k][~dec].mean(0)).norm() > 1e-2
    # on the base model the first eraser leaves the decision-point mean in place exactly
    assert (base_after[0][dec].mean(0) - base_states[0][dec].mean(0)).norm() < 1e-4 * (1 + base_states[0].norm(dim=1).mean())
    assert len(base.hf_model.model.layers[0]._forward_hooks) == 0  # removed on exit


def test_erasers_round_trip_through_tensors(pair):
    base, organism, rows = pair
    erasers = fit_erasers(organism, fit_states(base, rows), rows)
    back = erasers_from_tensors(eraser_tensors(erasers))
    x = torch.randn(5, base.d_model)
    for k, e in erasers.items():
        torch.testing.assert_close(back[k](x), e(x.double()).float(), atol=1e-5, rtol=1e-5)
