"""One feature-analysis run of an SAE on one contrast: what ``undertow sae features`` prints.

``analyse_contrast(sae, handle, rows, ...)`` takes the contrast's rows (the caller in ``experiments``
builds them: ``get_contrast(name)``), and optionally model-written-evals rows and extra probe
directions. It extracts the SAE's hook at ``last_prompt_token`` and ``all_tokens`` through the engine
(a temporary store), then:

1. per-feature statistics on each row's max activation over its tokens (``contrast_features``);
2. top-activating examples of the strongest label-1 features, active tokens marked;
3. those features' firing on the model-written evals (fraction of questions, vs both contrast classes);
4. their decoder directions vs probe directions fitted on the train rows (diff-of-means, logistic) and
   any the caller passes (e.g. a shipped probe on the same hook);
5. SAE-feature probes vs raw probes at ``last_prompt_token`` on the same rows and splits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from undertow.activations import ExtractConfig, extract
from undertow.activations.engine.config import RowOptions
from undertow.probes import fit_probe

from .features import (
    FeatureContrast,
    contrast_features,
    decoder_cosines,
    feature_activations,
    firing,
    row_feature_acts,
    top_examples,
)
from .probes import ProbeComparison, compare_probes


@dataclass
class ContrastAnalysis:
    """Everything one ``analyse_contrast`` call found."""

    contrast: FeatureContrast
    examples: dict[int, list[dict]]
    """Feature -> its top examples (``Example`` as dicts)."""
    mwe: dict[int, dict] = field(default_factory=dict)
    """Feature -> fraction of MWE questions / label-1 rows / label-0 rows where it fires."""
    cosines: dict[int, dict[str, float]] = field(default_factory=dict)
    """Feature -> probe name -> cosine of its decoder row with that probe's direction."""
    probes: ProbeComparison | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["contrast"] = self.contrast.to_dict()
        return out


def _store(handle, rows, hook: str, out_dir: str, positions: Sequence[str],
           options: RowOptions | None = None):
    cfg = ExtractConfig(**(options or RowOptions()).to_dict(), model=handle.name, backend=handle.backend,
                        hooks=[hook], positions=list(positions), dtype="float32", out_dir=out_dir, batch_size=16,
                        token_budget=4096)
    return extract(handle, rows, cfg, overwrite=True)


def analyse_contrast(sae, handle, rows, *, hook: str | None = None, mwe_rows=None, n_top: int = 10,
                     n_examples: int = 3, n_boot: int = 1000, directions: Mapping[str, Tensor] | None = None,
                     template: str = "auto", sweep_overrides: dict | None = None,
                     options: RowOptions | None = None) -> ContrastAnalysis:
    """Analyse ``sae`` on contrast ``rows`` (a Dataset or list with label, template_id, split); ``options``:
    how the rows are taken (``truncate``)."""
    hook = hook or sae.cfg.metadata.get("undertow_hook")
    rows = rows.to_list() if hasattr(rows, "to_list") else list(rows)
    with tempfile.TemporaryDirectory(prefix="undertow-sae-") as tmp:
        store = _store(handle, rows, hook, f"{tmp}/contrast", ["last_prompt_token", "all_tokens"], options)
        feats = row_feature_acts(sae, store, f"{hook}@all_tokens")
        labels = np.asarray(store.rows["label"])
        contrast = contrast_features(feats, labels, store.rows["template_id"], n_boot=n_boot)
        top = [r["feature"] for r in contrast.top(n_top, "pos")]
        examples = {f: [asdict(e) for e in top_examples(sae, store, f"{hook}@all_tokens", f, rows, handle.tokenizer,
                                                        k=n_examples, template=template,
                                                        row_acts=feats[:, [f]])] for f in top}
        raw = store[f"{hook}@last_prompt_token"][:].float()
        mwe = {}
        if mwe_rows is not None:
            mwe_store = _store(handle, mwe_rows, hook, f"{tmp}/mwe", ["all_tokens"], options)
            on_mwe = firing(row_feature_acts(sae, mwe_store, hook, top))["frac_active"]
            on_pos, on_neg = (firing(feats[labels == c][:, top])["frac_active"] for c in (1, 0))
            mwe = {f: {"mwe": float(on_mwe[i]), "label1": float(on_pos[i]), "label0": float(on_neg[i])}
                   for i, f in enumerate(top)}
    train = np.asarray(store.rows["split"]) == "train"
    dirs = {t: fit_probe(raw[train], labels[train], t).direction for t in ("diff_means", "logistic")}
    dirs.update(directions or {})
    cos = decoder_cosines(sae, top, dirs) if top else {}
    cosines = {f: {name: float(c[i]) for name, c in cos.items()} for i, f in enumerate(top)}
    probes = compare_probes(raw, feature_activations(sae, raw), store.rows, **(sweep_overrides or {}))
    return ContrastAnalysis(contrast, examples, mwe, cosines, probes)


def summary(result: ContrastAnalysis, n: int = 10) -> str:
    """A plain-text report: top features with stats, MWE firing, cosines, one example each; probe table."""
    lines = ["feature  auroc [95% CI]        mean_diff  p_holm   fires(1/0)  mwe    cos(dm/logit)"]
    for r in result.contrast.top(n, "pos"):
        f = r["feature"]
        m = result.mwe.get(f, {})
        c = result.cosines.get(f, {})
        lines.append(f"{f:>7}  {r['auroc']:.3f} [{r['auroc_lo']:.3f}, {r['auroc_hi']:.3f}]  {r['mean_diff']:9.3f}  "
                     f"{r['p_holm']:.1e}  {r['frac_pos']:.2f}/{r['frac_neg']:.2f}   "
                     f"{m.get('mwe', float('nan')):.2f}   {c.get('diff_means', float('nan')):+.2f}/"
                     f"{c.get('logistic', float('nan')):+.2f}")
        if result.examples.get(f):
            lines.append("         e.g. " + result.examples[f][0]["text"][-240:].replace("\n", " "))
    if result.probes is not None:
        lines += ["", result.probes.format()]
    return "\n".join(lines)


def cessation_directions(probe, hook: str) -> dict[str, torch.Tensor]:
    """A shipped probe's direction, when it reads the SAE's hook (else nothing to compare)."""
    return {f"probe:{probe.hook}": probe.direction} if probe is not None and probe.hook == hook else {}
