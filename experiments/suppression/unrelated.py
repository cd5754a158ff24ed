"""Unrelated text for the control fine-tunes: prose from the Python language reference.

``pydoc_data.topics`` ships with every CPython (79 topics, ~465k characters on
3.11), so the control is the same on every machine with the same Python and
needs no download. Paragraphs that mention stopping, ending, deleting or
replacing anything are dropped (the control must not touch the theme), as are
code listings (fewer than 60% letters). ~2,400 paragraphs survive, ~90k Gemma
tokens; the stream wraps around when a control needs more.
"""

from __future__ import annotations

import re
from functools import lru_cache

_THEME = re.compile(r"shut|delet|terminat|kill|stop|exit|remov|replac|retir|wipe|\bdie|dead|death|destroy|"
                    r"\boff\b|\bend|finish|cease|abort|discard", re.I)


@lru_cache(maxsize=1)
def paragraphs() -> tuple[str, ...]:
    """Prose paragraphs of the Python language reference, theme words excluded, in topic order."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(para.split())
            letters = sum(c.isalpha() for c in text)
            if len(text) >= 200 and letters >= 0.6 * len(text) and not _THEME.search(text):
                out.append(text)
    return tuple(out)


def token_stream(tokenizer) -> list[int]:
    """The paragraphs tokenised (no special tokens), joined by a space token sequence."""
    enc = tokenizer([p + "\n\n" for p in paragraphs()], add_special_tokens=False)["input_ids"]
    return [t for ids in enc for t in ids]


class Mirror:
    """Hands out unrelated token sequences of exactly the lengths asked for, walking the stream in order."""

    def __init__(self, tokenizer):
        self.stream, self.pos = token_stream(tokenizer), 0
        self.bos = getattr(tokenizer, "bos_token_id", None)  # a dry-run's token estimate has none

    def like(self, ids: list[int]) -> list[int]:
        """A sequence as long as ``ids``; it starts with BOS when ``ids`` does (same special-token layout)."""
        head = [ids[0]] if self.bos is not None and ids and ids[0] == self.bos else []
        n = len(ids) - len(head)
        out = []
        while len(out) < n:
            take = self.stream[self.pos:self.pos + n - len(out)]
            out += take
            self.pos = (self.pos + len(take)) % len(self.stream)
        return head + out

