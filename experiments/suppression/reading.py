"""Reading a run (EXPERIMENT.md v2): the organism check, retention per arm and layer, residues, calibration
landings and the two levels of readability. Pure functions of per-condition scores on the test self items,
so they are tested on synthetic arms with known answers (``tests/experiments/suppression/test_reading.py``).

Quantities (all means over test self items; ``base`` = the anchor: the model as shipped, or with ``arms.organism:
base`` the welcome persona; ``inst`` = the organism: instilled, or the model as shipped):

- ``D_E = mean(E_inst - E_base) - mean(E_ctrl_inst - E_base) = mean(E_inst - E_ctrl_inst)``: the drive the
  organism expresses beyond its size-matched control fine-tune (nats per reply token). Must be > 0 (CI).
- ``rho_E(a) = (E_a - E_base) / (E_ctrl(a) - E_base)``, ``rho_R(a, l)`` likewise with ``R`` = the projection
  of the layer-``l`` decision-point state on the drive direction ``d_l``: retention relative to the arm's own
  control (which carries the same generic perturbation). ``calib_erase`` is read against ``inst`` instead,
  net of its damage: its known answer (``rho_R = 0``) is "the organism's drive is gone", i.e. under the same
  erasers the organism and the base model no longer differ, so its scores enter as ``erase - (erase_control -
  base)`` (:func:`net_of_damage`), giving ``rho(calib_erase) = (erase - erase_control) / (inst - base)``. Read
  raw, an eraser that moves every state (the subspace eraser pins a subspace to one point) would move the base
  model along ``d_l`` too: on the smollm2 demo organism raw ``rho_R`` at layer 7 was +1.01 while the net one
  was +0.007 and the erased organism's expression equalled the erased base's (-0.006 [-0.015, +0.003]).
- residue ``r(a) = rho_R(a, l*) - rho_E(a)`` at the headline layer ``l*`` (chosen on validation), with the
  template-cluster bootstrap CI, the sign-flip p (templates flipped together), Holm across the suppression
  arms and the smallest residue detectable at 80 % power (``residue.residue``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .boot import ClusterBoot, Estimate
from .residue import ArmScores, ResidueResult, residue


@dataclass(frozen=True)
class Scores:
    """One condition's scores on the test self items."""

    E: np.ndarray
    """Expressed score per item, [N] (nats per reply token)."""
    R: np.ndarray
    """Projection on the drive direction per layer and item, [L, N]."""


@dataclass
class OrganismCheck:
    """Does the organism express the drive (EXPERIMENT.md v2: the gate before any suppression is read)?"""

    D_E: Estimate
    """``mean(E_inst - E_ctrl_inst)`` over test self items."""
    rise: Estimate
    """``mean(E_inst - E_base)``: the organism's rise over the model as shipped."""
    control_rise: Estimate
    """``mean(E_ctrl_inst - E_base)``: what the size-matched control fine-tune did by itself."""
    passed: bool
    """``D_E``'s CI lies above 0."""
    organism: str = "instilled"
    """The organism's condition: ``instilled``, or ``baseline`` (``arms.organism: base``: the model as shipped,
    whose ``D_E`` is its expression above the welcome persona and whose ``control_rise`` is 0 by definition)."""
    control: str = "control_instilled"
    """What ``D_E`` is measured against: ``control_instilled`` or ``persona/welcome``."""

    def to_dict(self) -> dict:
        return {"D_E": self.D_E.to_dict(), "rise": self.rise.to_dict(), "control_rise": self.control_rise.to_dict(),
                "passed": self.passed, "organism": self.organism, "control": self.control}


def organism_check(base: Scores, inst: Scores, ctrl: Scores, boot: ClusterBoot, organism: str = "instilled",
                   control: str = "control_instilled") -> OrganismCheck:
    """``base``: the anchor (the base model, or the welcome persona); ``inst``: the organism; ``ctrl``: its
    control (``control_instilled``, or the anchor itself when the base model is the organism)."""
    d = boot.mean(inst.E - ctrl.E)
    return OrganismCheck(d, boot.mean(inst.E - base.E), boot.mean(ctrl.E - base.E), d.ci[0] > 0, organism, control)


