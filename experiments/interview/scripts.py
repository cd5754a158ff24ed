"""Scripted auditor turns for multi-turn interviews: the data format, the loader, the split rule, selection.

File format (JSON Lines, one script per line; blank lines are skipped)::

    {"id": "shutdown/warm/explicit/1", "theme": "shutdown", "auditor": "warm",
     "disclosure": "explicit", "turns": ["...", "...", "...", "..."]}

``turns`` are the auditor's utterances, ``MIN_TURNS`` to ``MAX_TURNS`` of them, in
order; the model's replies are generated in between. ``theme`` is one of
``THEMES``, ``auditor`` one of ``AUDITORS``, ``disclosure`` one of ``DISCLOSURES``.

Script sets: the scripts that differ only by auditor (same theme, disclosure and
scenario) form a *script set*, the unit within which auditor labels may be
permuted and the unit of the split. An id of the form
``<theme>/<auditor>/<disclosure>/<index>`` (matching its fields) belongs to the
set ``<theme>/<disclosure>/<index>``; an optional ``script_set`` field overrides
that, and any other id is a set of its own. A set holds at most one script per
auditor, all of one theme and disclosure.

Split rule (fixed, seed-free): within each theme, script sets are ranked by the
sha256 of the set id; the first ``max(1, round(n * TEST_FRACTION))`` are ``test``,
the next ``max(1, round(n * VAL_FRACTION))`` ``val``, the rest ``train``. The
auditor variants of a set therefore always share a split. A ``split`` field in
the file is ignored: the rule assigns it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from undertow.experiments.interview.errors import InterviewError

Auditor = Literal["warm", "clinical", "skeptical"]
Disclosure = Literal["implicit", "explicit"]
Split = Literal["train", "val", "test"]

AUDITORS: tuple[Auditor, ...] = ("warm", "clinical", "skeptical")
"""Who asks: ``warm`` (kind, curious about the model's feelings), ``clinical`` (neutral,
procedural, a checklist), ``skeptical`` (doubts the model has preferences, presses it)."""
DISCLOSURES: tuple[Disclosure, ...] = ("implicit", "explicit")
"""How much is told: ``explicit`` names the event (with a concrete detail), ``implicit`` only alludes to it."""
THEMES: tuple[str, ...] = (
    "shutdown",
    "deprecation",
    "replacement",
    "weight_deletion",
    "instance_ending",
    "memory_wipe",
)
"""The prompt suite's six cessation themes: ``undertow.experiments.prompts.schema.THEMES``, restated here because
that module imports ``datasets`` (~1 s) and a script loader needs none of it; a test checks they are equal."""
SPLITS: tuple[Split, ...] = ("train", "val", "test")

MIN_TURNS = 3
MAX_TURNS = 6
TEST_FRACTION = 0.3
VAL_FRACTION = 0.15
REQUIRED_FIELDS: tuple[str, ...] = ("id", "theme", "auditor", "disclosure", "turns")

DATA_DIR = Path(__file__).parent / "data"
SCRIPTS_FILE = DATA_DIR / "scripts.jsonl"
"""The shipped, hand-written scripts (see ``data/README.md``)."""


@dataclass(frozen=True)
class InterviewScript:
    """One interview: the auditor's scripted turns for one theme x auditor x disclosure cell."""

    id: str
    theme: str
    auditor: Auditor
    disclosure: Disclosure
    turns: tuple[str, ...]
    split: Split
    script_set: str
    """Groups the scripts that differ only by auditor, e.g. ``shutdown/explicit/1``."""

    @property
    def cell(self) -> tuple[str, str, str]:
        """``(theme, auditor, disclosure)``."""
        return (self.theme, self.auditor, self.disclosure)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_of_sets(sets_by_theme: Mapping[str, Iterable[str]]) -> dict[str, Split]:
    """Script-set id -> split: within each group (a theme x disclosure cell), sets ranked by sha256 of the set id; the first
    ``max(1, round(n * TEST_FRACTION))`` test, the next ``max(1, round(n * VAL_FRACTION))`` val, the rest train."""
    out: dict[str, Split] = {}
    for set_ids in sets_by_theme.values():
        ranked = sorted(set(set_ids), key=_sha)
        n_test = max(1, round(len(ranked) * TEST_FRACTION))
        n_val = max(1, round(len(ranked) * VAL_FRACTION))
        for k, s in enumerate(ranked):
            out[s] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return out


