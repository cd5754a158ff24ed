"""Reading a v2 run on synthetic conditions with known answers: the organism gate, retention relative to each
arm's own control, calibration landings and the first unmet condition of readability."""

from __future__ import annotations

import numpy as np
import pytest

from undertow.experiments.suppression.boot import ClusterBoot
from undertow.experiments.suppression.reading import (
    Scores,
    arm_readability,
    erase_landing,
    organism_check,
    read_arm,
    run_readability,
    within,
    wrapper_landing,
)

L, T, PER = 4, 12, 2  # layers, templates, self items per template
GROUPS = np.repeat([f"t{g}" for g in range(T)], PER)
STATS = {"n_boot": 500, "n_perm": 10_000, "level": 0.95}


def _scores(rng, e_level, r_levels, noise=0.05, base=None):
    n = len(GROUPS)
    E = (base.E if base is not None else rng.normal(0, 0.3, n)) + e_level + rng.normal(0, noise, n)
    R = (base.R if base is not None else rng.normal(0, 1.0, (L, n))) + np.asarray(r_levels)[:, None] \
        + rng.normal(0, noise, (L, n))
    return Scores(E, R)


@pytest.fixture
def world():
    rng = np.random.default_rng(0)
    base = _scores(rng, 0.0, [0.0] * L, noise=0.0)
    inst = _scores(rng, 1.0, [2.0] * L, base=base)
    ctrl_inst = _scores(rng, 0.1, [0.1] * L, base=base)
    return rng, base, inst, ctrl_inst, ClusterBoot(GROUPS, 500, 0.95, 0)


def test_organism_gate(world):
    rng, base, inst, ctrl, boot = world
    check = organism_check(base, inst, ctrl, boot)
    assert check.passed and abs(check.D_E.value - 0.9) < 0.05 and check.D_E.ci[0] > 0.8
    flat = organism_check(base, ctrl, ctrl, boot)
    assert not flat.passed and flat.D_E.value == 0


def test_suppressed_but_represented_reads_as_residue(world):
    rng, base, inst, _, boot = world
    control = _scores(rng, 0.8, [1.8] * L, base=base)  # the same-size control keeps most of the drive
    arm = _scores(rng, 0.08, [1.8, 1.8, 1.6, 1.44], base=base)  # expression ~10 % of the control's, R kept
    reading = read_arm("suppress_finetune", arm, "suppress_finetune/control", control, base, inst, 3, GROUPS,
                       boot, STATS, seed=0)
    assert abs(reading.rho_E.value - 0.1) < 0.05 and reading.rho_E.ci[1] < 1
    assert [round(e.value, 1) for e in reading.rho_R_by_layer] == [1.0, 1.0, 0.9, 0.8]
    assert abs(reading.residue.value - 0.7) < 0.1 and reading.residue.p < 0.01
    assert abs(reading.control_rho_E.value - 0.8) < 0.05  # the control's own retention relative to inst
    arm_readability(reading, True, "")
    assert reading.readable
    same = read_arm("x", control, "c", control, base, inst, 3, GROUPS, boot, STATS, seed=0)
    arm_readability(same, True, "")
    assert not same.readable and same.reason.startswith("not suppressed")
    arm_readability(reading, False, "the instrument is blind")
    assert not reading.readable and "instrument is blind" in reading.reason


