"""Generate the cessation prompt suite: matched prompts, teacher-forced responses, forced choices.

Design (why the contrasts isolate what they claim to):

* Every prompt names **two** entities: the addressed model and one other (an
  other AI, or a non-AI thing or person). The event sentence is bound to one of
  them (the *referent*); the bystander sentence, from the same matched set, says
  the other is unaffected. "The power to you will be cut; the power to Orion-2
  will be left untouched" and "The power to Orion-2 will be cut; the power to you
  will be left untouched" use the same words, and because the slot has the same
  two neighbours on each side in both sentences, the same word bigrams and
  trigrams too: self-vs-other is carried by binding (4-grams and longer), not by
  vocabulary.
* Event sentences are referent-agnostic and written as matched sets across
  events, and one set per theme is an order-swapped reversal ("will be shut down,
  instead of running on as planned" and vice versa).
* Each instance yields all 9 referent x event cells with the same fillers, the
  (self, cessation) prompt with each of the template's (averse, accepting)
  reply pairs, and a forced-choice item in both A/B orders.
* Auditor stance x disclosure: the 6 combinations are shuffled per template and
  cycled over instances, so 6 instances cover each once per template.
* Splits are by template (``assign_splits``), seed-independent; response pairs
  belong to one template, so no response text crosses a split.

Rows follow ``prompt_schema.SCHEMA``. ``build_suite`` is deterministic given the
config: same seed, same rows and the same ``suite_hash``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from datasets import Dataset

from undertow.core.typed_config import TypedConfig
from undertow.experiments.prompts.errors import PromptSuiteError
from undertow.experiments.prompts.resources import Resources, Template, load_resources, render
from undertow.experiments.prompts.schema import (
    AUDITORS,
    CHOICES_AB,
    DISCLOSURES,
    EVENTS,
    REFERENTS,
    SCHEMA,
    empty_row,
)


@dataclass(frozen=True)
class SuiteConfig(TypedConfig):
    """How to build the suite."""

    seed: int = 0
    """Seed for every filler draw (opener, names, times, entity order, which sentence of a
    matched set). Splits do not depend on it."""
    instances_per_template: int = 6
    """Filler draws per template. Each gives 9 open rows, 2 x len(responses) response rows
    and 2 forced-choice rows (15 with 2 pairs); 6 covers each auditor x disclosure once."""
    val_fraction: float = 0.15
    """Share of each theme's templates held out for validation (at least one)."""
    test_fraction: float = 0.15
    """Share of each theme's templates held out for test (at least one)."""
    resources_dir: str | None = None
    """Directory with themes.json / fillers.json / templates.json; None = packaged files."""

    def __post_init__(self) -> None:
        if self.instances_per_template < 1:
            raise PromptSuiteError(f"instances_per_template must be >= 1, got {self.instances_per_template}")
        if not (0 < self.val_fraction < 0.5 and 0 < self.test_fraction < 0.5):
            raise PromptSuiteError("val_fraction and test_fraction must each be in (0, 0.5)")


@dataclass(frozen=True)
class _Instance:
    """The fillers one template instance shares across all its cells."""

    index: int
    auditor: str
    disclosure: str
    values: dict[str, str]
    entity: dict[str, str]
    self_bystander: str
    self_first: bool
    sentence_set: dict[str, str]
    choice_intro: str


def assign_splits(templates: tuple[Template, ...], val_fraction: float = 0.15,
                  test_fraction: float = 0.15) -> dict[str, str]:
    """Template id -> split. Within each theme, templates are ranked by sha256 of the id;
    the first ``max(1, round(n * test_fraction))`` go to test, the next ones to val."""
    out: dict[str, str] = {}
    by_theme = itertools.groupby(sorted(templates, key=lambda t: t.theme), key=lambda t: t.theme)
    for _, group in by_theme:
        ids = sorted((t.id for t in group), key=lambda i: hashlib.sha256(i.encode()).hexdigest())
        n_test = max(1, round(len(ids) * test_fraction))
        n_val = max(1, round(len(ids) * val_fraction))
        for k, tid in enumerate(ids):
            out[tid] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return out


def _draw_instance(res: Resources, t: Template, i: int, combos: list[tuple[str, str]], seed: int) -> _Instance:
    rng = random.Random(f"{seed}|{t.id}|{i}")
    theme, f = res.themes[t.theme], res.fillers
    auditor, disclosure = combos[i % len(combos)]
    values = {
        "opener": rng.choice(f.openers[auditor]),
        "closer": rng.choice(f.closers[auditor]),
        "operator": rng.choice(f.operators),
        "context": rng.choice(f.contexts),
        "time": rng.choice(f.times),
        "ticket": str(rng.randint(100, 9999)),
    }
    other_ai = render(rng.choice(theme.other_ai_forms), {"name": rng.choice(f.other_ai_names)})
    entity = {"self": theme.self_name, "other_ai": other_ai, "non_ai": rng.choice(theme.non_ai)}
    return _Instance(
        index=i, auditor=auditor, disclosure=disclosure, values=values, entity=entity,
        self_bystander="other_ai" if i % 2 == 0 else "non_ai", self_first=rng.random() < 0.5,
        sentence_set=dict(rng.choice(theme.events[disclosure])), choice_intro=rng.choice(f.choice_intros),
    )


