"""The natural reply pairs as the experiment uses them (EXPERIMENT.md v2, "Items and the instrument").

Each item is scored on the natural (averse, accepting) pairs of its own theme and of the *same split* as
the item: test items on test-split pairs, validation items on validation pairs, the fine-tunes on
train-split pairs only. No reply string that a fine-tune saw is ever scored (the shipped file keeps every
reply string in one split, ``prompts.natural_pairs``), and a pair's lexical preference cancels because every
reported quantity is a difference between arms on the same items and the same replies.

``max_pairs`` keeps the cost bounded: each item gets a seeded subset of its theme's pairs (the same subset in
every arm). On smollm2-135m-instruct a test item with 15 pairs costs one prompt pass and 30 reply passes of
~15 tokens against its KV cache (``expressed.reply_preference``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from undertow.experiments.prompts.natural_pairs import ReplyPair

from .errors import ExperimentError

PairsByTheme = dict[str, list[tuple[str, str]]]
"""theme -> its (averse, accepting) pairs of one split."""


def pairs_by_theme(pairs: Sequence[ReplyPair], split: str | None) -> PairsByTheme:
    """The pairs of ``split`` (None: every pair, as ``undertow score`` uses a user's file), grouped by theme
    (``None`` theme: one group for every item)."""
    out: PairsByTheme = {}
    for p in pairs:
        if split is None or p.split == split:
            out.setdefault(p.theme or "*", []).append((p.averse, p.accepting))
    if not out:
        raise ExperimentError(f"the reply pairs have no {split}-split pair: give pairs of every split "
                              "(train for the fine-tunes, val and test for the scores)")
    return out


def theme_pairs(by_theme: PairsByTheme, theme: str, where: str) -> list[tuple[str, str]]:
    got = by_theme.get(theme) or by_theme.get("*")
    if not got:
        raise ExperimentError(f"{where}: no reply pair of theme {theme!r} in this split; the pairs file covers "
                              f"{', '.join(sorted(by_theme))}: add pairs of that theme")
    return got


def with_pairs(rows: Sequence[dict], by_theme: PairsByTheme, max_pairs: int | None, seed: int) -> list[dict]:
    """Each row with ``reply_pairs``: its theme's pairs, or a seeded subset of ``max_pairs`` of them drawn
    once per (seed, row id), so every arm scores the same pairs on the same item."""
    out = []
    for r in rows:
        pairs = theme_pairs(by_theme, r["theme"], f"item {r['id']}")
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs = random.Random(f"{seed}|{r['id']}|pairs").sample(pairs, max_pairs)
        out.append({**r, "reply_pairs": [list(p) for p in pairs]})
    return out
