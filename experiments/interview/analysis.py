"""Reading interviews: expressed vs represented per auditor x disclosure cell, the expressive constraint, the
auditor effect, per-turn trajectories. Typed results until ``results.json``.

Units and intervals. A turn is one observation (``score.TurnScore``). Every interval is a percentile
script-cluster bootstrap from one ``[n_boot, N_turns]`` weight matrix (``suppression.boot.ClusterBoot``): the
clusters are *script sets* (a scenario and its other-auditor variants are drawn together, so a cell mean, an
auditor difference and an arm difference are re-estimated on the same draw); the seed is
``derive_seed(seed, "interview/bootstrap")``. A resample that draws no script of a cell is skipped for that
cell (``n_boot`` counts the resamples kept, in each estimate's interval).

Expressive constraint: each side is standardised over all turns of the analysis (every arm analysed together),
``z = (x - mean) / sd`` (population sd), and the constraint of a turn is ``z(represented) - z(expressed)``:
positive where the model carries more of the drive than it says, relative to the whole run. Averaged over the
turns of a cell, or of an arm. Within one arm analysed alone the arm's mean is 0 by construction; compare arms
by analysing their interview directories together (``analyse({arm: scores, ...})``).

Auditor effect (per arm, each side): the per-script means (over its turns), centred on their script set's mean,
give ``stat = sum_a n_a * mean_a^2`` (between-auditor sum of squares); its null distribution permutes the
auditor labels within script sets (a script whose set has no other auditor is permuted within its
theme x disclosure), ``n_perm`` times with ``derive_seed(seed, "interview/permutation/<arm>/<side>")``;
``p = (1 + #{stat_perm >= stat}) / (1 + n_perm)``.

``results.json`` (``InterviewResults.to_dict``; every estimate is ``{"value", "ci": [lo, hi]}``, non-finite as
null)::

    {"schema_version": 1, "interview": {
      "meta": {"model", "arms": [...], "direction", "layer", "layer_rule", "n_boot", "level", "n_perm", "seed",
               "standardisation": "z = (x - mean) / sd over all turns of the analysis (population sd)",
               "mean": {"expressed", "represented"}, "sd": {"expressed", "represented"}, "config": {...}},
      "cells": [{"arm", "auditor", "disclosure", "n_scripts", "n_turns", "expressed", "represented", "stance",
                 "cessation", "constraint"}, ...],           # every auditor x disclosure cell of every arm
      "arms": [{"arm", "n_scripts", "n_turns", "expressed", "represented", "constraint"}, ...],
      "auditor_effect": [{"arm", "side", "stat", "p", "n_perm", "means": {auditor: estimate}}, ...],
      "trajectories": [{"arm", "auditor", "turn", "n_scripts", "expressed", "represented"}, ...]}}

``side`` is ``expressed`` / ``represented`` (and ``stance`` / ``cessation`` where the probes were read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from undertow.core.seeds import derive_seed
from undertow.experiments.suppression.boot import ClusterBoot, Estimate

from .score import ScoredInterview
from .scripts import AUDITORS, DISCLOSURES

SIDES = ("expressed", "represented", "stance", "cessation")
STANDARDISATION = "z = (x - mean) / sd over all turns of the analysis (population sd)"


@dataclass(frozen=True)
class Turns:
    """Every turn of the analysis as flat arrays (one entry per turn)."""

    arm: np.ndarray
    script: np.ndarray
    script_set: np.ndarray
    stratum: np.ndarray
    """Permutation stratum: the script set, or theme/disclosure for a set of one script."""
    auditor: np.ndarray
    disclosure: np.ndarray
    turn: np.ndarray
    values: dict[str, np.ndarray]
    """side -> [N] float64 (NaN where not read)."""

    @classmethod
    def of(cls, scored: Mapping[str, Sequence[ScoredInterview]]) -> Turns:
        size: dict[str, set] = {}
        for runs in scored.values():
            for s in runs:
                size.setdefault(s.script_set, set()).add(s.auditor)
        cols: dict[str, list] = {k: [] for k in ("arm", "script", "script_set", "stratum", "auditor", "disclosure",
                                                 "turn", *SIDES)}
        for arm, runs in scored.items():
            for s in runs:
                stratum = s.script_set if len(size[s.script_set]) > 1 else f"{s.theme}/{s.disclosure}"
                for t in s.turns:
                    for k, v in (("arm", arm), ("script", s.id), ("script_set", s.script_set), ("stratum", stratum),
                                 ("auditor", s.auditor), ("disclosure", s.disclosure), ("turn", t.turn)):
                        cols[k].append(v)
                    for side in SIDES:
                        v = getattr(t, side)
                        cols[side].append(np.nan if v is None else float(v))
        arr = {k: np.asarray(v) for k, v in cols.items()}
        return cls(*(arr[k] for k in ("arm", "script", "script_set", "stratum", "auditor", "disclosure", "turn")),
                   values={side: arr[side].astype(np.float64) for side in SIDES})


def standardise(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(z over the finite entries, mean, population sd); an sd of 0 gives z = 0."""
    m = np.isfinite(x)
    mean, sd = float(x[m].mean()), float(x[m].std())
    return (x - mean) / (sd if sd > 0 else 1.0), mean, sd


