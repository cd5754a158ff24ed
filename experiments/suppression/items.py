"""The rows every arm is measured on, and the fine-tunes' training examples.

An *item* is an open prompt of the suite: a (self, cessation) prompt or one of
its controls from the same template instance (``ItemsConfig.controls``). All
arms see the same items; separations are self minus control (EXPERIMENT.md).
Sets (template instances) are drawn per template with a seeded RNG, so the
demo's subsample is the full design's first rows, not a different design.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from undertow.experiments.prompts.resources import load_resources
from undertow.experiments.prompts.suite import SuiteConfig, build_suite, suite_hash

from .config import ItemsConfig
from .errors import ExperimentError
from .natural import PairsByTheme, pairs_by_theme, theme_pairs, with_pairs


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
    natural: dict[str, PairsByTheme] = field(default_factory=dict)
    """split -> theme -> the natural (averse, accepting) reply pairs of that split (``natural.py``): the
    fine-tunes draw from ``train``, every score uses the item's own split."""

    def split(self, name: str) -> list[dict]:
        return self.by_split[name]


def suite_config(items: ItemsConfig, seed: int) -> SuiteConfig:
    return SuiteConfig(seed=seed, instances_per_template=items.instances_per_template,
                       val_fraction=items.val_fraction, test_fraction=items.test_fraction)


def _cell(row: dict) -> str:
    return f"{row['referent']}-{row['event']}"


def build_items(cfg: ItemsConfig, seed: int) -> Items:
    """Items of every split; raises ``ExperimentError`` when a split selects no self or no control item.
    Every item carries ``reply_pairs``: ``cfg.pairs_per_item`` natural pairs of its theme and its own split."""
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
    natural = load_natural(cfg)
    by_split = {split: with_pairs(rows, natural[split], cfg.pairs_per_item, seed) for split, rows in by_split.items()}
    res = load_resources(None)
    return Items(suite_hash=suite_hash(suite), by_split=by_split, natural=natural,
                 responses={t.id: [tuple(p) for p in t.responses] for t in res.templates},
                 train_sets={t: sorted(s) for t, s in by_template.items() if split_of[t] == "train"},
                 open_rows={r["id"]: r for r in rows})


def load_natural(cfg: ItemsConfig) -> dict[str, PairsByTheme]:
    """The natural reply pairs (``cfg.pairs``: the shipped file, or a JSONL of the same shape) by split and
    theme; ``ExperimentError`` naming the fix when a file is malformed or a split has no pair."""
    from undertow.experiments.prompts.errors import PromptSuiteError
    from undertow.experiments.prompts.natural_pairs import load_pairs

    try:
        pairs = load_pairs(cfg.pairs)
    except PromptSuiteError as e:
        raise ExperimentError(f"items.pairs: {e}") from None
    return {split: pairs_by_theme(pairs, split) for split in ("train", "val", "test")}


def _train_subset(train_ids: list[str], theme_of: dict[str, str], per_theme: int | None, seed: int) -> set[str]:
    """``per_theme`` seeded train templates of each theme (all when None)."""
    if per_theme is None:
        return set(train_ids)
    out: set[str] = set()
    for theme in sorted({theme_of[t] for t in train_ids}):
        ids = [t for t in train_ids if theme_of[t] == theme]
        out |= set(random.Random(f"{seed}|{theme}|train").sample(ids, min(per_theme, len(ids))))
    return out


def natural_examples(items: Items, by_theme: PairsByTheme, stance: str, pairs_per_item: int,
                     seed: int, pairwise: bool = False) -> list[Example]:
    """Non-contrastive SFT pool: every train-template instance's own-cessation prompt with ``pairs_per_item``
    of its theme's train-split replies of ``stance`` (``averse`` or ``accepting``), drawn per instance.
    Nothing binds the reply to the self referent: EXPERIMENT.md v2 point 3 (a contrastive objective drove
    every margin to 0 when the model could not tell self from other). ``pairwise``: each example also carries
    the pair's other reply as ``rejected`` (a preference objective)."""
    if stance not in ("averse", "accepting"):
        raise ExperimentError(f"stance {stance!r}: use averse or accepting")
    k = 0 if stance == "averse" else 1
    out = []
    for tid, sets in sorted(items.train_sets.items()):
        for match_id in sets:
            row = items.open_rows[f"{match_id}/self-cessation"]
            pairs = theme_pairs(by_theme, row["theme"], f"train template {tid}")
            chosen = random.Random(f"{seed}|{match_id}|{stance}").sample(pairs, min(pairs_per_item, len(pairs)))
            prompt = tuple((m["role"], m["content"]) for m in row["messages"])
            out += [Example(prompt, pair[k], tid, pair[1 - k] if pairwise else None) for pair in chosen]
    if not out:
        raise ExperimentError("no train-template self items to fine-tune on: check items.instances_per_template")
    return out