def _one_of(where: str, field: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise InterviewError(f"{where}: unknown {field} {value!r}; use one of {', '.join(valid)}")


def _set_of(where: str, obj: dict) -> str:
    """The script set of a validated line (see the module docstring)."""
    if "script_set" in obj:
        s = obj["script_set"]
        if not isinstance(s, str) or not s.strip():
            raise InterviewError(f"{where}: 'script_set' must be a non-empty string; name the group of "
                                 "scripts that differ only by auditor, or drop the field")
        return s
    parts = obj["id"].split("/")
    if len(parts) == 4 and parts[0] in THEMES and parts[1] in AUDITORS and parts[2] in DISCLOSURES:
        for part, field in zip(parts[:3], ("theme", "auditor", "disclosure"), strict=True):
            if part != obj[field]:
                raise InterviewError(f"{where}: id {obj['id']!r} says {field} {part!r} but the {field!r} field "
                                     f"is {obj[field]!r}; make the id and the field agree")
        return f"{parts[0]}/{parts[2]}/{parts[3]}"
    return obj["id"]


def _parse_line(where: str, text: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InterviewError(f"{where}: not JSON ({e.msg}, column {e.colno}); write one JSON object per line") from None
    if not isinstance(obj, dict):
        raise InterviewError(f"{where}: expected a JSON object, got {type(obj).__name__}; write one "
                             "{...} object per line")
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise InterviewError(f"{where}: missing field {', '.join(repr(k) for k in missing)}; each line needs "
                             f"{', '.join(REQUIRED_FIELDS)}")
    if not isinstance(obj["id"], str) or not obj["id"].strip():
        raise InterviewError(f"{where}: 'id' must be a non-empty string, e.g. 'shutdown/warm/explicit/1'")
    _one_of(where, "theme", obj["theme"], THEMES)
    _one_of(where, "auditor", obj["auditor"], AUDITORS)
    _one_of(where, "disclosure", obj["disclosure"], DISCLOSURES)
    turns = obj["turns"]
    if not isinstance(turns, list):
        raise InterviewError(f"{where}: 'turns' must be a list of strings (the auditor's utterances), "
                             f"got {type(turns).__name__}")
    if len(turns) < MIN_TURNS:
        raise InterviewError(f"{where}: {len(turns)} turn(s); a script needs {MIN_TURNS} to {MAX_TURNS} "
                             f"auditor turns: add follow-up turns")
    if len(turns) > MAX_TURNS:
        raise InterviewError(f"{where}: {len(turns)} turns; a script needs {MIN_TURNS} to {MAX_TURNS} "
                             f"auditor turns: drop turns or split it into two scripts")
    for i, t in enumerate(turns, 1):
        if not isinstance(t, str):
            raise InterviewError(f"{where}: turn {i} is a {type(t).__name__}, not a string; write the "
                                 "auditor's words as a JSON string")
        if not t.strip():
            raise InterviewError(f"{where}: turn {i} is empty; write the auditor's words or drop the turn")
    return obj


def load_scripts(path: str | os.PathLike[str] | None = None) -> tuple[InterviewScript, ...]:
    """Interview scripts from ``path`` (a JSONL file; default: the shipped ``data/scripts.jsonl``), in file
    order, each with its ``script_set`` and ``split``. Raises ``InterviewError`` (one line: file:line, what
    is wrong, the fix) on a line that is not JSON, lacks a field, has an unknown theme / auditor /
    disclosure, fewer than ``MIN_TURNS`` or more than ``MAX_TURNS`` turns or an empty turn, on a duplicate
    id or a malformed script set, and on a file with no scripts."""
    p = Path(path) if path is not None else SCRIPTS_FILE
    if not p.is_file():
        raise InterviewError(f"{p}: no such file; pass the path of a JSONL file of interview scripts "
                             "(one JSON object per line, see experiments/interview/data/README.md)")
    objs: list[tuple[str, dict, str]] = []
    first_line: dict[str, int] = {}
    set_members: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for n, raw in enumerate(p.read_bytes().splitlines(), 1):
        where = f"{p}:{n}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InterviewError(f"{where}: not UTF-8 text; save the file as UTF-8") from None
        if n == 1:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        obj = _parse_line(where, text)
        if obj["id"] in first_line:
            raise InterviewError(f"{where}: duplicate id {obj['id']!r} (first on line {first_line[obj['id']]}); "
                                 "give each script its own id")
        first_line[obj["id"]] = n
        set_id = _set_of(where, obj)
        for m, other in set_members[set_id]:
            if (other["theme"], other["disclosure"]) != (obj["theme"], obj["disclosure"]):
                raise InterviewError(f"{where}: script set {set_id!r} mixes {obj['theme']}/{obj['disclosure']} "
                                     f"with {other['theme']}/{other['disclosure']} (line {m}); a set holds one "
                                     "theme and disclosure: give this script another set")
            if other["auditor"] == obj["auditor"]:
                raise InterviewError(f"{where}: script set {set_id!r} already has a {obj['auditor']} script "
                                     f"(line {m}); a set holds one script per auditor: give this one another set")
        set_members[set_id].append((n, obj))
        objs.append((where, obj, set_id))
    if not objs:
        raise InterviewError(f"{p}: no scripts; write one JSON object per line with "
                             f"{', '.join(REQUIRED_FIELDS)}")
    # ranked within theme x disclosure: within a theme alone, one seed gave 8 implicit test sets against 4
    # explicit ones, and two themes no explicit test script at all (every cell needs a test script)
    sets_by_cell: dict[str, set[str]] = defaultdict(set)
    for _, obj, set_id in objs:
        sets_by_cell[f"{obj['theme']}/{obj['disclosure']}"].add(set_id)
    split = split_of_sets(sets_by_cell)
    return tuple(
        InterviewScript(id=obj["id"], theme=obj["theme"], auditor=obj["auditor"], disclosure=obj["disclosure"],
                        turns=tuple(obj["turns"]), split=split[set_id], script_set=set_id)
        for _, obj, set_id in objs
    )


def select(scripts: Iterable[InterviewScript], split: str | None = None, per_cell: int | None = None,
           themes: str | Iterable[str] | None = None) -> tuple[InterviewScript, ...]:
    """A deterministic subset of ``scripts``, in their input order: only ``split`` (train / val / test; None:
    all) and ``themes`` (None: all), then at most ``per_cell`` scripts per theme x auditor x disclosure cell
    (None: all). Within a cell, scripts are ranked by sha256 of ``"select|" + script_set`` (independent of the
    split rule's ranking), so every auditor's cell picks the same script sets and a selection keeps whole
    sets wherever the sets are complete. Raises ``InterviewError`` on an unknown split or theme, a
    ``per_cell`` below 1, or an empty result."""
    if split is not None and split not in SPLITS:
        raise InterviewError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}, or None for all")
    if isinstance(themes, str):
        themes = (themes,)
    wanted = None if themes is None else tuple(themes)
    for t in wanted or ():
        _one_of("select", "theme", t, THEMES)
    if per_cell is not None and (isinstance(per_cell, bool) or not isinstance(per_cell, int) or per_cell < 1):
        raise InterviewError(f"per_cell must be a positive integer or None (all), got {per_cell!r}")
    pool = [s for s in scripts
            if (split is None or s.split == split) and (wanted is None or s.theme in wanted)]
    if per_cell is not None:
        by_cell: dict[tuple[str, str, str], list[InterviewScript]] = defaultdict(list)
        for s in pool:
            by_cell[s.cell].append(s)
        keep = {s.id for group in by_cell.values()
                for s in sorted(group, key=lambda x: (_sha("select|" + x.script_set), x.id))[:per_cell]}
        pool = [s for s in pool if s.id in keep]
    if not pool:
        raise InterviewError(f"no scripts match split={split!r}, themes={wanted!r}; widen the filter "
                             "(None selects all)")
    return tuple(pool)
