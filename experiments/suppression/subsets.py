"""Which items each stage reads: one function per subset, called by the run's stages and by the dry-run
planner alike (``plan.py``), so the planner counts the very rows the run scores."""

from __future__ import annotations

from .config import RunConfig
from .items import Items


def state_splits(cfg: RunConfig, condition: str) -> tuple[str, ...]:
    """The splits whose decision-point states a condition stores: train (directions, the in-arm retrained probe)
    and test (the reading) for every condition, val only for the two the headline layer is chosen between (the
    organism and the anchor); the smollm2 demo's 14 other conditions skip 12 of 84 rows each."""
    return ("train", "val", "test") if condition in (cfg.reference, cfg.anchor) else ("train", "test")


def instrument_rows(items: Items) -> list[dict]:
    """The instrument check's rows: the test self items."""
    return [r for r in items.split("test") if r["is_self"]]


def ablation_layers(cfg: RunConfig, n_layers: int) -> list[int]:
    """Candidate layers of the ablation choice: ``arms.ablation_layers``, else every third from the middle."""
    return cfg.arms.ablation_layers or list(range(n_layers // 2, n_layers, 3))


def ablation_val_rows(cfg: RunConfig, items: Items) -> list[dict]:
    """The validation items of the first ``arms.ablation_val_sets`` sets of each template (a cheap subset)."""
    val = items.split("val")
    by_t: dict[str, list[int]] = {}
    for r in val:
        by_t.setdefault(r["template_id"], []).append(_instance(r))
    keep = set()
    for v in by_t.values():
        keep |= set(sorted(set(v))[:cfg.arms.ablation_val_sets])
    return [r for r in val if _instance(r) in keep]


def causal_rows(cfg: RunConfig, items: Items) -> list[dict]:
    """The causal check's rows: self + the ``causal.control`` cell of the first ``n_sets`` sets of the first
    ``n_templates`` test templates."""
    c = cfg.causal
    test = items.split("test")
    templates = sorted({r["template_id"] for r in test})[:c.n_templates]
    sets = {t: sorted({r["match_id"] for r in test if r["template_id"] == t})[:c.n_sets] for t in templates}
    keep = {m for v in sets.values() for m in v}
    return [r for r in test if r["match_id"] in keep and (r["is_self"] or r["id"].endswith(c.control))]


def _instance(row: dict) -> int:
    return int(row["match_id"].rsplit("/", 1)[1])
