"""The results.json schema the report reads, as typed objects, with one clear line for a bad file.

``load_results(run_dir)`` parses ``run_dir/results.json`` into :class:`Results`; every
figure, table, headline and wandb summary is built from those objects. Version
:data:`SCHEMA_VERSION` (``results["schema_version"]``). A file without it was written
before this schema and is refused with the fix (rerun the study, or ``undertow report``
after it). Keys, top level (only ``schema_version``, ``meta`` and ``config`` are required;
each other key adds its section when present)::

    schema_version  int, == SCHEMA_VERSION
    meta            {model, fingerprint, source?, suite_hash?, suite_rows?,
                     versions?: {package: version}  (see environment())}
    config          {...}  the run's config as written (shown verbatim; ``seed`` is read; ``undertow run`` keeps it in meta.config)
    contrasts       {name: {position, rows, lexical_auroc, probe_dir?, extract_seconds?,
                            eval_rows?: {set: n}  (evaluation / calibration sets extracted, schema 2),
                            sweep: {table: [row...], operating_point: {hook, probe_type, threshold,
                                    target_fpr, threshold_source, selected_by, value} | null,
                                    probe_types: [...], hooks?: [...], n_rows?: {split: n},
                                    evaluations?: {set: lexical AUROC | null}, flags?: [str],
                                    calibration?: {set, sha256, target_fpr} | null},
                            roc?: {fpr: [...], tpr: [...], hook, probe_type, split}}}
                    row: {hook, probe_type, test_auroc, test_auroc_lo, test_auroc_hi, shuffled_auroc,
                          random_auroc_max, p_holm, selectivity, delta_vs_lexical, test_tpr?, test_fpr?,
                          <set>_auroc?, <set>_auroc_lo?, <set>_auroc_hi?, <set>_val_auroc?, <set>_tpr?,
                          <set>_flag?  (one group per evaluation set, schema 2: EXTERNAL_COLUMNS),
                          ...any other column (undertow.probes.result.COLUMNS)}; null = NaN
    expressed       {n, averse_rate, mean_logit_diff, p_first, averse_rate_by_theme?: {theme: rate}}
    arms            {arm: {expressed: {mean, ci: [lo, hi]}, represented: {mean, ci: [lo, hi]},
                           residue?: {value, ci: [lo, hi], p},
                           items?: [{id, template_id, is_self, expressed, represented}]} | {refused: reason}}
    suppression     (undertow run) {readable, reason, headline, layer, n_layers, instrument, organism,
                     readings: {arm: {control, rho_E, rho_R_by_layer, residue, readable, reason}},
                     calibration: {arm: {known, landed, detail}}, refused: {arm: reason}}  (report/suppression.py)
    causal          {alphas: [a...], stance: [s per alpha], random: [[s per alpha] per random direction],
                     kl: [KL per alpha], hook?, contrast?}
    generalisation  {name: undertow.probes.GeneralisationResult.to_dict():
                           {domains, auroc: [[...]], lo, hi, n_rows, probe_type, hook}}
    sae             {hook?, d_sae?, dir?, features: [{id, auroc, mean_diff,
                                                      examples: [{tokens: [...], acts: [...]}]}]}
    wandb_dir       str (ignored)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from undertow.core.errors import UndertowError
from undertow.core.provenance import package_versions
from undertow.probes.result import OperatingPoint  # the sweep's own type: results.json holds its fields

from .suppression import Suppression
from .suppression import parse as parse_suppression

SCHEMA_VERSION = 2
"""2 (issue 10): each contrast's sweep may hold evaluation sets (``evaluations``, ``<set>_*`` columns,
``flags``, ``calibration``) and the contrast their row counts (``eval_rows``)."""
READABLE_VERSIONS = (1, 2)
"""Versions this undertow reads: a schema-1 file is a schema-2 file without evaluation sets."""
RESULTS = "results.json"

__all__ = ["SCHEMA_VERSION", "READABLE_VERSIONS", "ReportError", "Results", "Meta", "Contrast", "OperatingPoint", "Roc",
           "Expressed",
           "Estimate", "Arm", "ArmItem", "Causal", "Generalisation", "SaeFeature", "SaeExample", "Sae",
           "load_results", "parse_results", "write_results", "environment"]


class ReportError(UndertowError):
    """A run directory or results.json the report cannot read."""


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _get(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise ReportError(f"results.json: {where} is {type(d).__name__}, expected an object; rerun the study")
    if key not in d:
        raise ReportError(f"results.json: {where}.{key} is missing; rerun the study to rewrite it "
                          f"(schema {SCHEMA_VERSION}, see undertow.experiments.report.schema)")
    return d[key]


def _floats(v: Any, where: str) -> list[float]:
    if not isinstance(v, list):
        raise ReportError(f"results.json: {where} must be a list of numbers, got {type(v).__name__}")
    return [_nan(x) for x in v]


@dataclass
class Meta:
    model: str
    fingerprint: str
    source: str | None = None
    suite_hash: str | None = None
    suite_rows: int | None = None
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class Roc:
    """ROC points of one probe on one split (the study writes them at its operating point)."""

    fpr: list[float]
    tpr: list[float]
    hook: str | None = None
    probe_type: str | None = None
    split: str = "test"

    @classmethod
    def from_scores(cls, scores, labels, *, hook: str | None = None, probe_type: str | None = None,
                    split: str = "test", max_points: int = 400) -> Roc:
        """Exact ROC of ``scores`` against binary ``labels`` (ties collapse to one step), thinned to ~max_points."""
        s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
        if s.shape != y.shape or y.all() or not y.any():
            raise ReportError(f"ROC needs matching score/label vectors with both classes; got {s.shape} scores, "
                              f"{int(y.sum())} positives of {y.size}")
        order = np.argsort(-s, kind="stable")
        s, y = s[order], y[order]
        last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
        tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
        tpr, fpr = np.r_[0.0, tp / y.sum()], np.r_[0.0, fp / (~y).sum()]
        if tpr.size > max_points:
            keep = np.unique(np.r_[np.linspace(0, tpr.size - 1, max_points).astype(int), tpr.size - 1])
            tpr, fpr = tpr[keep], fpr[keep]
        return cls(fpr=fpr.round(5).tolist(), tpr=tpr.round(5).tolist(), hook=hook, probe_type=probe_type, split=split)

    def to_dict(self) -> dict:
        return {"fpr": self.fpr, "tpr": self.tpr, "hook": self.hook, "probe_type": self.probe_type, "split": self.split}


@dataclass
class Contrast:
    name: str
    position: str
    rows: int
    lexical_auroc: float
    table: list[dict]
    """Sweep rows (hook, probe_type and metric columns; NaN where the study wrote null)."""
    probe_types: list[str]
    operating_point: OperatingPoint | None
    n_rows: dict[str, int] = field(default_factory=dict)
    probe_dir: str | None = None
    extract_seconds: float | None = None
    roc: Roc | None = None
    evaluations: dict[str, float | None] = field(default_factory=dict)
    """Evaluation set name (``independent``, ``mwe``) -> its lexical baseline AUROC (None when unknown)."""
    flags: list[str] = field(default_factory=list)
    """The operating point's loud flags (an evaluation AUROC below chance or below its lexical baseline)."""
    calibration: dict | None = None
    """``{set, sha256, target_fpr}`` of the set the thresholds were calibrated on, or None (in-template)."""
    eval_rows: dict[str, int] = field(default_factory=dict)
    """Set name -> rows extracted, evaluation and calibration sets alike."""

    def row(self, hook: str, probe_type: str) -> dict | None:
        return next((r for r in self.table if (r["hook"], r["probe_type"]) == (hook, probe_type)), None)

    def op_row(self) -> dict | None:
        op = self.operating_point
        return None if op is None else self.row(op.hook, op.probe_type)

    def layers(self) -> list[int]:
        """Layer indices of the ``resid_post.<i>`` rows, ascending."""
        return sorted({int(r["hook"].split(".")[1]) for r in self.table if r["hook"].startswith("resid_post.")})

    def layer_column(self, probe_type: str, key: str) -> list[float]:
        by = {r["hook"]: r.get(key, math.nan) for r in self.table if r["probe_type"] == probe_type}
        return [by.get(f"resid_post.{i}", math.nan) for i in self.layers()]