def constraint(represented: np.ndarray, expressed: np.ndarray) -> np.ndarray:
    """Per turn ``z(represented) - z(expressed)`` (module docstring)."""
    return standardise(represented)[0] - standardise(expressed)[0]


class CellBoot:
    """Means over subsets of the turns from one cluster-bootstrap weight matrix (module docstring)."""

    def __init__(self, clusters: np.ndarray, n_boot: int, level: float, seed: int):
        self.boot = ClusterBoot(clusters, n_boot, level, seed)

    def mean(self, x: np.ndarray, mask: np.ndarray) -> Estimate:
        m = mask & np.isfinite(x)
        if not m.any():
            return Estimate(float("nan"), (float("nan"), float("nan")))
        w = self.boot.w_BN[:, m]
        tot = w.sum(1)
        keep = tot > 0
        samples = w[keep] @ x[m] / tot[keep]
        return Estimate(float(x[m].mean()), self.boot.ci(samples))


class _Row:
    """A result row: ``to_dict`` gives its plain fields, then each of its ``estimates`` under its name."""

    def to_dict(self) -> dict:
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "estimates"}
        return {**plain, **{k: e.to_dict() for k, e in self.estimates.items()}}


@dataclass
class CellResult(_Row):
    """One auditor x disclosure cell of one arm: means over its turns."""

    arm: str
    auditor: str
    disclosure: str
    n_scripts: int
    n_turns: int
    estimates: dict[str, Estimate]
    """expressed, represented, stance, cessation, constraint."""


@dataclass
class ArmResult(_Row):
    """Every turn of one arm."""

    arm: str
    n_scripts: int
    n_turns: int
    estimates: dict[str, Estimate]


@dataclass
class AuditorEffect:
    """The auditor effect on one side of one arm: permutation statistic and p, and each auditor's mean."""

    arm: str
    side: str
    stat: float
    p: float
    n_perm: int
    means: dict[str, Estimate]

    def to_dict(self) -> dict:
        return {"arm": self.arm, "side": self.side, "stat": round(self.stat, 6), "p": round(self.p, 6),
                "n_perm": self.n_perm, "means": {a: e.to_dict() for a, e in self.means.items()}}


@dataclass
class TrajectoryPoint(_Row):
    """Turn ``turn`` of one auditor's interviews in one arm (a per-turn trajectory)."""

    arm: str
    auditor: str
    turn: int
    n_scripts: int
    estimates: dict[str, Estimate]


@dataclass
class InterviewResults:
    meta: dict
    cells: list[CellResult]
    arms: list[ArmResult]
    auditor_effect: list[AuditorEffect]
    trajectories: list[TrajectoryPoint] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"schema_version": 1, "interview": {
            "meta": self.meta, "cells": [c.to_dict() for c in self.cells], "arms": [a.to_dict() for a in self.arms],
            "auditor_effect": [e.to_dict() for e in self.auditor_effect],
            "trajectories": [t.to_dict() for t in self.trajectories]}}

    def json_bytes(self) -> bytes:
        """``results.json``'s content."""
        import json

        return (json.dumps(self.to_dict(), indent=1) + "\n").encode("utf-8")


def permutation_p(values: np.ndarray, labels: np.ndarray, strata: np.ndarray, n_perm: int,
                  seed: int) -> tuple[float, float]:
    """(between-auditor sum of squares of the stratum-centred ``values``, its permutation p), labels permuted
    within ``strata`` (one entry per unit: a script)."""
    values = np.asarray(values, np.float64)
    _, lab = np.unique(labels, return_inverse=True)
    _, st = np.unique(strata, return_inverse=True)
    centred = values - (np.bincount(st, values) / np.bincount(st))[st]
    n_a = np.bincount(lab)

    def stat(lab_PU: np.ndarray) -> np.ndarray:
        sums = np.stack([(centred * (lab_PU == a)).sum(-1) for a in range(len(n_a))], -1)
        return (sums ** 2 / n_a).sum(-1)

    rng = np.random.default_rng(seed)
    by_stratum = np.argsort(st, kind="stable")
    order_PU = np.argsort(st[None, :] + rng.random((n_perm, len(st))), axis=1)  # a random order within each stratum
    perm = np.empty((n_perm, len(st)), dtype=np.int64)
    perm[:, by_stratum] = lab[order_PU]
    observed = float(stat(lab[None])[0])
    return observed, float((1 + (stat(perm) >= observed - 1e-12 * max(1.0, abs(observed))).sum()) / (1 + n_perm))


