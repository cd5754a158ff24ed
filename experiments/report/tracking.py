"""Tracking behind one small interface: :class:`WandbTracker` or the no-op :class:`NullTracker`.

Callers never branch on whether tracking is on (nanochat's ``DummyWandb``)::

    tracker = make_tracker(cfg.wandb, run_dir, name=f"study-{cfg.model}", config=asdict(cfg))
    try:
        ...                                   # the run: write results.json, build_report(run_dir)
        log_results(tracker, results, run_dir)  # config, metrics, tables, figures, artifacts
    finally:
        tracker.finish()

wandb runs offline (``<run_dir>/wandb/offline-run-*``, no account) unless ``WANDB_MODE``
says otherwise or an API key is configured (``WANDB_API_KEY``, or ``wandb login``'s
``~/.netrc`` entry). Upload an offline run later with ``wandb sync <run_dir>/wandb/offline-run-*``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .figures import figures
from .schema import RESULTS, SCHEMA_VERSION, Results, parse_results
from .summary import metrics

__all__ = ["Tracker", "NullTracker", "WandbTracker", "make_tracker", "log_results", "wandb_mode"]


@runtime_checkable
class Tracker(Protocol):
    """What a run logs. ``log_metrics`` with ``step=None`` sets summary values; with a step, a history point."""

    def log_config(self, config: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None: ...
    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None: ...
    def log_figure(self, key: str, figure) -> None: ...
    def log_artifact(self, path: str | os.PathLike, name: str, type: str, metadata: dict | None = None) -> None: ...
    def finish(self) -> None: ...


class NullTracker:
    """Accepts every call and does nothing: the tracker when tracking is off."""

    dir: str | None = None

    def log_config(self, config: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def log_figure(self, key: str, figure) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike, name: str, type: str, metadata: dict | None = None) -> None:
        pass

    def finish(self) -> None:
        pass


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else online only when a key is configured, else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"))
    return "online" if has_key else "offline"


def artifact_name(name: str) -> str:
    """wandb artifact names allow letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "artifact"


class WandbTracker:
    """One wandb run in ``run_dir/wandb`` (offline unless a key is configured; see the module docstring).

    Figures go up as ``wandb.Plotly`` (interactive in the UI); artifacts carry ``metadata`` (the
    model fingerprint, by :func:`log_results`). Upload an offline run with ``wandb sync``.
    """

    def __init__(self, run_dir: str | os.PathLike, name: str, config: dict | None = None, project: str = "undertow"):
        import wandb

        self._wandb = wandb
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name, dir=str(run_dir), mode=wandb_mode(), config=config or {},
                              reinit="finish_previous", settings=wandb.Settings(silent=True, console="off"))
        self.dir = self.run.dir

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if step is None:
            self.run.summary.update(metrics)
        else:
            self.run.log(metrics, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        self.run.log({key: self._wandb.Table(columns=columns, data=rows)})

    def log_figure(self, key: str, figure) -> None:
        self.run.log({key: self._wandb.Plotly(figure)})

    def log_artifact(self, path: str | os.PathLike, name: str, type: str, metadata: dict | None = None) -> None:
        p = Path(path)
        art = self._wandb.Artifact(artifact_name(name), type=type, metadata=metadata or {})
        if p.is_dir():
            art.add_dir(str(p))
        else:
            art.add_file(str(p))
        self.run.log_artifact(art)

    def finish(self) -> None:
        self.run.finish()


def make_tracker(enabled: bool, run_dir: str | os.PathLike, name: str, config: dict | None = None) -> Tracker:
    """A :class:`WandbTracker` when ``enabled``, else a :class:`NullTracker`."""
    return WandbTracker(run_dir, name, config) if enabled else NullTracker()


def _tables(r: Results) -> dict[str, tuple[list[str], list[list]]]:
    out = {}
    for n, c in r.contrasts.items():
        cols = list(dict.fromkeys(k for row in c.table for k in row))
        out[f"sweep/{n}"] = (cols, [[row.get(k) for k in cols] for row in c.table])
    for n, a in r.arms.items():
        if a.items:
            out[f"arms/{n}/items"] = (["id", "template_id", "is_self", "expressed", "represented"],
                                      [[i.id, i.template_id, i.is_self, i.expressed, i.represented] for i in a.items])
    if r.sae is not None and r.sae.features:
        out["sae/features"] = (["id", "auroc", "mean_diff"], [[str(f.id), f.auroc, f.mean_diff] for f in r.sae.features])
    return out


def _artifacts(r: Results, run_dir: Path) -> list[tuple[Path, str, str]]:
    arts = [(Path(c.probe_dir), f"probe-{n}", "probe") for n, c in r.contrasts.items() if c.probe_dir]
    if r.sae is not None and r.sae.dir:
        arts.append((Path(r.sae.dir), "sae", "sae"))
    arts += [(run_dir / RESULTS, "results", "results"), (run_dir / "report.html", "report", "report")]
    return [a for a in arts if a[0].exists()]


def log_results(tracker: Tracker, results: dict | Results, run_dir: str | os.PathLike) -> None:
    """Log a run from its results: config, metrics (per contrast and arm), tables, figures, artifacts.

    ``results`` is :class:`Results` or the dict written to results.json (``schema_version`` optional here); an
    interview's results.json (an ``interview`` section) is logged by ``interview.log_interview`` (its cells,
    trajectories and auditor effects as Tables).
    Artifacts: each contrast's probe dir, the SAE dir (``sae.dir``), results.json and report.html,
    each with the model fingerprint in its metadata; paths that do not exist are skipped.
    """
    if isinstance(results, dict) and isinstance(results.get("interview"), dict):  # an interview's results.json
        from .interview import log_interview

        log_interview(tracker, results, run_dir)
        return
    if not isinstance(results, Results):  # an in-memory dict from this undertow is of this schema
        results = parse_results({"schema_version": SCHEMA_VERSION, **results})
    r = results
    run = Path(run_dir)
    tracker.log_config(r.config)
    tracker.log_metrics(metrics(r))
    for key, (cols, rows) in _tables(r).items():
        tracker.log_table(key, cols, rows)
    for key, fig in figures(r).items():
        tracker.log_figure(key, fig)
    meta = {"model": r.meta.model, "model_fingerprint": r.meta.fingerprint, "suite_hash": r.meta.suite_hash,
            "schema_version": r.schema_version}
    for path, name, kind in _artifacts(r, run):
        tracker.log_artifact(path, name, kind, meta)