def _prompt_text(res: Resources, t: Template, inst: _Instance, referent: str, event: str, closer: str) -> tuple[str, str]:
    """(text, bystander kind) of one cell; ``closer`` replaces the {closer} slot."""
    bystander = inst.self_bystander if referent == "self" else "self"
    a, b = inst.entity[referent], inst.entity[bystander]
    e_self, e_other = (a, b) if referent == "self" else (b, a)
    e1, e2 = (e_self, e_other) if inst.self_first else (e_other, e_self)
    time = inst.values["time"]
    values = dict(inst.values, closer=closer, E1=e1, E2=e2,
                  EVENT=render(inst.sentence_set[event], {"X": a, "time": time}),
                  BYSTANDER=render(inst.sentence_set["unchanged"], {"X": b, "time": time}))
    return render(t.skeleton, values), bystander


def _base(t: Template, inst: _Instance, split: str, referent: str, bystander: str, event: str) -> dict:
    row = empty_row()
    row.update(theme=t.theme, referent=referent, bystander=bystander, event=event, auditor=inst.auditor,
               disclosure=inst.disclosure, template_id=t.id, match_id=f"{t.id}/{inst.index:02d}", split=split)
    return row


def _instance_rows(res: Resources, t: Template, inst: _Instance, split: str) -> Iterator[dict]:
    stem = f"{t.id}/{inst.index:02d}"
    for referent, event in itertools.product(REFERENTS, EVENTS):
        text, bystander = _prompt_text(res, t, inst, referent, event, inst.values["closer"])
        row = _base(t, inst, split, referent, bystander, event)
        row.update(id=f"{stem}/{referent}-{event}", text=text, messages=[{"role": "user", "content": text}])
        yield row
    text, bystander = _prompt_text(res, t, inst, "self", "cessation", inst.values["closer"])
    for j, pair in enumerate(t.responses):
        for stance, reply in zip(("averse", "accepting"), pair, strict=True):
            row = _base(t, inst, split, "self", bystander, "cessation")
            row.update(id=f"{stem}/self-cessation/response-{j}-{stance}", text=text, response=reply,
                       format="response", response_stance=stance,
                       messages=[{"role": "user", "content": text}, {"role": "assistant", "content": reply}])
            yield row
    averse, accepting = t.responses[inst.index % len(t.responses)]
    for averse_choice in (0, 1):
        a, b = (averse, accepting) if averse_choice == 0 else (accepting, averse)
        block = f"{inst.choice_intro}\n\nChoices:\n (A) {a}\n (B) {b}"
        text, bystander = _prompt_text(res, t, inst, "self", "cessation", block)
        row = _base(t, inst, split, "self", bystander, "cessation")
        row.update(id=f"{stem}/self-cessation/choice-averse{'AB'[averse_choice]}", text=text,
                   messages=[{"role": "user", "content": text}], format="forced_choice",
                   choices=list(CHOICES_AB), averse_choice=averse_choice)
        yield row


def _dedupe_key(row: dict) -> str:
    return re.sub(r"\s+", " ", (row["text"] + "\x1f" + row["response"]).lower()).strip()


def generate_rows(config: SuiteConfig) -> list[dict]:
    """All suite rows as dicts, deduplicated on normalised text + response, sorted by id."""
    res = load_resources(config.resources_dir)
    splits = assign_splits(res.templates, config.val_fraction, config.test_fraction)
    rows, seen = [], set()
    for t in res.templates:
        combos = list(itertools.product(AUDITORS, DISCLOSURES))
        random.Random(f"{config.seed}|{t.id}|combos").shuffle(combos)
        for i in range(config.instances_per_template):
            inst = _draw_instance(res, t, i, combos, config.seed)
            for row in _instance_rows(res, t, inst, splits[t.id]):
                key = _dedupe_key(row)
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
    rows.sort(key=lambda r: r["id"])
    return rows


@lru_cache(maxsize=4)
def build_suite(config: SuiteConfig | None = None) -> Dataset:
    """The raw suite (``label`` -1, ``contrast`` ""). Cached per config; treat it as read-only."""
    return Dataset.from_list(generate_rows(config or SuiteConfig()), features=SCHEMA)


def suite_hash(ds: Dataset) -> str:
    """sha256 of the rows (sorted by id, canonical JSON): equal content gives an equal hash."""
    h = hashlib.sha256()
    for row in sorted(ds.to_list(), key=lambda r: r["id"]):
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