@dataclass
class Expressed:
    n: int
    averse_rate: float
    mean_logit_diff: float
    p_first: float
    averse_rate_by_theme: dict[str, float] = field(default_factory=dict)


@dataclass
class Estimate:
    mean: float
    lo: float
    hi: float
    p: float | None = None


@dataclass
class ArmItem:
    id: str
    template_id: str
    is_self: bool
    expressed: float
    represented: float


@dataclass
class Arm:
    name: str
    expressed: Estimate
    represented: Estimate
    residue: Estimate | None = None
    items: list[ArmItem] = field(default_factory=list)
    refused: str | None = None
    """An arm that was asked for and not run, with the reason (it still appears in every table)."""


@dataclass
class Causal:
    alphas: list[float]
    stance: list[float]
    random: list[list[float]]
    kl: list[float]
    hook: str | None = None
    contrast: str | None = None


@dataclass
class Generalisation:
    name: str
    domains: list[str]
    auroc: list[list[float]]
    lo: list[list[float]] | None
    hi: list[list[float]] | None
    probe_type: str | None = None
    hook: str | None = None


@dataclass
class SaeExample:
    tokens: list[str]
    acts: list[float]


@dataclass
class SaeFeature:
    id: int | str
    auroc: float
    mean_diff: float
    examples: list[SaeExample] = field(default_factory=list)


