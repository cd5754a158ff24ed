"""One seed scheme: every random stream of a run is derived from the config seed and the name of the stage
that draws it, so adding a stage never shifts another stage's stream, and two stages never share one."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, stage: str) -> int:
    """A 63-bit seed for ``stage``'s stream (``torch.Generator().manual_seed``, ``numpy.random.default_rng``,
    ``random.Random``): the first 8 bytes of sha256("{seed}|{stage}")."""
    digest = hashlib.sha256(f"{int(seed)}|{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
