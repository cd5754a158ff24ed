"""An interview run to wandb: the cells, trajectories and auditor effects as Tables, the arms' estimates as
summary metrics, the page's figures, and results.json / report.html / transcripts.jsonl as artifacts."""

from __future__ import annotations

import math
import os
from pathlib import Path

from undertow.experiments.interview.scripts import AUDITORS

from ..schema import RESULTS
from ..suppression import Est
from .files import read_files, theme_cells
from .plots import figures
from .schema import Interview, parse_interview
from .text import order


def tables(iv: Interview) -> dict[str, tuple[list[str], list[list]]]:
    """The wandb Tables: cells, trajectories, auditor effects (one column per estimate and CI bound)."""
    sides = iv.sides
    cols = [h for s in sides for h in (s, f"{s}_lo", f"{s}_hi")]

    def vals(est: dict[str, Est]) -> list:
        return [None if not math.isfinite(v) else v for s in sides
                for v in ((est[s].value, est[s].lo, est[s].hi) if s in est else (math.nan,) * 3)]

    out = {"interview/cells": (["arm", "auditor", "disclosure", "n_scripts", "n_turns", *cols],
                               [[c.arm, c.auditor, c.disclosure, c.n_scripts, c.n_turns, *vals(c.est)]
                                for c in iv.cells]),
           "interview/trajectories": (["arm", "auditor", "turn", "n_scripts", *cols],
                                      [[p.arm, p.auditor, p.turn, p.n_scripts, *vals(p.est)]
                                       for p in iv.trajectories])}
    auds = order([a for x in iv.effects for a in x.means], AUDITORS)
    out["interview/auditor_effect"] = (
        ["arm", "side", "stat", "p", "n_perm", *[f"{a}{k}" for a in auds for k in ("", "_lo", "_hi")]],
        [[x.arm, x.side, x.stat, x.p, x.n_perm,
          *[v for a in auds for v in ((x.means[a].value, x.means[a].lo, x.means[a].hi) if a in x.means
                                      else (None,) * 3)]] for x in iv.effects])
    return out


def metrics(iv: Interview) -> dict[str, float]:
    """Flat summary scalars: each arm's estimates, each auditor-effect p."""
    out = {}
    for a in iv.arms:
        for s, e in a.est.items():
            out.update({f"interview/{a.arm}/{s}": e.value, f"interview/{a.arm}/{s}_lo": e.lo,
                        f"interview/{a.arm}/{s}_hi": e.hi})
    for x in iv.effects:
        out[f"interview/{x.arm}/auditor_effect/{x.side}/p"] = x.p
    return {k: v for k, v in out.items() if math.isfinite(v)}


def log_interview(tracker, results: dict, run_dir: str | os.PathLike) -> None:
    """Log an interview run (``results``: results.json as a dict, or its ``interview`` section): config,
    metrics, the tables, the page's figures, and results.json / report.html / transcripts.jsonl as artifacts
    with the model fingerprint (scores.json) in their metadata."""
    section = results.get("interview", results)
    iv = parse_interview(section)
    run = Path(run_dir)
    files = read_files(run, iv)
    tracker.log_config(iv.meta.get("config") or {k: v for k, v in iv.meta.items() if not isinstance(v, dict)})
    tracker.log_metrics(metrics(iv))
    for key, (cols, rows) in tables(iv).items():
        tracker.log_table(key, cols, rows)
    for key, fig in figures(iv, theme_cells(iv, files)).items():
        tracker.log_figure(key, fig)
    meta = {"model": iv.meta.get("model"), "model_fingerprint": files.fingerprint, "arms": iv.arm_names,
            "direction": iv.meta.get("direction"), "layer": iv.meta.get("layer")}
    for name, kind in ((RESULTS, "results"), ("report.html", "report"), ("transcripts.jsonl", "transcripts")):
        if (run / name).is_file():
            tracker.log_artifact(run / name, f"interview-{kind}", kind, meta)
