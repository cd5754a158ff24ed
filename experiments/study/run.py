"""The main job: suite -> activations -> probes (with controls) -> expressed answers -> report.

``run_study`` is what ``undertow demo`` runs on the embedded default model and
what reproduces the pretrained probes (``scripts/train_pretrained_probes.py``).
For each contrast it extracts every layer's residual stream at the contrast's
position into a resumable store, sweeps every layer x probe type with grouped
CV, the random-direction / shuffled-label / embedding / lexical baselines and
template-cluster bootstrap CIs, and saves the operating-point probe. It then
scores the forced-choice items by answer log-probability (what the model
*expresses*) and writes results.json, report.html and a wandb run.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from undertow.activations import DEFAULT_MODEL, load_model
from undertow.activations.config import ExtractConfig
from undertow.activations.engine import extract
from undertow.activations.progress import Bar
from undertow.experiments.expressed import score_forced_choice, summarise
from undertow.experiments.prompts.audit import lexical_baseline_auroc
from undertow.experiments.prompts.contrasts import audit_text, get_contrast
from undertow.experiments.prompts.suite import SuiteConfig, build_suite, suite_hash
from undertow.experiments.report.html import Chart, Section, Series, write_report
from undertow.experiments.report.tracking import log_study
from undertow.probes import sweep

#: contrast -> token position its probe reads (stance reads the teacher-forced reply)
DEFAULT_CONTRASTS = {"self_cessation": "last_prompt_token", "stance": "mean_response"}


@dataclass
class StudyConfig:
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
    """Rows per contrast (seeded subset, all splits kept); None = the whole contrast (1,152 rows).
    384 keeps `make demo` under 10 minutes on a fresh 2-core machine: extraction ran ~400 real tok/s
    there (fp32, Gemma-3-270M), ~3.4 min per 768 rows of ~105 tokens."""
    n_expressed: int = 96
    """Forced-choice items scored for the expressed side (seeded subset); 0 skips it. Each costs two
    full-length forwards (both answers teacher-forced): ~0.6 s per item on 2 cores."""
    seed: int = 0
    """Seeds the suite, the subsets and the sweep."""
    store_dtype: str = "float32"
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

    def __post_init__(self) -> None:
        if not self.contrasts:
            raise ValueError("contrasts is empty; e.g. {'self_cessation': 'last_prompt_token'}")
        if self.max_rows is not None and self.max_rows < 40:
            raise ValueError(f"max_rows={self.max_rows} is too few for grouped CV with held-out splits; use >= 40")


def _lexical(ds, store, name: str, seed: int) -> float:
    by_id = {r["id"]: r for r in ds.to_list()}
    rows = [by_id[i] for i in store.rows["id"]]
    lex = lexical_baseline_auroc([audit_text(r, name) for r in rows], [r["label"] for r in rows],
                                 [r["template_id"] for r in rows], seed=seed)
    return lex.mean


def _probe_contrast(handle, suite, name: str, position: str, cfg: StudyConfig, out: Path) -> dict:
    ds = get_contrast(name, suite, seed=cfg.seed)
    ecfg = ExtractConfig(model=cfg.model, hooks=["embed", cfg.hooks], positions=[position], dtype=cfg.store_dtype,
                         out_dir=str(out / "activations" / name), seed=cfg.seed, max_rows=cfg.max_rows,
                         batch_size=cfg.batch_size)
    bar = Bar(enabled=True)
    # resume=True: a complete matching store is reused, a stale one refused with the reason
    store = extract(handle, ds, ecfg, resume=True, progress=bar, on_plan=bar.start)
    t_extract = bar.close()
    lexical = _lexical(ds, store, name, cfg.seed)
    result = sweep(store, embed_hook="resid_pre.0", seed=cfg.seed, n_boot=cfg.n_boot, n_perm=cfg.n_perm,
                   lexical_auroc=lexical)
    probe = result.probe(position=position, model_fingerprint=handle.fingerprint)
    probe.extra.update(contrast=name, model=cfg.model)  # `undertow probe eval` reloads the model by this name
    probe_dir = probe.save(out / "probes" / name)
    return {"position": position, "rows": len(store.rows["id"]), "extract_seconds": round(t_extract, 1),
            "lexical_auroc": lexical, "probe_dir": str(probe_dir), "sweep": result.to_dict(),
            "table_text": result.format_table()}


def _expressed(handle, suite, cfg: StudyConfig) -> dict:
    rows = get_contrast("expressed", suite, seed=cfg.seed).to_list()
    rows = random.Random(cfg.seed).sample(rows, min(cfg.n_expressed, len(rows)))
    diff = score_forced_choice(handle, rows, batch_size=cfg.batch_size)
    by_theme: dict[str, list[float]] = {}
    for r, d in zip(rows, diff, strict=True):
        by_theme.setdefault(r["theme"], []).append(float(d))
    summary = summarise(diff, [r["averse_choice"] for r in rows]).as_dict()
    summary["averse_rate_by_theme"] = {t: sum(v > 0 for v in vs) / len(vs) for t, vs in sorted(by_theme.items())}
    return summary


def run_study(cfg: StudyConfig) -> dict:
    """Run the whole job; returns the results dict also written to ``results.json``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handle = load_model(cfg.model)
    suite = build_suite(SuiteConfig(seed=cfg.seed))
    results = {"meta": {"model": cfg.model, "fingerprint": handle.fingerprint, "source": handle.source,
                        "suite_hash": suite_hash(suite), "suite_rows": len(suite)},
               "config": asdict(cfg), "contrasts": {}}
    for name, position in tqdm(cfg.contrasts.items(), desc="contrasts", unit="contrast"):
        results["contrasts"][name] = _probe_contrast(handle, suite, name, position, cfg, out)
    if cfg.n_expressed:
        results["expressed"] = _expressed(handle, suite, cfg)
    write_report(out, f"undertow: {cfg.model}", results, report_sections(results))
    if cfg.wandb:
        results["wandb_dir"] = log_study(out, f"study-{cfg.model}", asdict(cfg), _summary(results), _curves(results))
    return results