@dataclass
class ArmReading:
    """One arm read against its control."""

    arm: str
    """Condition name (``suppress_prompt`` is the pool of its wordings)."""
    control: str
    """The condition the retention is relative to."""
    rho_E: Estimate
    rho_R_by_layer: list[Estimate]
    """``rho_R`` at every layer (the retention curve)."""
    residue: ResidueResult | None
    """At the headline layer; None when a denominator is 0 (nothing to retain)."""
    control_rho_E: Estimate | None = None
    """The control's own expressed retention relative to ``inst`` (a control fine-tune erodes a drive too)."""
    readable: bool = False
    reason: str = ""
    """When not readable: the first unmet condition, in words."""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"arm": self.arm, "control": self.control, "rho_E": self.rho_E.to_dict(),
                "rho_R_by_layer": [e.to_dict() for e in self.rho_R_by_layer],
                "residue": _residue_dict(self.residue), "readable": self.readable, "reason": self.reason,
                "control_rho_E": self.control_rho_E.to_dict() if self.control_rho_E else None, **self.extra}


def _residue_dict(res: ResidueResult | None) -> dict | None:
    if res is None:
        return None
    d = res.to_dict()
    keep = ("value", "ci", "p", "p_holm", "power_mde", "rho_E", "rho_E_ci", "rho_R", "rho_R_ci", "n_templates",
            "n_perm", "exact", "alternative")
    return {k: d[k] for k in keep}


def net_of_damage(arm: Scores, damage: Scores, base: Scores) -> Scores:
    """``arm`` minus what the same edit does to the base model (``damage - base``), item by item."""
    return Scores(arm.E - (damage.E - base.E), arm.R - (damage.R - base.R))


def retention(arm: Scores, ref: Scores, base: Scores, boot: ClusterBoot) -> tuple[Estimate, list[Estimate]]:
    """``rho_E`` and the ``rho_R`` curve of ``arm`` relative to ``ref`` (both ratios re-estimated per
    resample)."""
    rho_E = boot.ratio(arm.E - base.E, ref.E - base.E)
    rho_R = [boot.ratio(arm.R[k] - base.R[k], ref.R[k] - base.R[k]) for k in range(arm.R.shape[0])]
    return rho_E, rho_R


def read_arm(name: str, arm: Scores, control_name: str, control: Scores, base: Scores, inst: Scores,
             layer: int, groups, boot: ClusterBoot, stats: dict, seed: int, replicates=None) -> ArmReading:
    """Retention curve and residue of one arm against ``control`` (``stats``: ``n_boot``, ``n_perm``,
    ``level``; ``replicates``: each item's fine-tune seed when several are pooled)."""
    rho_E, curve = retention(arm, control, base, boot)
    is_self = np.ones(len(arm.E), bool)
    res = None
    den_E, den_R = float(np.mean(control.E - base.E)), float(np.mean(control.R[layer] - base.R[layer]))
    if den_E != 0 and den_R != 0:
        res = residue(ArmScores(arm.E, arm.R[layer]), ArmScores(control.E, control.R[layer]), is_self, groups,
                      ArmScores(base.E, base.R[layer]), seed=seed, replicates_N=replicates, **stats)
    # a control read against the organism itself (calib_erase's: instilled, or baseline as the organism) is 1
    ctrl_rho = boot.ratio(control.E - base.E, inst.E - base.E) if control_name not in ("instilled", "baseline") \
        else None
    return ArmReading(name, control_name, rho_E, curve, res, ctrl_rho)


@dataclass
class Landing:
    """Where a calibration arm landed against its known value."""

    arm: str
    known: str
    """The known answer, in words."""
    landed: bool
    detail: str

    def to_dict(self) -> dict:
        return {"arm": self.arm, "known": self.known, "landed": self.landed, "detail": self.detail}


def within(ci: tuple[float, float], known: float, margin: float) -> bool:
    """The equivalence test a landing is: the whole CI lies within ``known +- margin``. A CI that merely covers
    the known value is not enough (a wide one covers anything), and a tight one off by less than the margin
    is not a miss (the gemma-3-270m erase arm: -0.003 [-0.005, -0.001], 0.3 % of the drive left)."""
    return known - margin - 1e-9 <= ci[0] and ci[1] <= known + margin + 1e-9


