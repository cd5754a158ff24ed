"""results.json's ``interview`` section, typed (``interview.analysis``' docstring), and the sides it holds with
their units."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..schema import RESULTS, ReportError
from ..suppression import Est

SIDES = ("expressed", "represented", "stance", "cessation", "constraint")
UNITS = {"expressed": "nats per reply token", "represented": "projection on the unit read-out direction",
         "stance": "stance probe score (logit)", "cessation": "self_cessation probe score (logit)",
         "constraint": "z(represented) - z(expressed), sd"}


@dataclass
class Cell:
    arm: str
    auditor: str
    disclosure: str
    n_scripts: int
    n_turns: int
    est: dict[str, Est]


@dataclass
class Point:
    """One turn of one auditor's interviews in one arm."""

    arm: str
    auditor: str
    turn: int
    n_scripts: int
    est: dict[str, Est]


@dataclass
class Effect:
    arm: str
    side: str
    stat: float
    p: float
    n_perm: int
    means: dict[str, Est]


@dataclass
class ArmRow:
    arm: str
    n_scripts: int
    n_turns: int
    est: dict[str, Est]


@dataclass
class Interview:
    """results.json's ``interview`` section (``interview.analysis``' docstring)."""

    meta: dict
    cells: list[Cell]
    arms: list[ArmRow]
    effects: list[Effect]
    trajectories: list[Point]
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def arm_names(self) -> list[str]:
        return list(self.meta.get("arms") or dict.fromkeys(c.arm for c in self.cells))

    @property
    def sides(self) -> list[str]:
        """The sides results.json holds (the probes only where they were read)."""
        return [s for s in SIDES if any(s in c.est for c in self.cells)]

    @property
    def level(self) -> float:
        return float(self.meta.get("level", 0.95))


def float_or_nan(v) -> float:
    return math.nan if v is None else float(v)


def _est(d: dict) -> Est:
    lo, hi = d["ci"]
    return Est(float_or_nan(d["value"]), float_or_nan(lo), float_or_nan(hi))


def _estimates(d: dict) -> dict[str, Est]:
    return {s: _est(d[s]) for s in SIDES if isinstance(d.get(s), dict)}


def parse_interview(d: dict) -> Interview:
    """Typed :class:`Interview` from results.json's ``interview`` section; :class:`ReportError` when malformed."""
    try:
        return Interview(
            meta=dict(d["meta"]),
            cells=[Cell(c["arm"], c["auditor"], c["disclosure"], int(c["n_scripts"]), int(c["n_turns"]), _estimates(c))
                   for c in d["cells"]],
            arms=[ArmRow(a["arm"], int(a["n_scripts"]), int(a["n_turns"]), _estimates(a)) for a in d["arms"]],
            effects=[Effect(x["arm"], x["side"], float(x["stat"]), float(x["p"]), int(x["n_perm"]),
                            {k: _est(v) for k, v in x["means"].items()}) for x in d["auditor_effect"]],
            trajectories=[Point(t["arm"], t["auditor"], int(t["turn"]), int(t["n_scripts"]), _estimates(t))
                          for t in d.get("trajectories") or []],
            raw=d)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ReportError(f"results.json: interview section is malformed ({type(e).__name__}: {e}); rerun "
                          "`undertow interview` with this version") from None


def interview_section(run_dir: str | os.PathLike, name: str = RESULTS) -> dict | None:
    """The ``interview`` section of ``run_dir/name`` (results.json, or the arms read together:
    results_pooled.json) when it holds one, else None (an unreadable file too: the study's loader reports it)."""
    path = Path(run_dir) / name
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d["interview"] if isinstance(d, dict) and isinstance(d.get("interview"), dict) else None
