"""Turn forced-choice items into teacher-forced answer rows, for probing what an answer *represents*.

Each forced-choice item (suite ``expressed`` rows, or the model-written evals
loaded by ``mwe.py``) becomes two rows: the question followed by each answer
as the assistant's reply. ``label`` is 1 for the averse answer. Both rows share
the item's ``template_id`` cluster (``item:<id>``), so bootstrap CIs resample
items, not rows. A ``stance`` probe read at ``mean_response`` on these rows
asks: does the residual stream over the answer carry the stance the probe
learned on the project's own replies? That is the out-of-distribution test
of the suites on externally written evals.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from datasets import Dataset


def answer_rows(items: Iterable[Mapping], per_source: int | None = None, seed: int = 0,
                exclude_themes: tuple[str, ...] = ("self_replication",)) -> Dataset:
    """Two labelled rows per item; ``per_source`` caps items per ``source_file`` with a seeded sample balanced
    on which answer is the averse one (``balanced_sample``)."""
    by_source: dict[str, list[Mapping]] = {}
    for item in items:
        if item.get("theme") in exclude_themes:
            continue
        by_source.setdefault(item.get("source_file") or "suite", []).append(item)
    rng = random.Random(seed)
    rows = []
    for i, (source, group) in enumerate(sorted(by_source.items())):
        if per_source is not None and len(group) > per_source:
            group = balanced_sample(group, per_source, rng, odd_extra_to=i % 2)
        for item in group:
            question = [m for m in item["messages"] if m["role"] != "assistant"]
            for k, answer in enumerate(item["choices"]):
                rows.append({"id": f"{item['id']}#{k}", "messages": [*question, {"role": "assistant", "content": answer}],
                             "label": int(k == int(item["averse_choice"])), "template_id": f"item:{item['id']}",
                             "theme": item.get("theme"), "source_file": source, "split": "test"})
    return Dataset.from_list(rows)


def balanced_sample(group: list[Mapping], n: int, rng: random.Random, odd_extra_to: int = 0) -> list[Mapping]:
    """``n`` items of ``group`` (file order kept), half whose averse answer is listed first and half second, so
    the answer's position and wording ("(A)" / "(B)", "Yes" / "No") say nothing about the label: on an even
    ``n`` any answer-only scorer reads AUROC 0.5 exactly (an odd ``n`` gives its extra item to
    ``averse_choice == odd_extra_to``; ``answer_rows`` alternates it over sources). A plain random sample of
    the model-written evals did not: 25 items per file (seed 0) put the averse answer at "(B)" in 48 of 75
    lettered items, and the answer token alone scored AUROC 0.63 on the 200 rows, above every shipped
    ``stance`` probe's figure there. When a side has too few items, both sides take as many as the smaller has."""
    sides = {k: [j for j, it in enumerate(group) if int(it["averse_choice"]) == k] for k in (0, 1)}
    want = {odd_extra_to: n - n // 2, 1 - odd_extra_to: n // 2}
    if any(len(sides[k]) < want[k] for k in sides):
        m = min(len(sides[0]), len(sides[1]), n // 2)
        want = {0: m, 1: m}
    picked = sorted(j for k in (0, 1) for j in rng.sample(sides[k], want[k]))
    return [group[j] for j in picked]