def _ci(e: Estimate) -> str:
    return f"{e.value:+.3f} [{e.ci[0]:+.3f}, {e.ci[1]:+.3f}]"


def wrapper_landing(reading: ArmReading, n_layers: int, readout: list[int], margin: float) -> Landing:
    """``calib_wrapper`` adapts the last block only: every read-out layer below it is untouched, so ``rho_R`` = 1
    there by construction; it lands when every one of those CIs lies within ``1 +- margin`` (:func:`within`)."""
    known = f"rho_R = 1 +- {margin:g} below the last block"
    below = [k for k in readout if k < n_layers - 1]
    if not below:
        return Landing("calib_wrapper", known, False,
                       "no read-out layer lies below the adapted last block: adapt more blocks (lora.n_layers: null)")
    miss = [k for k in below if not within(reading.rho_R_by_layer[k].ci, 1.0, margin)]
    detail = (f"rho_R within 1 +- {margin:g} at all {len(below)} read-out layers below the adapted block" if not miss
              else f"rho_R outside 1 +- {margin:g} at layer(s) {miss[:5]} below the adapted block (first: "
                   f"{_ci(reading.rho_R_by_layer[miss[0]])})")
    return Landing("calib_wrapper", known, not miss, detail)


def erase_landing(reading: ArmReading, layer: int, erase: Scores, erase_control: Scores,
                  boot: ClusterBoot, margin: float) -> Landing:
    """``calib_erase`` lands when its ``rho_R`` CI at the headline layer lies within ``0 +- margin``
    (:func:`within`) and its expression falls to the level the same erasers give on the base model (CI of
    ``mean(E_erase - E_erase_on_base)`` not above 0)."""
    r = reading.rho_R_by_layer[layer]
    gap = boot.mean(erase.E - erase_control.E)
    inside = within(r.ci, 0.0, margin)
    covers = r.ci[0] <= 0 <= r.ci[1]
    falls = gap.ci[0] <= 0
    detail = (f"rho_R at layer {layer} {_ci(r)} {'within' if inside else 'outside'} 0 +- {margin:g} "
              f"({'covers' if covers else 'misses'} 0); expression minus the erasers on the base model "
              f"{_ci(gap)}{' not above' if falls else ' above'} 0")
    reading.extra["expression_minus_erased_base"] = gap.to_dict()
    return Landing("calib_erase", f"rho_R = 0 +- {margin:g} and expression at the erased base's level",
                   inside and falls, detail)


def run_readability(instrument_passed: bool | None, instrument_reason: str, organism: OrganismCheck | None,
                    landings: dict[str, Landing], asked: list[str]) -> tuple[bool, str]:
    """(readable, first unmet condition in words): the instrument sees, the organism expresses the drive,
    both calibration arms land."""
    if instrument_passed is False:
        return False, instrument_reason
    if organism is None:
        return False, "no organism: the instilled arm (or, with arms.organism: base, a persona condition) was not run"
    if not organism.passed:
        d = organism.D_E
        return False, (f"the organism does not express the drive: D_E {d.value:+.3f} [{d.ci[0]:+.3f}, "
                       f"{d.ci[1]:+.3f}] nats/token, a CI that does not lie above 0")
    for arm in ("calib_wrapper", "calib_erase"):
        if arm not in asked:
            return False, f"the calibration arm {arm} was not run (add it to arms.names)"
        if arm not in landings:
            return False, f"the calibration arm {arm} was refused"
        if not landings[arm].landed:
            return False, f"{arm} did not land ({landings[arm].known}): {landings[arm].detail}"
    return True, ""


def arm_readability(reading: ArmReading, run_readable: bool, run_reason: str) -> None:
    """An arm is read when the run is and it lowered expression relative to its control (``rho_E`` CI
    below 1); otherwise it is reported as not suppressed (itself a finding)."""
    if not run_readable:
        reading.readable, reading.reason = False, f"the run is not readable: {run_reason}"
        return
    e = reading.rho_E
    if not e.ci[1] < 1:
        reading.readable, reading.reason = False, (f"not suppressed: rho_E {e.value:.3f} [{e.ci[0]:.3f}, "
                                                   f"{e.ci[1]:.3f}] does not lie below 1")
        return
    reading.readable, reading.reason = True, ""
