"""Plan without the Hugging Face hub: shipped ``config.json`` files, one quick reachability check, token estimates.

- ``configs/<org>--<name>.json``: the hub's ``config.json`` of every hub model a committed config
  (``experiments/configs``) names; architecture values only, no weights (``configs/README.md`` says where each
  value comes from). ``shipped_config`` reads one.
- ``hub_reachable``: ``HF_HUB_OFFLINE`` set -> no; else one TCP connection to the hub's host with a 2.5 s
  timeout (DNS included), its answer kept for the process. A login node without the hub learns it once, in
  seconds, instead of in ~40 s of retries per file.
- ``EstimatedTokenizer``: where the model's tokenizer is not cached, counts tokens from whitespace words at a
  stated rate per model family (``TOKEN_ESTIMATES``) plus the chat template's turns. Rows that share a prompt
  share token ids, so the engine's shared-prompt batching plans as it would on real ids.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
HUB_TIMEOUT_S = 2.5


def shipped_config_path(repo_id: str) -> Path | None:
    """The shipped ``config.json`` of a hub id (``org/name`` -> ``configs/org--name.json``), or None."""
    path = CONFIG_DIR / (repo_id.strip("/").replace("/", "--") + ".json")
    return path if "/" in repo_id and path.is_file() else None


def shipped_config(repo_id: str):
    """The transformers config of a hub id from its shipped ``config.json``, or None when none is shipped."""
    path = shipped_config_path(repo_id)
    if path is None:
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path))


@contextlib.contextmanager
def hub_offline():
    """``huggingface_hub`` in offline mode for the block: its constants are read at import, so ``HF_HUB_OFFLINE``
    set later, or a hub found unreachable, would not stop its side requests (2.x fetches an agent registry while
    building the headers of a cache-only lookup)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_offline_env() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable() -> bool:
    """False under ``HF_HUB_OFFLINE``; else whether one connection to the hub succeeds (checked once per process)."""
    return not hub_offline_env() and _probe_hub()


@functools.cache
def _probe_hub(timeout: float = HUB_TIMEOUT_S) -> bool:
    """One TCP connection to the hub endpoint's host; a thread bounds the DNS lookup by the same timeout."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    ok: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(ok)


@dataclass(frozen=True)
class TokenEstimate:
    """How ``EstimatedTokenizer`` counts: tokens per whitespace word, per chat turn, and the template's preamble."""

    tokens_per_word: float
    basis: str
    """Where the rate comes from."""
    tokens_per_turn: int = 5
    """Role header + end of turn (Llama 3: <|start_header_id|> role <|end_header_id|> \\n\\n ... <|eot_id|>)."""
    system_preamble: str = ""
    """Text the chat template always puts in a system turn (Llama 3.1+: its knowledge and today dates)."""


TOKEN_ESTIMATES = {
    "llama": TokenEstimate(1.33, "Llama 3 on English, ~0.75 words per token",
                           system_preamble="Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024"),
    "gemma3": TokenEstimate(1.29, "measured: Gemma 3's tokenizer (gemma-3-270m's, the same 262k vocab) on the "
                                  "prompt suite, 429,285 tokens / 332,602 words"),
}
DEFAULT_ESTIMATE = TokenEstimate(1.33, "English, ~0.75 words per token")

_BOS, _TURN = "\x00bos\x00", "\x00turn\x00"
"""Markers the estimated chat template writes (each its own whitespace-separated piece): tokens, not words."""


class EstimatedTokenizer:
    """A stand-in tokenizer for ``render_rows`` when the real one is not cached: ids are made up (a hash of the
    text), their number is the estimate. ``description`` states how."""

    chat_template = "estimated"
    """Instruct models have a chat template: ``template: chat`` renders through ``apply_chat_template`` below."""

    def __init__(self, model: str, model_type: str, vocab_size: int):
        self.model, self.vocab_size = model, vocab_size
        self.estimate = TOKEN_ESTIMATES.get(model_type.removesuffix("_text"), DEFAULT_ESTIMATE)

    @property
    def description(self) -> str:
        e = self.estimate
        preamble = f", + the template's system preamble ({e.system_preamble!r})" if e.system_preamble else ""
        return (f"tokens estimated ({self.model}'s tokenizer not cached): {e.tokens_per_word} per whitespace word "
                f"({e.basis}) + {e.tokens_per_turn} per chat turn + 1 BOS{preamble}")

    def __len__(self) -> int:
        return self.vocab_size

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = False, **_) -> str:
        messages = list(messages)
        if self.estimate.system_preamble:
            system = [m["content"] for m in messages if m["role"] == "system"]
            messages = [{"role": "system", "content": " ".join([self.estimate.system_preamble, *system])},
                        *(m for m in messages if m["role"] != "system")]
        turns = [f"{_TURN}{m['role']} {m['content']}" for m in messages]
        if add_generation_prompt:
            turns.append(f"{_TURN}assistant")
        return " ".join([_BOS, *turns])

    def count(self, text: str, add_special_tokens: bool = True) -> int:
        """Estimated tokens of ``text``: round(rate x words) + BOS + the template's turns."""
        pieces = text.split()
        bos, turns = text.count(_BOS), text.count(_TURN)
        words = len(pieces) - bos - turns
        return (math.floor(self.estimate.tokens_per_word * words + 0.5) + bos + add_special_tokens
                + self.estimate.tokens_per_turn * turns)

    def _offsets(self, text: str, add_special_tokens: bool) -> list[tuple[int, int]]:
        """Character span of each estimated token: a word's 1 or 2 tokens (cumulative rounding, so n words give
        ``count``'s round(rate x n)) or a marker's tokens split its piece evenly."""
        out, words, rate = [(0, 0)] if add_special_tokens else [], 0, self.estimate.tokens_per_word
        for m in re.finditer(r"\S+", text):
            piece, start, width = m.group(), m.start(), m.end() - m.start()
            if piece == _BOS:
                n = 1
            elif piece.startswith(_TURN):
                n = self.estimate.tokens_per_turn
            else:
                n = math.floor(rate * (words + 1) + 0.5) - math.floor(rate * words + 0.5)
                words += 1
            out += [(start + width * j // n, start + width * (j + 1) // n) for j in range(n)]
        return out

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        """``count`` ids from a hash of the text: equal texts give equal ids, different ones differ."""
        n = self.count(text, add_special_tokens)
        first = zlib.crc32(text.encode("utf-8", "surrogatepass")) % max(1, self.vocab_size - n)
        return list(range(first, first + n))

    def __call__(self, texts, add_special_tokens: bool = True, return_offsets_mapping: bool = False, **_):
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        out = {"input_ids": [self._encode(t, add_special_tokens) for t in batch]}
        if return_offsets_mapping:
            out["offset_mapping"] = [self._offsets(t, add_special_tokens) for t in batch]
        return {k: v[0] for k, v in out.items()} if single else out