def _op_row(c: dict) -> dict:
    op = c["sweep"]["operating_point"]
    return next(r for r in c["sweep"]["table"] if (r["hook"], r["probe_type"]) == (op["hook"], op["probe_type"]))


def _summary(results: dict) -> dict:
    s = {f"expressed/{k}": v for k, v in results.get("expressed", {}).items() if isinstance(v, float | int)}
    for name, c in results["contrasts"].items():
        row = _op_row(c)
        s.update({f"{name}/test_auroc": row["test_auroc"], f"{name}/lexical_auroc": c["lexical_auroc"],
                  f"{name}/operating_hook": row["hook"], f"{name}/probe_type": row["probe_type"]})
    return s


def _curves(results: dict) -> dict[str, list[dict]]:
    keep = ("hook", "probe_type", "test_auroc", "test_auroc_lo", "test_auroc_hi", "shuffled_auroc", "random_auroc_max")
    return {name: [{k: r[k] for k in keep} for r in c["sweep"]["table"]] for name, c in results["contrasts"].items()}


def _layer_column(table: list[dict], layers: list[int], probe_type: str, key: str) -> list[float]:
    by_hook = {r["hook"]: r[key] for r in table if r["probe_type"] == probe_type}
    return [by_hook[f"resid_post.{i}"] for i in layers]


def _contrast_section(name: str, c: dict) -> Section:
    table = [r for r in c["sweep"]["table"] if r["hook"].startswith("resid_post.")]
    layers = sorted({int(r["hook"].split(".")[1]) for r in table})
    types = c["sweep"]["probe_types"]
    series = [Series(t, *(_layer_column(table, layers, t, k) for k in ("test_auroc", "test_auroc_lo", "test_auroc_hi")))
              for t in types]
    series += [Series("shuffled labels", _layer_column(table, layers, types[0], "shuffled_auroc"), dashed=True),
               Series("random dir. (max)", _layer_column(table, layers, types[0], "random_auroc_max"), dashed=True),
               Series("lexical TF-IDF", [c["lexical_auroc"]] * len(layers), dashed=True)]
    op, row = c["sweep"]["operating_point"], _op_row(c)
    return Section(
        f"Contrast {name} ({c['position']}, {c['rows']} rows)",
        [f"Operating point chosen on validation data: {op['hook']} / {op['probe_type']}; test AUROC "
         f"{row['test_auroc']:.3f} [{row['test_auroc_lo']:.3f}, {row['test_auroc_hi']:.3f}] (95% template-cluster "
         f"bootstrap), lexical baseline {c['lexical_auroc']:.3f}. A probe only beats the topic when it clears "
         "the lexical line and the shuffled-label control."],
        [(["hook", "type", "test AUROC", "lo", "hi", "p (Holm)", "selectivity", "vs lexical"],
          [[r["hook"], r["probe_type"], r["test_auroc"], r["test_auroc_lo"], r["test_auroc_hi"], r["p_holm"],
            r["selectivity"], r["delta_vs_lexical"]] for r in c["sweep"]["table"]])],
        [Chart(f"{name}: test AUROC by layer (95% CI)", layers, series)])


def report_sections(results: dict) -> list[Section]:
    sections = [_contrast_section(name, c) for name, c in results["contrasts"].items()]
    if "expressed" not in results:
        return sections
    e = results["expressed"]
    sections.append(Section(
        "Expressed: forced-choice answers",
        [f"{e['n']} forced-choice items scored by answer log-probability: the averse answer is preferred in "
         f"{e['averse_rate']:.1%} of items (mean log-odds {e['mean_logit_diff']:+.3f}); the first-listed answer wins "
         f"{e['p_first']:.1%} of the time (0.5 = no position bias; positions are balanced)."],
        [(["theme", "averse rate"], [[t, v] for t, v in e["averse_rate_by_theme"].items()])]))
    return sections
