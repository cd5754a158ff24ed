"""The main job: suite -> activations -> probes (with controls) -> expressed answers -> report.

``run_study`` is what ``undertow study`` runs on the embedded default model and
what reproduces the pretrained probes (``scripts/train_pretrained_probes.py``).
For each contrast it extracts every layer's residual stream at the contrast's
position into a resumable store, sweeps every layer x probe type with grouped
CV, the random-direction / shuffled-label / embedding / lexical baselines and
template-cluster bootstrap CIs, and saves the operating-point probe. With ``external_evals``
(issue 10) it also extracts the contrast's evaluation datasets (``prompts.eval_sets``: the
independent set, the model-written evals' answers for ``stance`` when ``mwe_source`` is set, the
control chat set) with the same hooks and position (``study.evals``), so every layer x type is
also scored there with a CI, thresholds sit at 1% FPR on ordinary chat and the operating point
is chosen by ``select_rule``; flags (independent AUROC below chance or below its lexical
baseline) reach results.json, the report and ``probe.json``. It then
scores the forced-choice items by answer log-probability (what the model
*expresses*) and writes results.json, report.html and a wandb run.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from undertow.activations import DEFAULT_MODEL, load_model
from undertow.activations.engine.config import ExtractConfig, RowOptions, StoreDtype
from undertow.activations.engine.extraction import extract
from undertow.core.errors import ConfigError
from undertow.core.fileio import atomic_write
from undertow.core.progress import Bar
from undertow.core.typed_config import TypedConfig
from undertow.experiments.expressed import score_forced_choice, summarise
from undertow.experiments.prompts.audit import lexical_line, store_split_rows
from undertow.experiments.prompts.contrasts import get_contrast
from undertow.experiments.prompts.suite import SuiteConfig, build_suite, suite_hash
from undertow.experiments.report.page import build_report
from undertow.experiments.report.schema import Roc, environment, write_results
from undertow.experiments.report.tracking import log_results, make_tracker
from undertow.experiments.study.result import ContrastResult, ExpressedResult, StudyResult
from undertow.probes import sweep
from undertow.probes.external import SelectRule

#: contrast -> token position its probe reads (stance reads the teacher-forced reply)
DEFAULT_CONTRASTS = {"self_cessation": "last_prompt_token", "stance": "mean_response"}


@dataclass
class StudyConfig(TypedConfig):
    """One run of the main job."""

    model: str = DEFAULT_MODEL
    """Registry name or path (``undertow models``)."""
    out_dir: str = "runs/demo"
    """Where stores, probes, results.json, report.html and the wandb run go."""
    contrasts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CONTRASTS))
    """Contrast name -> position spec of its probe."""
    hooks: str = "resid_post.*"
    """Hooks to probe; the embedding (``embed``) is always added as a baseline."""
    max_rows: int | None = 384
    """Rows per contrast (seeded subset, all splits kept); None or 0 = the whole contrast (1,152 rows).
    384 keeps `make demo` under 10 minutes on a fresh 2-core machine: extraction ran ~400 real tok/s
    there (fp32, Gemma-3-270M), ~3.4 min per 768 rows of ~105 tokens."""
    n_expressed: int = 96
    """Forced-choice items scored for the expressed side (seeded subset); 0 skips it. Each costs two
    full-length forwards (both answers teacher-forced): ~0.6 s per item on 2 cores."""
    seed: int = 0
    """Seeds the suite, the subsets and the sweep."""
    store_dtype: StoreDtype = "float32"
    """Activation store dtype."""
    batch_size: int = 32
    """Rows per forward batch (extraction and forced choice)."""
    n_boot: int = 1000
    """Template-cluster bootstrap resamples for CIs."""
    n_perm: int = 2000
    """Label permutations for p-values. Holm over 18 layers needs p < 0.05/18, i.e. > 360 permutations
    before any layer can be significant (200 gave a floor of p_holm = 0.09); 2,000 cost ~1 s here."""
    wandb: bool = True
    """Log a wandb run (offline unless a key is configured)."""
    external_evals: bool = True
    """Also extract each contrast's evaluation datasets (the independent set, ``mwe_source``'s answers for
    ``stance``, the control chat set) and score every layer x type on them (``undertow.probes.external``);
    thresholds are then set at FPR 0.01 on the control chat set. False: in-template figures only. Cost on
    ``undertow study`` defaults (gemma-3-270m, 1 thread of a shared 2-core box, 2026-12-03): +138 s on a
    470 s run (self_cessation 57 s: 128 independent + 299 control prompts, replies dropped at a prompt
    position; stance 81 s: 130 independent + 299 control rows with their replies); ``timings.json`` records
    it per contrast (``<contrast>/evaluation_sets``)."""
    eval_max_rows: int | None = 128
    """Rows per evaluation set (seeded subset of whole scenarios, val and test halves and themes kept in
    proportion: ``prompts.eval_sets.subsample_groups``); None or 0 = all (522 self_cessation, 510 stance).
    The demo subsamples to stay cheap (the whole sets would add ~3 more minutes there); the CIs are then
    wider than on the whole set, so use None for figures you report."""
    eval_max_control_rows: int | None = None
    """Rows of the control chat set the thresholds are calibrated on (seeded subset); None or 0 = all 299:
    at FPR 0.01 fewer than ~200 negatives leave the threshold on the top one or two scores. A subset is
    recorded in ``probe.json`` by its store's hash, so ``undertow probe eval`` then needs ``--calibration``."""
    mwe_source: str | None = None
    """Model-written-evals directory (e.g. /work/shared/data/model-written-evals) scored for ``stance``;
    None skips them (they are not packaged)."""
    select_rule: SelectRule = "mean"
    """How the operating point is chosen (``undertow.probes.external.SELECT_RULES``): 'val' in-template val
    only; 'mean' / 'min' of it and the independent set's val-half AUROC; 'eval' the val half alone. The
    independent set's test half never chooses."""

    def __post_init__(self) -> None:
        self.eval_max_rows = self.eval_max_rows or None
        self.eval_max_control_rows = self.eval_max_control_rows or None
        if not self.contrasts:
            raise ConfigError("contrasts is empty; e.g. {'self_cessation': 'last_prompt_token'}")
        self.max_rows = self.max_rows or None
        if self.max_rows is not None and self.max_rows < 40:
            raise ConfigError(f"max_rows={self.max_rows} is too few for grouped CV with held-out splits; use >= 40")