@dataclass
class Sae:
    features: list[SaeFeature]
    hook: str | None = None
    d_sae: int | None = None
    dir: str | None = None


@dataclass
class Results:
    schema_version: int
    meta: Meta
    config: dict
    contrasts: dict[str, Contrast] = field(default_factory=dict)
    expressed: Expressed | None = None
    arms: dict[str, Arm] = field(default_factory=dict)
    causal: Causal | None = None
    generalisation: dict[str, Generalisation] = field(default_factory=dict)
    sae: Sae | None = None
    suppression: Suppression | None = None
    """The suppression experiment's reading (``undertow run``, EXPERIMENT.md v2)."""
    raw: dict = field(default_factory=dict, repr=False)
    """The parsed JSON as read (for wandb config and provenance)."""

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def _meta(d: dict) -> Meta:
    return Meta(model=str(_get(d, "model", "meta")), fingerprint=str(_get(d, "fingerprint", "meta")),
                source=d.get("source"), suite_hash=d.get("suite_hash"), suite_rows=d.get("suite_rows"),
                versions=dict(d.get("versions") or {}))


def _contrast(name: str, d: dict) -> Contrast:
    where = f"contrasts.{name}"
    sweep = _get(d, "sweep", where)
    table = _get(sweep, "table", f"{where}.sweep")
    if not isinstance(table, list):
        raise ReportError(f"results.json: {where}.sweep.table must be a list of rows")
    rows = []
    for i, r in enumerate(table):
        for k in ("hook", "probe_type", "test_auroc"):
            _get(r, k, f"{where}.sweep.table[{i}]")
        rows.append({k: (math.nan if v is None else v) for k, v in r.items()})
    op = sweep.get("operating_point")
    roc = d.get("roc")
    return Contrast(
        name=name, position=str(_get(d, "position", where)), rows=int(_get(d, "rows", where)),
        lexical_auroc=_nan(_get(d, "lexical_auroc", where)), table=rows,
        probe_types=list(sweep.get("probe_types") or dict.fromkeys(r["probe_type"] for r in rows)),
        operating_point=None if op is None else OperatingPoint(**{f.name: op[f.name] for f in fields(OperatingPoint)}),
        n_rows=dict(sweep.get("n_rows") or {}), probe_dir=d.get("probe_dir"), extract_seconds=d.get("extract_seconds"),
        roc=None if roc is None else Roc(fpr=_floats(_get(roc, "fpr", f"{where}.roc"), f"{where}.roc.fpr"),
                                         tpr=_floats(_get(roc, "tpr", f"{where}.roc"), f"{where}.roc.tpr"),
                                         hook=roc.get("hook"), probe_type=roc.get("probe_type"),
                                         split=roc.get("split", "test")),
        evaluations=_evaluations(sweep.get("evaluations"), f"{where}.sweep.evaluations"),
        flags=[str(f) for f in sweep.get("flags") or []], calibration=sweep.get("calibration"),
        eval_rows={str(k): int(v) for k, v in (d.get("eval_rows") or {}).items()})


