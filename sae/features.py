"""Feature analysis: per-row feature activations, per-contrast statistics, top examples, directions.

- :func:`feature_activations` ``(sae, acts_ND, features) -> [N, F]``: the function the suppression
  experiment calls per arm (load the SAE by path with ``io.load_sae``; ``class_means`` for self vs
  control).
- :func:`row_feature_acts`: one vector per store row: encode pooled rows, or max over each row's tokens
  for an ``all_tokens`` key.
- :func:`contrast_features`: per-feature AUROC and mean difference between the classes, with a
  template-cluster bootstrap (``probes.metrics.bootstrap_auroc``: whole templates resampled) for the CI
  and the standard error; p = two-sided normal test of (AUROC - 0.5) / bootstrap SE; Holm and BH over
  the features that fire at all. Not permutation p-values: their floor 1/(1 + n_perm) times 4,096
  features leaves Holm nothing to reject below ~80k permutations (measured: a planted AUROC-0.85 feature
  among 50 got p_holm 0.2 at 500 permutations). The bootstrap runs in feature chunks of 256 (its
  one-hot pair counts are [F, N, G]: 4,096 x 700 x 37 float32 would be 0.4 GB at once).
- :func:`top_examples`: the rows where a feature fires most, tokens re-rendered with the active ones marked.
- :func:`decoder_cosines`: decoder directions vs probe directions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor

from undertow.probes.metrics import (
    auroc,
    benjamini_hochberg,
    bootstrap_auroc,
    bootstrap_ci,
    cluster_bootstrap_counts,
    holm,
)

from .errors import SAEError


@torch.no_grad()
def feature_activations(sae, acts_ND: Tensor, features: Sequence[int] | None = None, batch: int = 4096) -> Tensor:
    """``[N, F]`` float32 activations of ``features`` (all when None) for each row of ``acts_ND``."""
    acts_ND = torch.as_tensor(acts_ND)
    if acts_ND.ndim != 2 or acts_ND.shape[1] != sae.cfg.d_in:
        raise SAEError(f"activations of shape {tuple(acts_ND.shape)} do not fit this SAE (d_in={sae.cfg.d_in}); "
                       "pass [N, d_in] states of the SAE's model and hook")
    if not torch.isfinite(acts_ND).all():
        raise SAEError("activations contain NaN/inf; drop those rows before reading SAE features")
    idx = None if features is None else torch.as_tensor(list(features), dtype=torch.long)
    if idx is not None and len(idx) and (idx.min() < 0 or idx.max() >= sae.cfg.d_sae):
        raise SAEError(f"feature indices must lie in [0, {sae.cfg.d_sae}); got {idx.min().item()}..{idx.max().item()}")
    sae.eval()
    out = []
    for lo in range(0, len(acts_ND), batch):
        f = sae.encode(acts_ND[lo:lo + batch].to(sae.device, sae.dtype)).float().cpu()
        out.append(f if idx is None else f[:, idx])
    return torch.cat(out) if out else torch.empty(0, sae.cfg.d_sae if idx is None else len(idx))


def class_means(acts_NF: Tensor, labels_N) -> dict[int, Tensor]:
    """Mean activation per feature for each label value (e.g. self vs control items of one arm)."""
    y = torch.as_tensor(np.asarray(labels_N))
    return {int(c): acts_NF[y == c].mean(0) for c in torch.unique(y)}


@torch.no_grad()
def row_feature_acts(sae, store, hook: str, features: Sequence[int] | None = None) -> Tensor:
    """``[n_rows, F]``: encoded row vectors, or for an ``all_tokens`` key the max over each row's tokens."""
    key = store.key(hook)
    if not store.manifest["keys"][key]["per_token"]:
        return feature_activations(sae, store[key][:].float(), features)
    off = store.token_offsets(key).tolist()
    out = []
    for r0 in range(0, len(off) - 1, 256):
        r1 = min(r0 + 256, len(off) - 1)
        f = feature_activations(sae, store[key][off[r0]:off[r1]].float(), features)
        seg = torch.repeat_interleave(torch.arange(r1 - r0), torch.tensor([off[i + 1] - off[i] for i in range(r0, r1)]))
        out.append(torch.zeros(r1 - r0, f.shape[1]).index_reduce_(0, seg, f, "amax", include_self=False))
    return torch.cat(out)


@dataclass
class FeatureContrast:
    """Per-feature separation of one contrast's classes."""

    table: list[dict]
    """One row per feature, sorted by |AUROC - 0.5| (strongest first): feature, auroc, auroc_lo/hi
    (cluster-bootstrap CI), mean_diff (pos - neg), frac_pos/frac_neg (rows where it fires), p, p_holm, p_bh."""
    n_rows: int
    n_features_tested: int
    """Features that fire on at least one row (the Holm/BH family); silent ones get p = NaN."""
    config: dict = field(default_factory=dict)

    def top(self, n: int = 10, direction: str = "pos") -> list[dict]:
        """Strongest ``n`` features firing more on label 1 (``pos``), label 0 (``neg``) or either (``any``)."""
        rows = [r for r in self.table if direction == "any" or (r["auroc"] > 0.5) == (direction == "pos")]
        return rows[:n]

    def to_dict(self) -> dict:
        return asdict(self)