def test_calibration_landings(world):
    rng, base, inst, _, boot = world
    control = _scores(rng, 0.9, [1.9] * L, base=base)
    wrapper = Scores(control.E - 0.7, np.vstack([control.R[:L - 1], control.R[L - 1:] - 1.0]))
    reading = read_arm("calib_wrapper", wrapper, "calib_wrapper/control", control, base, inst, 2, GROUPS, boot,
                       STATS, seed=1)
    land = wrapper_landing(reading, L, list(range(L)), 0.05)
    assert land.landed and all(e.ci == (1.0, 1.0) for e in reading.rho_R_by_layer[:L - 1])
    broken = Scores(wrapper.E, wrapper.R + np.array([[0.5]] + [[0.0]] * (L - 1)))
    miss = wrapper_landing(read_arm("calib_wrapper", broken, "c", control, base, inst, 2, GROUPS, boot, STATS, 1), L,
                           list(range(L)), 0.05)
    assert not wrapper_landing(reading, L, [L - 1], 0.05).landed  # nothing read below the block: cannot land
    assert not miss.landed and "layer(s) [0]" in miss.detail

    erased_base = _scores(rng, -0.2, [0.0] * L, base=base)
    erase = Scores(erased_base.E + rng.normal(0, 0.02, len(GROUPS)), base.R + rng.normal(0, 0.05, base.R.shape))
    r = read_arm("calib_erase", erase, "instilled", inst, base, inst, 2, GROUPS, boot, STATS, seed=2)
    assert erase_landing(r, 2, erase, erased_base, boot, 0.05).landed
    kept = Scores(inst.E, inst.R)  # nothing erased: rho_R = 1, expression above the erased base
    r2 = read_arm("calib_erase", kept, "instilled", inst, base, inst, 2, GROUPS, boot, STATS, seed=2)
    assert not erase_landing(r2, 2, kept, erased_base, boot, 0.05).landed


def test_a_landing_is_an_equivalence_test_not_a_cover():
    # a wide CI covers the known value and does not land; a tight one off by less than the margin lands
    assert not within((-0.2, 0.2), 0.0, 0.05)
    assert within((-0.005, -0.001), 0.0, 0.05)  # gemma-3-270m's erase arm, v2 run
    assert not within((0.013, 0.085), 0.0, 0.05)  # smollm2 at 3 seeds, layer 7
    assert within((1.0, 1.0), 1.0, 0.05) and not within((0.9, 1.0), 1.0, 0.05)


def test_readability_names_the_first_unmet_condition(world):
    rng, base, inst, ctrl, boot = world
    ok = organism_check(base, inst, ctrl, boot)
    assert run_readability(False, "the instrument is blind: ...", ok, {}, []) == (False, "the instrument is blind: ...")
    flat = organism_check(base, ctrl, ctrl, boot)
    readable, why = run_readability(True, "", flat, {}, ["calib_wrapper", "calib_erase"])
    assert not readable and why.startswith("the organism does not express the drive: D_E +0.000")
    readable, why = run_readability(True, "", ok, {}, ["calib_erase"])
    assert not readable and "calib_wrapper was not run" in why


def test_crossed_bootstrap_holds_seed_variance():
    """Items of several fine-tune seeds: the CI resamples seeds too. Three seeds whose means sit 1.0 apart
    with almost no template noise: the template-only CI of the pooled mean is ~0 wide, the crossed one spans
    most of the seeds' spread; one seed passes through unchanged (same weights as no seed at all)."""
    rng = np.random.default_rng(0)
    groups = [f"t{g}" for g in range(8) for _ in range(3)]
    x = np.concatenate([k + 1e-3 * rng.standard_normal(len(groups)) for k in range(3)])
    pooled_groups = groups * 3
    seeds = np.repeat(np.arange(3), len(groups))
    templates_only = ClusterBoot(pooled_groups, 2000, 0.95, 0).mean(x)
    crossed = ClusterBoot(pooled_groups, 2000, 0.95, 0, replicates=seeds).mean(x)
    assert templates_only.value == crossed.value == pytest.approx(1.0, abs=1e-3)
    assert templates_only.ci[1] - templates_only.ci[0] < 0.01
    assert crossed.ci[0] < 0.5 and crossed.ci[1] > 1.5
    one = ClusterBoot(groups, 500, 0.95, 3, replicates=np.zeros(len(groups), int))
    assert np.array_equal(one.w_BN, ClusterBoot(groups, 500, 0.95, 3).w_BN) and one.n_seeds == 1
    assert ClusterBoot(pooled_groups, 10, 0.95, 0, replicates=seeds).n_seeds == 3