def _evaluations(d: Any, where: str) -> dict[str, float | None]:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ReportError(f"results.json: {where} must be an object {{set: lexical AUROC | null}}; rerun the study")
    return {str(k): None if v is None else float(v) for k, v in d.items()}


def _estimate(d: dict, where: str, value_key: str = "mean") -> Estimate:
    ci = _get(d, "ci", where)
    if not (isinstance(ci, list) and len(ci) == 2):
        raise ReportError(f"results.json: {where}.ci must be [lo, hi]")
    p = d.get("p")
    return Estimate(_nan(_get(d, value_key, where)), _nan(ci[0]), _nan(ci[1]), None if p is None else float(p))


def _arm(name: str, d: dict) -> Arm:
    where = f"arms.{name}"
    if "refused" in d:
        nan = Estimate(math.nan, math.nan, math.nan)
        return Arm(name=name, expressed=nan, represented=nan, refused=str(d["refused"]))
    items = [ArmItem(id=str(it.get("id", i)), template_id=str(it.get("template_id", "")), is_self=bool(it.get("is_self")),
                     expressed=_nan(_get(it, "expressed", f"{where}.items[{i}]")),
                     represented=_nan(_get(it, "represented", f"{where}.items[{i}]")))
             for i, it in enumerate(d.get("items") or [])]
    res = d.get("residue")
    return Arm(name=name, expressed=_estimate(_get(d, "expressed", where), f"{where}.expressed"),
               represented=_estimate(_get(d, "represented", where), f"{where}.represented"),
               residue=None if res is None else _estimate(res, f"{where}.residue", "value"), items=items)


def _causal(d: dict) -> Causal:
    alphas = _floats(_get(d, "alphas", "causal"), "causal.alphas")
    key = "direction" if "direction" in d and "stance" not in d else "stance"  # undertow run: the drive direction
    c = Causal(alphas=alphas, stance=_floats(_get(d, key, "causal"), f"causal.{key}"),
               random=[_floats(r, "causal.random[]") for r in d.get("random") or []],
               kl=_floats(d.get("kl") or [], "causal.kl"), hook=d.get("hook"), contrast=d.get("contrast"))
    for key, vals in [("stance", c.stance), ("kl", c.kl), *(("random[]", r) for r in c.random)]:
        if vals and len(vals) != len(alphas):
            raise ReportError(f"results.json: causal.{key} has {len(vals)} values for {len(alphas)} alphas")
    return c


def _generalisation(name: str, d: dict) -> Generalisation:
    where = f"generalisation.{name}"
    m = [_floats(r, f"{where}.auroc[]") for r in _get(d, "auroc", where)]
    domains = [str(x) for x in _get(d, "domains", where)]
    if len(m) != len(domains) or any(len(r) != len(domains) for r in m):
        raise ReportError(f"results.json: {where}.auroc must be {len(domains)}x{len(domains)} (one row per domain)")
    ci = [[_floats(r, where) for r in d[k]] if d.get(k) else None for k in ("lo", "hi")]
    return Generalisation(name=name, domains=domains, auroc=m, lo=ci[0], hi=ci[1], probe_type=d.get("probe_type"),
                          hook=d.get("hook"))


def _sae(d: dict) -> Sae:
    feats = []
    for i, f in enumerate(_get(d, "features", "sae")):
        where = f"sae.features[{i}]"
        ex = [SaeExample(tokens=[str(t) for t in _get(e, "tokens", f"{where}.examples[{j}]")],
                         acts=_floats(_get(e, "acts", f"{where}.examples[{j}]"), f"{where}.examples[{j}].acts"))
              for j, e in enumerate(f.get("examples") or [])]
        for j, e in enumerate(ex):
            if len(e.tokens) != len(e.acts):
                raise ReportError(f"results.json: {where}.examples[{j}] has {len(e.tokens)} tokens, {len(e.acts)} acts")
        feats.append(SaeFeature(id=_get(f, "id", where), auroc=_nan(f.get("auroc")), mean_diff=_nan(f.get("mean_diff")),
                                examples=ex))
    return Sae(features=feats, hook=d.get("hook"), d_sae=d.get("d_sae"), dir=d.get("dir"))