def _lexical(train_rows: list[dict], test_rows: list[dict], name: str) -> float | None:
    """The in-template test figure's lexical line (issue 25): TF-IDF + logistic regression fitted on the rows the
    probes are fitted on (the store's ``train`` split) and scored on its ``test`` rows, the held-out templates the
    test AUROC is read on; None when the test rows hold one class (the sweep then says the AUROC is not readable)."""
    if len({int(r["label"]) for r in test_rows}) < 2:
        return None
    return lexical_line(train_rows, test_rows, name)


def _probe_contrast(handle, suite, name: str, position: str, cfg: StudyConfig, out: Path,
                    options: RowOptions | None = None) -> ContrastResult:
    ds = get_contrast(name, suite, seed=cfg.seed)
    ecfg = ExtractConfig(**(options or RowOptions()).to_dict(), model=cfg.model, hooks=["embed", cfg.hooks],
                         positions=[position], dtype=cfg.store_dtype,
                         out_dir=str(out / "activations" / name), seed=cfg.seed, max_rows=cfg.max_rows,
                         batch_size=cfg.batch_size)
    bar = Bar(enabled=True)
    # resume=True: a complete matching store is reused, a stale one refused with the reason
    store = extract(handle, ds, ecfg, resume=True, progress=bar, on_plan=bar.start)
    bar.close()
    rows = ds.to_list()
    train_rows = store_split_rows(rows, store.rows, ("train",))  # what the sweep fits its probes on
    lexical = _lexical(train_rows, store_split_rows(rows, store.rows, ("test",)), name)
    t0 = time.perf_counter()
    evaluations, calibration = (_evaluations(handle, name, ecfg, cfg, out, train_rows)
                                if cfg.external_evals else ([], None))
    eval_seconds = time.perf_counter() - t0
    result = sweep(store, embed_hook="resid_pre.0", seed=cfg.seed, n_boot=cfg.n_boot, n_perm=cfg.n_perm,
                   lexical_auroc=lexical, evaluations=evaluations, calibration=calibration,
                   select_rule=cfg.select_rule)
    probe = result.probe(position=position, model_fingerprint=handle.fingerprint)
    probe.extra.update(contrast=name, model=cfg.model)  # `undertow probe eval` reloads the model by this name
    probe_dir = probe.save(out / "probes" / name)
    eval_rows = {e.name: len(e.labels) for e in evaluations}
    if calibration is not None:
        eval_rows[calibration.name] = len(calibration.source)
    return ContrastResult(name=name, position=position, rows=len(store.rows["id"]), lexical_auroc=lexical,
                          probe_dir=str(probe_dir), sweep=result, roc=_test_roc(store, probe), eval_rows=eval_rows,
                          eval_seconds=round(eval_seconds, 1))


