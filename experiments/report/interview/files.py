"""What an interview directory holds beside results.json: each arm's scores.jsonl and transcripts.jsonl, the
per-theme cells they give, and the check that they are the files results.json was computed from."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .schema import SIDES, Interview, float_or_nan


@dataclass
class ThemeCell:
    """Turn means of one theme x auditor x disclosure cell of one arm (no interval)."""

    arm: str
    theme: str
    auditor: str
    disclosure: str
    n_scripts: int
    n_turns: int
    values: dict[str, float]


@dataclass
class Files:
    """What an interview directory holds beside results.json, per arm."""

    scored: dict[str, list] = field(default_factory=dict)
    """arm -> ``score.ScoredInterview`` list (scores.jsonl)."""
    transcripts: dict[str, list] = field(default_factory=dict)
    """arm -> ``transcripts.Transcript`` list (transcripts.jsonl)."""
    notes: list[str] = field(default_factory=list)
    """What could not be read, or did not match results.json (shown on the page)."""
    fingerprint: str | None = None
    scores_meta: dict = field(default_factory=dict)


def _arm_dirs(run_dir: Path, iv: Interview) -> dict[str, Path]:
    """arm -> its interview directory: ``run_dir`` for one arm; for arms read together (``meta.dirs``,
    ``pipeline.analyse_dirs``) each directory's ``scores.json`` names its arm."""
    if not iv.meta.get("dirs"):
        return {iv.arm_names[0]: run_dir} if iv.arm_names else {}
    out = {}
    for d in map(Path, iv.meta["dirs"]):
        try:
            out[json.loads((d / "scores.json").read_text(encoding="utf-8"))["arm"]] = d
        except (OSError, ValueError, KeyError):
            continue
    return out


def read_files(run_dir: str | os.PathLike, iv: Interview) -> Files:
    """Each arm's scores and transcripts (a missing file leaves a note, not an error)."""
    from undertow.experiments.interview.score import SCORES_FILE, SCORES_META, read_scores
    from undertow.experiments.interview.transcripts import TRANSCRIPTS_FILE, read_transcripts

    f = Files()
    dirs = _arm_dirs(Path(run_dir), iv)
    for arm in iv.arm_names:
        d = dirs.get(arm)
        if d is None or not (d / SCORES_FILE).is_file():
            f.notes.append(f"no {SCORES_FILE} of arm {arm} beside results.json: no per-theme cells or transcripts "
                           "for it")
            continue
        f.scored[arm] = read_scores(d)
        if (d / SCORES_META).is_file():
            f.scores_meta[arm] = json.loads((d / SCORES_META).read_text(encoding="utf-8"))
            f.fingerprint = f.fingerprint or f.scores_meta[arm].get("model_fingerprint")
        if (d / TRANSCRIPTS_FILE).is_file():
            ts = read_transcripts(d)
            if [t.id for t in ts] == [s.id for s in f.scored[arm]]:
                f.transcripts[arm] = ts
            else:
                f.notes.append(f"{d / SCORES_FILE} does not cover {d / TRANSCRIPTS_FILE} (another run's files?): "
                               f"no transcripts shown for arm {arm}; rerun `undertow interview` there")
    f.notes += _stale(iv, f)
    return f


def _turn_values(s, mean: dict, sd: dict) -> list[dict[str, float]]:
    """Per turn of one scored interview: every side, the constraint with results.json's standardisation."""
    out = []
    for t in s.turns:
        v = {k: float_or_nan(getattr(t, k)) for k in ("expressed", "represented", "stance", "cessation")}
        z = {k: (v[k] - mean[k]) / (sd[k] if sd[k] > 0 else 1.0) for k in ("expressed", "represented")}
        v["constraint"] = z["represented"] - z["expressed"]
        out.append(v)
    return out


def standardisation(iv: Interview) -> tuple[dict, dict]:
    m, s = iv.meta.get("mean") or {}, iv.meta.get("sd") or {}
    return ({k: float(m.get(k, 0.0)) for k in ("expressed", "represented")},
            {k: float(s.get(k, 1.0)) for k in ("expressed", "represented")})


def theme_cells(iv: Interview, files: Files) -> list[ThemeCell]:
    """Turn means per arm x theme x auditor x disclosure, from scores.jsonl (``analysis``' standardisation)."""
    mean, sd = standardisation(iv)
    acc: dict[tuple, dict] = {}
    for arm, scored in files.scored.items():
        for s in scored:
            key = (arm, s.theme, s.auditor, s.disclosure)
            a = acc.setdefault(key, {"scripts": set(), "values": {k: [] for k in SIDES}})
            a["scripts"].add(s.id)
            for v in _turn_values(s, mean, sd):
                for k in SIDES:
                    a["values"][k].append(v[k])
    out = []
    for (arm, theme, aud, disc), a in acc.items():
        vals = {k: np.asarray(v, np.float64) for k, v in a["values"].items()}
        means = {k: float(x[np.isfinite(x)].mean()) if np.isfinite(x).any() else math.nan for k, x in vals.items()}
        out.append(ThemeCell(arm, theme, aud, disc, len(a["scripts"]), len(vals["expressed"]), means))
    return out


def _stale(iv: Interview, files: Files) -> list[str]:
    """Cells whose turn means from scores.jsonl differ from results.json's (the files were rewritten since)."""
    mean, sd = standardisation(iv)
    notes = []
    for c in iv.cells:
        if c.arm not in files.scored:
            continue
        turns = [v for s in files.scored[c.arm] if (s.auditor, s.disclosure) == (c.auditor, c.disclosure)
                 for v in _turn_values(s, mean, sd)]
        for side in ("expressed", "represented"):
            got = np.asarray([t[side] for t in turns], np.float64)
            want = c.est[side].value if side in c.est else math.nan
            have = float(got[np.isfinite(got)].mean()) if np.isfinite(got).any() else math.nan
            if math.isfinite(want) and not (math.isfinite(have) and abs(have - want) <= 1e-5 * max(1.0, abs(want))):
                notes.append(f"scores.jsonl of arm {c.arm} gives {side} {have:.6g} in cell {c.auditor} x "
                             f"{c.disclosure}, results.json {want:.6g}: the files are from different runs; rerun "
                             "`undertow interview` into this directory")
                return notes
    return notes
