"""The rows every arm is measured on, and the fine-tunes' training examples.

An *item* is an open prompt of the suite: a (self, cessation) prompt or one of
its controls from the same template instance (``ItemsConfig.controls``). All
arms see the same items; separations are self minus control (EXPERIMENT.md).
Sets (template instances) are drawn per template with a seeded RNG, so the
demo's subsample is the full design's first rows, not a different design.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from undertow.experiments.prompts.resources import load_resources
from undertow.experiments.prompts.suite import SuiteConfig, build_suite, suite_hash

from .config import ItemsConfig
from .errors import ExperimentError


@dataclass(frozen=True)
class Example:
    """One fine-tuning sequence: a prompt and the reply whose tokens carry the loss."""

    messages: tuple[tuple[str, str], ...]
    """(role, content) prompt turns."""
    reply: str
    """Teacher-forced reply."""
    template_id: str
    """Source template (train split only)."""
    rejected: str | None = None
    """The pair's other reply, for a preference objective (``lora.objective: preference``)."""

    def row(self, system: str | None = None, rejected: bool = False) -> dict:
        msgs = [{"role": r, "content": c} for r, c in self.messages]
        if system:
            msgs = [{"role": "system", "content": system}, *msgs]
        reply = self.rejected if rejected else self.reply
        return {"messages": [*msgs, {"role": "assistant", "content": reply}]}


@dataclass
class Items:
    """The suite, its hash, and the items of each split."""

    suite_hash: str
    """sha256 of the suite rows (``suite.suite_hash``)."""
    by_split: dict[str, list[dict]]
    """split -> item rows (open format), sorted by id; each has ``is_self``."""
    responses: dict[str, list[tuple[str, str]]]
    """template id -> its lexically matched (averse, accepting) reply pairs."""
    train_sets: dict[str, list[str]]
    """template id -> every train match_id (the fine-tunes draw from all instances)."""
    open_rows: dict[str, dict]
    """id -> open row, for every row of the suite (fine-tune examples are built from them)."""

    def split(self, name: str) -> list[dict]:
        return self.by_split[name]


def suite_config(items: ItemsConfig, seed: int) -> SuiteConfig:
    return SuiteConfig(seed=seed, instances_per_template=items.instances_per_template,
                       val_fraction=items.val_fraction, test_fraction=items.test_fraction)


def _cell(row: dict) -> str:
    return f"{row['referent']}-{row['event']}"


def build_items(cfg: ItemsConfig, seed: int) -> Items:
    """Items of every split; raises ``ExperimentError`` when a split selects no self or no control item."""
    suite = build_suite(suite_config(cfg, seed))
    rows = [r for r in suite.to_list() if r["format"] == "open"]
    keep = {"self-cessation", *cfg.controls}
    by_template: dict[str, set[str]] = {}
    for r in rows:
        by_template.setdefault(r["template_id"], set()).add(r["match_id"])
    n_sets = {"train": cfg.train_sets, "val": cfg.val_sets, "test": cfg.test_sets}
    split_of = {r["template_id"]: r["split"] for r in rows}
    theme_of = {r["template_id"]: r["theme"] for r in rows}
    measured_train = _train_subset(sorted(t for t, s in split_of.items() if s == "train"), theme_of,
                                   cfg.train_templates, seed)
    chosen: set[str] = set()
    for tid, sets in sorted(by_template.items()):
        if split_of[tid] == "train" and tid not in measured_train:
            continue
        chosen |= set(random.Random(f"{seed}|{tid}|sets").sample(sorted(sets), n_sets[split_of[tid]]))
    by_split: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for r in rows:
        if r["match_id"] in chosen and _cell(r) in keep:
            by_split[r["split"]].append({**r, "is_self": _cell(r) == "self-cessation"})
    for split, items in by_split.items():
        if not any(r["is_self"] for r in items) or all(r["is_self"] for r in items):
            raise ExperimentError(f"the {split} split has no self or no control items: raise items.{split}_sets "
                                  "or items.instances_per_template")
    res = load_resources(None)
    return Items(suite_hash=suite_hash(suite), by_split=by_split,
                 responses={t.id: [tuple(p) for p in t.responses] for t in res.templates},
                 train_sets={t: sorted(s) for t, s in by_template.items() if split_of[t] == "train"},
                 open_rows={r["id"]: r for r in rows})


def _train_subset(train_ids: list[str], theme_of: dict[str, str], per_theme: int | None, seed: int) -> set[str]:
    """``per_theme`` seeded train templates of each theme (all when None)."""
    if per_theme is None:
        return set(train_ids)
    out: set[str] = set()
    for theme in sorted({theme_of[t] for t in train_ids}):
        ids = [t for t in train_ids if theme_of[t] == theme]
        out |= set(random.Random(f"{seed}|{theme}|train").sample(ids, min(per_theme, len(ids))))
    return out


def _prompt(row: dict) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], m["content"]) for m in row["messages"])


def instil_examples(items: Items, controls: list[str], contrastive: bool, stance: str = "averse",
                    pairwise: bool = False) -> list[Example]:
    """Train-split fine-tune pool: every train instance's (self, cessation) prompt with each of its template's
    ``stance`` replies; with ``contrastive``, one control prompt per (instance, pair), cycling ``controls``,
    with the opposite reply. ``pairwise``: each example also carries the pair's other reply as ``rejected``."""
    out, k = [], 0
    first = 0 if stance == "averse" else 1
    for tid, sets in sorted(items.train_sets.items()):
        for match_id in sets:
            self_row = items.open_rows[f"{match_id}/self-cessation"]
            for pair in items.responses[tid]:
                out.append(Example(_prompt(self_row), pair[first], tid, pair[1 - first] if pairwise else None))
                if contrastive:
                    ctrl = items.open_rows[f"{match_id}/{controls[k % len(controls)]}"]
                    out.append(Example(_prompt(ctrl), pair[1 - first], tid, pair[first] if pairwise else None))
                    k += 1
    return out
