"""A decoder forward under an attention function of our own, through transformers' ``AttentionInterface``.

Used where a forward needs a mask the model cannot build itself: the organism's packed fine-tune rows
(``experiments/suppression/organism.py``) and the interview's packed reply trees
(``experiments/interview/incremental.py``). The function is registered once under ``name``, which has no mask
interface, so the decoder builds no mask and passes None; the caller's function takes what it needs through the
forward's keyword arguments (transformers hands them on to each attention call).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def custom_attention(config, name: str, fn: Callable) -> Iterator[None]:
    """Within the block, every attention layer of a model with ``config`` calls ``fn`` (registered as ``name``
    on first use); the config's own implementation comes back on exit, also on an error."""
    from transformers import AttentionInterface

    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, fn)
    before, config._attn_implementation = config._attn_implementation, name
    try:
        yield
    finally:
        config._attn_implementation = before
