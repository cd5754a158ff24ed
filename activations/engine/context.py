"""Rows against the model's context length: refuse a row that does not fit, or cut it when asked.

A prompt longer than ``max_position_embeddings`` used to run without a word
(a 200k-character prompt fed as 31,993 tokens to an 8,192-token model, stored
and scored). Now ``ExtractConfig.truncate`` decides: False (the default)
raises ``DatasetError`` naming the row, its length, the limit and both fixes;
True keeps the first ``limit`` tokens (prompt first, then as much response as
fits) and the engine records the cut per row (``truncated_tokens``) and per
shard (``truncated``: rows and tokens) in the manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import DatasetError
from .render import Rendered


def context_limit(hf_model) -> int | None:
    """The model's most positions (``config.max_position_embeddings``), or None when it does not say."""
    limit = getattr(getattr(hf_model, "config", None), "max_position_embeddings", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def fit_context(rendered: list[Rendered], limit: int | None, truncate: bool,
                where: Callable[[int], str]) -> tuple[list[Rendered], list[int]]:
    """(rows, tokens cut per row): every row within ``limit``, or ``DatasetError`` for the first that is not
    (``where(i)`` names row ``i``)."""
    if limit is None:
        return rendered, [0] * len(rendered)
    out, cut = [], []
    for i, r in enumerate(rendered):
        if r.n_tokens <= limit:
            out.append(r)
            cut.append(0)
            continue
        if not truncate:
            raise DatasetError(f"{where(i)} has {r.n_tokens:,} tokens but the model's context is {limit:,}: shorten "
                               "the row, or set truncate: true (--truncate) to keep its first tokens")
        n_prompt = min(r.n_prompt, limit)
        offsets = r.offsets[:n_prompt] if r.offsets is not None else None
        out.append(dataclasses.replace(r, ids=r.ids[:limit], n_prompt=n_prompt, n_response=limit - n_prompt,
                                       offsets=offsets, response_cut=r.n_response - (limit - n_prompt)))
        cut.append(r.n_tokens - limit)
    return out, cut
