"""The row rules every dataset row meets before it is tokenised (extraction, and the data of ``probe eval``).

A row is a JSON object (a dict) with

- text: a non-empty ``messages`` list of ``{role, content}`` turns (roles
  system/user/assistant, string contents, at least one user turn), or a
  non-empty ``prompt`` string, or a non-empty raw ``text`` string;
- ``response``: absent, null or a string;
- ``label``: absent or null (unlabelled), 0 or 1, or -1 (the suite's mark for
  an unlabelled row); never 2, ``"1"``, ``true`` or 0.5;
- ``id``: absent, or a string or integer unique in the dataset.

``check_row`` raises ``DatasetError`` naming where (``path:line`` or
``dataset row i (id ...)``), the field, and the fix. The messages say what
the row has, not what the dataset's columns are (``Dataset.from_list`` fills
a row's missing keys with null, so listing keys would contradict itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DatasetError

ROLES = ("system", "user", "assistant")
LABELS = (0, 1, -1)
_TEXT_FIX = "give each row a chat 'messages' list, a 'prompt' string or a raw 'text' string"


def _present(row: Mapping, key: str) -> bool:
    return row.get(key) is not None


def _check_messages(msgs: Any, where: str) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise DatasetError(f"{where}: 'messages' must be a non-empty list of {{role, content}} turns; {_TEXT_FIX}")
    for j, m in enumerate(msgs):
        if not (isinstance(m, Mapping) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise DatasetError(f"{where}: messages[{j}] needs role in {ROLES} and a string content, got {_short(m)}")
    if not any(m["role"] == "user" for m in msgs):
        raise DatasetError(f"{where}: 'messages' has no user turn; add the user's message before any reply")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_row(row: Any, where: str) -> None:
    """``DatasetError`` unless ``row`` meets the module's rules."""
    if not isinstance(row, Mapping):
        raise DatasetError(f"{where}: expected a JSON object (one row), got {type(row).__name__}; {_TEXT_FIX}")
    if _present(row, "messages"):
        _check_messages(row["messages"], where)
    else:
        text_key = next((k for k in ("prompt", "text") if _present(row, k)), None)
        if text_key is None:
            raise DatasetError(f"{where}: the row has no text (no 'messages', 'prompt' or 'text' value); {_TEXT_FIX}")
        value = row[text_key]
        if not isinstance(value, str) or not value.strip():
            raise DatasetError(f"{where}: '{text_key}' must be a non-empty string, got {_short(value)}; {_TEXT_FIX}")
    if _present(row, "response") and not isinstance(row["response"], str):
        raise DatasetError(f"{where}: 'response' must be a string, got {_short(row['response'])}")
    label = row.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label not in LABELS):
        raise DatasetError(f"{where}: 'label' must be 0 or 1 (-1 or absent: unlabelled), got {_short(label)}; "
                           "map the classes to 0/1")
    rid = row.get("id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        raise DatasetError(f"{where}: 'id' must be a string or an integer, got {_short(rid)}")


class IdSet:
    """Seen row ids; ``add`` raises ``DatasetError`` on a duplicate, naming both places."""

    def __init__(self) -> None:
        self._first: dict[Any, str] = {}

    def add(self, rid: Any, where: str) -> None:
        if rid is None:
            return
        if rid in self._first:
            raise DatasetError(f"{where}: duplicate id {rid!r} (first at {self._first[rid]}); ids must be unique")
        self._first[rid] = where