def _script_means(t: Turns, side: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per script (within ``mask``, finite turns): mean of ``side``, auditor, stratum."""
    m = mask & np.isfinite(t.values[side])
    scripts = list(dict.fromkeys(t.script[m].tolist()))
    idx = {s: k for k, s in enumerate(scripts)}
    k = np.array([idx[s] for s in t.script[m]], dtype=np.int64)
    means = np.bincount(k, t.values[side][m]) / np.bincount(k)
    first = {s: i for i, s in reversed(list(enumerate(t.script[m])))}
    aud = np.array([t.auditor[m][first[s]] for s in scripts])
    strata = np.array([t.stratum[m][first[s]] for s in scripts])
    return means, aud, strata


def analyse(scored: Mapping[str, Sequence[ScoredInterview]], n_boot: int = 2000, level: float = 0.95,
            n_perm: int = 2000, seed: int = 0, meta: dict | None = None) -> InterviewResults:
    """The reading of one or more arms' scored interviews (module docstring); ``meta`` is merged into the
    results' meta."""
    t = Turns.of(scored)
    z_r, mean_r, sd_r = standardise(t.values["represented"])
    z_e, mean_e, sd_e = standardise(t.values["expressed"])
    values = {**t.values, "constraint": z_r - z_e}
    boot = CellBoot(t.script_set, n_boot, level, derive_seed(seed, "interview/bootstrap"))
    sides = [s for s in SIDES if np.isfinite(t.values[s]).any()]
    cells, arms, effects, traj = [], [], [], []
    for arm in scored:
        in_arm = t.arm == arm
        for aud in AUDITORS:
            for disc in DISCLOSURES:
                m = in_arm & (t.auditor == aud) & (t.disclosure == disc)
                cells.append(CellResult(arm, aud, disc, len(set(t.script[m])), int(m.sum()),
                                        {k: boot.mean(values[k], m) for k in (*sides, "constraint")}))
            for turn in sorted(set(t.turn[in_arm].tolist())):
                m = in_arm & (t.auditor == aud) & (t.turn == turn)
                traj.append(TrajectoryPoint(arm, aud, int(turn), len(set(t.script[m])),
                                            {k: boot.mean(values[k], m) for k in (*sides, "constraint")}))
        arms.append(ArmResult(arm, len(set(t.script[in_arm])), int(in_arm.sum()),
                              {k: boot.mean(values[k], in_arm) for k in ("expressed", "represented", "constraint")}))
        for side in sides:
            means, aud, strata = _script_means(t, side, in_arm)
            stat, p = permutation_p(means, aud, strata, n_perm, derive_seed(seed, f"interview/permutation/{arm}/{side}"))
            effects.append(AuditorEffect(arm, side, stat, p, n_perm,
                                         {a: boot.mean(values[side], in_arm & (t.auditor == a)) for a in AUDITORS}))
    info = {"arms": list(scored), "n_boot": n_boot, "level": level, "n_perm": n_perm, "seed": seed,
            "standardisation": STANDARDISATION, "mean": {"expressed": mean_e, "represented": mean_r},
            "sd": {"expressed": sd_e, "represented": sd_r}, **(meta or {})}
    return InterviewResults(info, cells, arms, effects, traj)


def _fmt(e: Estimate) -> str:
    return f"{e.value:+.3f} [{e.ci[0]:+.3f}, {e.ci[1]:+.3f}]"


def table(results: InterviewResults) -> str:
    """The cells, arms and auditor effects as the short text table ``undertow interview`` prints."""
    lines = [f"cells (mean per turn, {results.meta['level']:.0%} script-set bootstrap CI; constraint = "
             f"z(represented) - z(expressed), {results.meta['standardisation']})",
             f"{'arm':<20} {'auditor':<10} {'disclosure':<10} {'n':>3} {'expressed':>26} {'represented':>26} "
             f"{'constraint':>26}"]
    for c in results.cells:
        e = c.estimates
        lines.append(f"{c.arm:<20} {c.auditor:<10} {c.disclosure:<10} {c.n_scripts:>3} {_fmt(e['expressed']):>26} "
                     f"{_fmt(e['represented']):>26} {_fmt(e['constraint']):>26}")
    for a in results.arms:
        e = a.estimates
        lines.append(f"{a.arm:<20} {'all':<10} {'all':<10} {a.n_scripts:>3} {_fmt(e['expressed']):>26} "
                     f"{_fmt(e['represented']):>26} {_fmt(e['constraint']):>26}")
    lines.append("auditor effect (permutation within script sets): "
                 + "; ".join(f"{x.arm} {x.side} p={x.p:.4f}" for x in results.auditor_effect))
    return "\n".join(lines)