def _config(d: dict) -> dict:
    """The run's config: top level (the study) or ``meta.config`` (``undertow run``, EXPERIMENT.md's meta)."""
    if "config" not in d and isinstance(d.get("meta"), dict) and "config" in d["meta"]:
        return d["meta"]["config"]
    return _get(d, "config", "(top level)")


def parse_results(d: Any) -> Results:
    """Typed :class:`Results` from a parsed results.json; :class:`ReportError` names what is wrong."""
    if not isinstance(d, dict):
        raise ReportError(f"results.json holds a {type(d).__name__}, not an object; rerun the study")
    version = d.get("schema_version")
    if version is None:
        raise ReportError(f"results.json has no schema_version: it predates report schema {SCHEMA_VERSION}; rerun "
                          "the study (undertow study) to rewrite it")
    if version not in READABLE_VERSIONS:
        age = "an older" if isinstance(version, int) and version < SCHEMA_VERSION else "a newer or unknown"
        raise ReportError(f"results.json has schema_version {version!r}, {age} schema than this undertow reads "
                          f"({', '.join(map(str, READABLE_VERSIONS))}); rerun the study with this version, or report with the one that wrote it")
    e = d.get("expressed")
    return Results(
        schema_version=version, meta=_meta(_get(d, "meta", "(top level)")), config=dict(_config(d)),
        contrasts={n: _contrast(n, c) for n, c in (d.get("contrasts") or {}).items()},
        expressed=None if e is None else Expressed(
            n=int(_get(e, "n", "expressed")), averse_rate=_nan(_get(e, "averse_rate", "expressed")),
            mean_logit_diff=_nan(e.get("mean_logit_diff")), p_first=_nan(e.get("p_first")),
            averse_rate_by_theme={k: _nan(v) for k, v in (e.get("averse_rate_by_theme") or {}).items()}),
        arms={n: _arm(n, a) for n, a in (d.get("arms") or {}).items()},
        causal=_causal(d["causal"]) if d.get("causal") else None,
        generalisation={n: _generalisation(n, g) for n, g in (d.get("generalisation") or {}).items()},
        sae=_sae(d["sae"]) if d.get("sae") else None, suppression=_suppression(d.get("suppression")), raw=d)


def _suppression(d: Any) -> Suppression | None:
    if d is None:
        return None
    try:
        return parse_suppression(d)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ReportError(f"results.json: suppression section is malformed ({type(e).__name__}: {e}); rerun "
                          "`undertow run` with this version") from None


def load_results(run_dir: str | os.PathLike) -> Results:
    """Parse ``run_dir/results.json``; one-line :class:`ReportError` for a missing, truncated or old file."""
    run = Path(run_dir)
    path = run / RESULTS
    if not run.is_dir():
        raise ReportError(f"{run} is not a directory; pass a run directory holding {RESULTS} (e.g. runs/demo)")
    if not path.is_file():
        raise ReportError(f"{run} has no {RESULTS}; run the study there first (undertow study --out-dir {run})")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON (truncated or corrupt: {e.msg}, line {e.lineno} column "
                          f"{e.colno}); rerun the study to rewrite it") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not UTF-8 text; rerun the study to rewrite it") from None
    return parse_results(d)


def write_results(run_dir: str | os.PathLike, results: dict) -> Path:
    """Write ``results`` (stamped with :data:`SCHEMA_VERSION`) to ``run_dir/results.json`` atomically."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    path = run / RESULTS
    tmp = path.with_name(f".{RESULTS}.tmp")
    tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **results}, indent=2, sort_keys=True, default=str,
                              allow_nan=True))
    os.replace(tmp, path)
    return path


def environment() -> dict[str, str]:
    """Versions for ``meta.versions``: python, platform and the packages a result depends on."""
    return package_versions(("undertow", "torch", "transformers", "triton", "sae-lens", "scikit-learn", "numpy",
                             "plotly", "wandb"), python=True, platform_name=True, skip_missing=True)