def contrast_features(acts_NF: Tensor, labels_N, groups_N, *, features: Sequence[int] | None = None,
                      n_boot: int = 1000, seed: int = 0, chunk: int = 256) -> FeatureContrast:
    """AUROC / mean difference per feature column of ``acts_NF`` (label 1 vs 0), with template clusters."""
    acts = torch.as_tensor(acts_NF, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels_N), dtype=torch.long)
    _, groups = np.unique(np.asarray(groups_N).astype(str), return_inverse=True)
    g = torch.as_tensor(groups, dtype=torch.long)
    if acts.ndim != 2 or len(acts) != len(y) or len(y) != len(g):
        raise SAEError(f"acts {tuple(acts.shape)}, labels {len(y)} and groups {len(g)} must agree on the row count")
    if set(torch.unique(y).tolist()) != {0, 1}:
        raise SAEError(f"labels must contain both 0 and 1; got {sorted(torch.unique(y).tolist())}")
    if n_boot < 2:
        raise SAEError("n_boot must be >= 2 (the p-values come from the bootstrap standard error)")
    ids = list(range(acts.shape[1])) if features is None else list(features)
    scores_FN = acts.T.contiguous()
    au = auroc(scores_FN, y)
    live = (scores_FN != 0).any(1)
    counts, inv = cluster_bootstrap_counts(g, n_boot, torch.Generator().manual_seed(seed))
    boot_FB = torch.cat([bootstrap_auroc(scores_FN[i:i + chunk], y, inv, counts) for i in range(0, len(au), chunk)])
    lo, hi = bootstrap_ci(boot_FB)
    se = torch.from_numpy(np.nanstd(boot_FB.double().numpy(), axis=1))
    z = (au.double() - 0.5).abs() / se.clamp_min(1e-12)
    p = torch.where(live, torch.erfc(z / math.sqrt(2.0)), torch.nan)
    p_holm, p_bh = holm(p), benjamini_hochberg(p)
    pos, neg = y == 1, y == 0
    diff = scores_FN[:, pos].mean(1) - scores_FN[:, neg].mean(1)
    fpos, fneg = (scores_FN[:, pos] > 0).float().mean(1), (scores_FN[:, neg] > 0).float().mean(1)
    order = torch.argsort(torch.where(live, (au - 0.5).abs(), -1.0), descending=True).tolist()
    table = [{"feature": ids[f], "auroc": float(au[f]), "auroc_lo": float(lo[f]), "auroc_hi": float(hi[f]),
              "mean_diff": float(diff[f]), "frac_pos": float(fpos[f]), "frac_neg": float(fneg[f]),
              "p": float(p[f]), "p_holm": float(p_holm[f]), "p_bh": float(p_bh[f])} for f in order]
    return FeatureContrast(table, len(y), int(live.sum()), {"n_boot": n_boot, "seed": seed,
                                                            "n_templates": int(g.max()) + 1})


@dataclass
class Example:
    """One top-activating row of a feature."""

    row: int
    """Store row index."""
    max_act: float
    """The feature's largest activation in the row."""
    text: str
    """The row's tokens, active ones marked ``[[token|act]]``."""
    row_id: str | None = None


@torch.no_grad()
def top_examples(sae, store, hook: str, feature: int, rows: Sequence[Mapping], tokenizer, *, k: int = 5,
                 template: str = "auto", row_acts: Tensor | None = None, max_chars: int = 600) -> list[Example]:
    """The ``k`` rows of an ``all_tokens`` store where ``feature`` peaks, with its active tokens marked.

    ``rows`` are the dataset rows in store order (re-rendered to recover the token strings);
    ``row_acts`` (``row_feature_acts(..., [feature])``) skips recomputing the per-row maxima."""
    from undertow.activations.engine.render import render_rows

    key = store.key(hook)
    if not store.manifest["keys"][key]["per_token"]:
        raise SAEError(f"{key} holds one vector per row; top examples with marked tokens need an all_tokens store")
    if len(rows) != len(store):
        raise SAEError(f"got {len(rows)} dataset rows for a {len(store)}-row store; pass the rows it was extracted from")
    peak = (row_acts if row_acts is not None else row_feature_acts(sae, store, hook, [feature]))[:, 0]
    off = store.token_offsets(key).tolist()
    out = []
    for r in torch.argsort(peak, descending=True)[:k].tolist():
        rendered = render_rows(tokenizer, [rows[r]], template)[0]
        acts = feature_activations(sae, store[key][off[r]:off[r + 1]].float(), [feature])[:, 0]
        if len(rendered.ids) != len(acts):
            raise SAEError(f"row {r} renders to {len(rendered.ids)} tokens but the store holds {len(acts)}; "
                           "pass the same rows and template the store was extracted with")
        pieces = [tokenizer.decode([t]) for t in rendered.ids]
        text = "".join(f"[[{p}|{a:.1f}]]" if a > 0 else p for p, a in zip(pieces, acts.tolist(), strict=True))
        out.append(Example(r, float(peak[r]), text[-max_chars:], rows[r].get("id")))
    return out


def firing(acts_NF: Tensor) -> dict[str, Tensor]:
    """Per feature: fraction of rows where it fires, and mean activation (e.g. on model-written evals)."""
    return {"frac_active": (acts_NF > 0).float().mean(0), "mean": acts_NF.mean(0)}


@torch.no_grad()
def decoder_cosines(sae, features: Sequence[int], directions: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Cosine between each feature's decoder row and each named direction (e.g. ``Probe.direction``)."""
    dec_FD = torch.nn.functional.normalize(sae.W_dec[torch.as_tensor(list(features))].float().cpu(), dim=-1)
    out = {}
    for name, d in directions.items():
        d = torch.as_tensor(d).float().flatten()
        if d.shape[0] != dec_FD.shape[1]:
            raise SAEError(f"direction {name!r} has {d.shape[0]} dims, the SAE decodes to {dec_FD.shape[1]}")
        out[name] = dec_FD @ torch.nn.functional.normalize(d, dim=0)
    return out