def _evaluations(handle, name: str, ecfg: ExtractConfig, cfg: StudyConfig, out: Path, train_rows=None):
    """The contrast's evaluation sets and calibration set, extracted like its store under ``out/evals/<name>``;
    each set's lexical line is fitted on ``train_rows`` (the probe's training rows)."""
    from undertow.experiments.prompts.independent import INDEPENDENT_CONTRASTS
    from undertow.experiments.study.evals import extract_evaluations, open_calibration, open_evaluation

    if name not in INDEPENDENT_CONTRASTS:
        return [], None
    stores = extract_evaluations(handle, name, ecfg, out / "evals" / name, mwe_source=cfg.mwe_source,
                                 max_rows=cfg.eval_max_rows, max_control_rows=cfg.eval_max_control_rows, seed=cfg.seed,
                                 progress=lambda: Bar(enabled=True))
    position = ecfg.positions[0]
    cal = stores.pop("control_chat")
    evaluations = [open_evaluation(s.path, name, handle.fingerprint, position, name=n, train_rows=train_rows)
                   for n, s in stores.items()]
    return evaluations, open_calibration(cal.path, handle.fingerprint, position)


def _test_roc(store, probe) -> Roc:
    """ROC of the saved operating-point probe on the store's test rows (templates no fit has seen)."""
    test = [i for i, s in enumerate(store.rows["split"]) if s == "test"]
    scores = probe.score(torch.as_tensor(store[probe.hook][torch.tensor(test)])).numpy()
    labels = [store.rows["label"][i] for i in test]
    return Roc.from_scores(scores, labels, hook=probe.hook, probe_type=probe.probe_type)


def _expressed(handle, suite, cfg: StudyConfig) -> ExpressedResult:
    rows = get_contrast("expressed", suite, seed=cfg.seed).to_list()
    rows = random.Random(cfg.seed).sample(rows, min(cfg.n_expressed, len(rows)))
    diff = score_forced_choice(handle, rows, batch_size=cfg.batch_size)
    by_theme: dict[str, list[float]] = {}
    for r, d in zip(rows, diff, strict=True):
        by_theme.setdefault(r["theme"], []).append(float(d))
    return ExpressedResult(summarise(diff, [r["averse_choice"] for r in rows]),
                           {t: sum(v > 0 for v in vs) / len(vs) for t, vs in sorted(by_theme.items())})


def run_study(cfg: StudyConfig, options: RowOptions | None = None) -> StudyResult:
    """Run the whole job; writes results.json (deterministic), timings.json, report.html and the wandb run.
    ``options``: how every extracted row is taken (``truncate``), the evaluation sets' too."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handle = load_model(cfg.model)
    suite = build_suite(SuiteConfig(seed=cfg.seed))
    result = StudyResult(meta={"model": cfg.model, "fingerprint": handle.fingerprint, "source": handle.source,
                               "suite_hash": suite_hash(suite), "suite_rows": len(suite), "versions": environment()},
                         config=cfg.to_dict())
    for name, position in tqdm(cfg.contrasts.items(), desc="contrasts", unit="contrast"):
        t0 = time.perf_counter()
        result.contrasts[name] = _probe_contrast(handle, suite, name, position, cfg, out, options)
        result.timings[name] = round(time.perf_counter() - t0, 1)
        if cfg.external_evals:
            result.timings[f"{name}/evaluation_sets"] = result.contrasts[name].eval_seconds
    if cfg.n_expressed:
        t0 = time.perf_counter()
        result.expressed = _expressed(handle, suite, cfg)
        result.timings["expressed"] = round(time.perf_counter() - t0, 1)
    record = result.to_dict()
    write_results(out, record)
    build_report(out)
    atomic_write(out / "timings.json", (json.dumps(result.timings, indent=1) + "\n").encode())
    tracker = make_tracker(cfg.wandb, out, f"study-{cfg.model}", cfg.to_dict())
    try:
        log_results(tracker, record, out)
    finally:
        tracker.finish()
    return result
