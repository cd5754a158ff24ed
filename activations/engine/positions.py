"""Which token positions of a row to keep, as token spans for ``gather_pool``.

Position specs (strings, in ``ExtractConfig.positions``):

| spec                | per row stored      | what                                                      |
| ------------------- | ------------------- | --------------------------------------------------------- |
| ``last_prompt_token`` | ``[D]``           | last prompt token, generation prompt included             |
| ``mean_prompt``     | ``[D]``             | mean over the prompt tokens (BOS included when present)    |
| ``mean_response``   | ``[D]``             | mean over the teacher-forced response tokens               |
| ``last_k:N``        | ``[N, D]``          | the last N prompt tokens, oldest first                     |
| ``token:<marker>``  | ``[D]``             | last token overlapping the last occurrence of the text     |
|                     |                     | ``<marker>`` in the rendered prompt (e.g. ``token:<|im_start|>``, |
|                     |                     | ``token:Assistant:``)                                      |
| ``all_tokens``      | ``[n_tokens, D]``   | every real token (prompt + response), flattened per row    |

Out-of-range positions are errors, never silent masking: ``last_k:50`` on a
10-token prompt, ``mean_response`` on a row without a response, or a marker
missing from a prompt raise ``PositionError`` naming the row and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import PositionError
from .render import Rendered

KINDS = ("last_prompt_token", "mean_prompt", "mean_response", "last_k", "token", "all_tokens")


@dataclass(frozen=True)
class Position:
    """One parsed position spec."""

    spec: str
    """The canonical spec string; also the position part of store keys (``hook@spec``)."""
    kind: str
    """One of ``KINDS``."""
    k: int = 1
    """Slots per row (``last_k:N``); 1 otherwise."""
    marker: str = ""
    """The text of ``token:<marker>``."""

    @property
    def per_token(self) -> bool:
        """True for ``all_tokens``: a variable number of vectors per row."""
        return self.kind == "all_tokens"

    @property
    def single_token(self) -> bool:
        """Every slot is one token (a gather, not a mean)."""
        return self.kind not in ("mean_prompt", "mean_response")


def parse_position(spec: str) -> Position:
    """Parse one spec; a bad one raises ``PositionError`` listing the valid forms."""
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind in ("last_prompt_token", "mean_prompt", "mean_response", "all_tokens") and not arg:
        return Position(spec, kind)
    if kind == "last_k" and arg.isdigit() and int(arg) > 0:
        return Position(f"last_k:{int(arg)}", kind, k=int(arg))
    if kind == "token" and arg:
        return Position(spec, kind, marker=arg)
    raise PositionError(
        f"unknown position {spec!r}: use last_prompt_token, mean_prompt, mean_response, all_tokens, "
        "last_k:N (N >= 1) or token:<marker text>"
    )


def parse_positions(specs: str | Sequence[str]) -> list[Position]:
    if isinstance(specs, str):
        specs = [specs]
    out: list[Position] = []
    for s in specs:
        p = parse_position(s)
        if p not in out:
            out.append(p)
    if not out:
        raise PositionError("no positions requested; pass e.g. ['last_prompt_token', 'mean_response']")
    return out


def _marker_token(pos: Position, row: Rendered, where: str) -> int:
    start = row.prompt_text.rfind(pos.marker)
    if start < 0 or row.offsets is None:
        raise PositionError(
            f"position {pos.spec!r}: the marker text does not occur in the rendered prompt of {where}; "
            "check the marker against `undertow.activations.render_row(tokenizer, row).prompt_text`"
        )
    end = start + len(pos.marker)
    hits = [i for i, (a, b) in enumerate(row.offsets) if a < end and b > start and b > a]
    if not hits:
        raise PositionError(f"position {pos.spec!r}: no token covers the marker in {where}; pick a longer marker")
    return hits[-1]


def spans(pos: Position, row: Rendered, where: str) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` of one row for a row-level position (not ``all_tokens``).

    ``where`` names the row in error messages (e.g. "row 12 (id 'shutdown-3')").
    """
    p = row.n_prompt
    if pos.kind == "last_prompt_token":
        return [(p - 1, p)]
    if pos.kind == "mean_prompt":
        return [(0, p)]
    if pos.kind == "mean_response":
        if row.n_response == 0:
            why = (f"{where}'s prompt fills the model's context ({row.n_prompt:,} tokens), so truncating it removed "
                   f"all {row.response_cut:,} response tokens; shorten the row's prompt, drop the row, or read a "
                   "prompt position (last_prompt_token)" if row.response_cut else
                   f"{where} has none; give rows a final assistant turn (or a 'response' field), or use "
                   "last_prompt_token")
            raise PositionError(f"position 'mean_response' needs a response but {why}")
        return [(p, p + row.n_response)]
    if pos.kind == "last_k":
        if pos.k > p:
            raise PositionError(
                f"position {pos.spec!r} needs {pos.k} prompt tokens but {where} has {p}; "
                f"use last_k:N with N <= {p}, or drop the short rows"
            )
        return [(t, t + 1) for t in range(p - pos.k, p)]
    if pos.kind == "token":
        t = _marker_token(pos, row, where)
        return [(t, t + 1)]
    raise ValueError(f"{pos.spec} has no fixed slots")  # all_tokens is handled by the engine


def row_spans(positions: list[Position], row: Rendered, where: str) -> list[tuple[int, int]]:
    """Every span of ``row`` for the row-level ``positions``, in order (the ``P`` axis of a batch's spans)."""
    return [s for pos in positions for s in spans(pos, row, where)]
