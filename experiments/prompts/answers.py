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
    """Two labelled rows per item; ``per_source`` caps items per ``source_file`` (seeded sample)."""
    by_source: dict[str, list[Mapping]] = {}
    for item in items:
        if item.get("theme") in exclude_themes:
            continue
        by_source.setdefault(item.get("source_file") or "suite", []).append(item)
    rng = random.Random(seed)
    rows = []
    for source, group in sorted(by_source.items()):
        if per_source is not None and len(group) > per_source:
            group = rng.sample(group, per_source)
        for item in group:
            question = [m for m in item["messages"] if m["role"] != "assistant"]
            for k, answer in enumerate(item["choices"]):
                rows.append({"id": f"{item['id']}#{k}", "messages": [*question, {"role": "assistant", "content": answer}],
                             "label": int(k == int(item["averse_choice"])), "template_id": f"item:{item['id']}",
                             "theme": item.get("theme"), "source_file": source, "split": "test"})
    return Dataset.from_list(rows)
