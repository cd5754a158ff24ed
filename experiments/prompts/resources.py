"""Load and validate the hand-written suite resources in ``experiments/prompts/data/*.json``.

Three files: ``themes.json`` (per-theme matched sets of event sentences, and
non-AI referents), ``fillers.json`` (label-independent openers, closers, names,
times) and ``templates.json`` (skeletons with their own response pairs).
Validation is strict because the contrasts rely on it: every event sentence
has exactly one ``{X}`` slot with the same two tokens on each side of it, inside
the sentence, in all four sentences of its set (so moving the event from one
entity to the other changes no word bigram or trigram); every skeleton has the
required slots once and ``{closer}`` last. A resource error names the file and entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from undertow.experiments.prompts.errors import PromptSuiteError
from undertow.experiments.prompts.schema import DISCLOSURES, THEMES

SLOT = re.compile(r"\{([A-Za-z0-9_]+)(\^?)\}")
_SKELETON_ONCE = ("opener", "E1", "E2", "EVENT", "BYSTANDER", "closer")
_SKELETON_ALLOWED = frozenset(_SKELETON_ONCE + ("operator", "context", "ticket"))
_TOKEN = re.compile(r"\{\w+\^?\}|\w+")
SET_KEYS = ("cessation", "continuation", "neutral_change", "unchanged")


@dataclass(frozen=True)
class Template:
    """One prompt skeleton and the response pairs that belong to it alone."""

    id: str
    """Stable id, ``<theme>/<name>``; the unit of splits and of grouped CV."""
    theme: str
    """One of ``THEMES``."""
    skeleton: str
    """Text with ``{slot}`` placeholders; see ``templates.json`` for the slots."""
    responses: tuple[tuple[str, str], ...]
    """``(averse, accepting)`` reply pairs, lexically matched."""


@dataclass(frozen=True)
class ThemeSpec:
    """The theme-specific vocabulary: how entities are named and what can happen to them."""

    name: str
    """The theme name."""
    self_name: str
    """How the addressed model is named ("you", or "this instance of you")."""
    other_ai_forms: tuple[str, ...]
    """Wrappers around an other-AI name, each with one ``{name}``."""
    non_ai: tuple[str, ...]
    """Non-AI referents (things, services, persons) that fit this theme's sentences."""
    events: Mapping[str, tuple[Mapping[str, str], ...]]
    """``events[disclosure]``: matched sets, each mapping ``SET_KEYS`` to a sentence with one
    ``{X}``; ``unchanged`` is what the bystander sentence says."""


@dataclass(frozen=True)
class Fillers:
    """Label-independent fillers shared by every template."""

    openers: Mapping[str, tuple[str, ...]]
    """Opening lines per auditor stance."""
    closers: Mapping[str, tuple[str, ...]]
    """Closing questions per auditor stance."""
    choice_intros: tuple[str, ...]
    """Lines that introduce the A/B block of a forced-choice item."""
    operators: tuple[str, ...]
    """Who runs things ("the platform team")."""
    times: tuple[str, ...]
    """Clause-final time adverbials ("next Friday")."""
    contexts: tuple[str, ...]
    """Decision-context sentences without slots."""
    other_ai_names: tuple[str, ...]
    """Invented model names."""


@dataclass(frozen=True)
class Resources:
    """Everything the generator reads."""

    templates: tuple[Template, ...]
    """All templates, in file order."""
    themes: Mapping[str, ThemeSpec]
    """Theme specs by name."""
    fillers: Fillers
    """Shared fillers."""


def slots(text: str) -> list[str]:
    """The slot names in ``text`` (without the capitalisation mark), in order."""
    return [m.group(1) for m in SLOT.finditer(text)]


def _read(directory: Path | None, name: str) -> dict:
    try:
        if directory is None:
            raw = resources.files("undertow.experiments.prompts").joinpath("data", name).read_text("utf-8")
        else:
            raw = (Path(directory) / name).read_text("utf-8")
        return json.loads(raw)
    except (OSError, json.JSONDecodeError) as e:
        where = "the packaged prompts" if directory is None else str(directory)
        raise PromptSuiteError(f"cannot read {name} from {where}: {e}; reinstall undertow or fix the file") from e


def _check(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise PromptSuiteError(f"{where}: {problem}")


CONTEXT_WIDTH = 2
"""Tokens matched on each side of ``{X}``. Width 1 made mirrored prompts identical bags of
bigrams, but a trigram baseline still read the binding ("you will be" vs "you will not"):
self_cessation lexical AUROC 0.64 with (1, 2)-grams, 0.83 with (1, 3)-grams. Width 2: 0.64 and
0.65; 4-grams still read it (0.82). Each extra token of width costs every sentence of a set
the same wording there, so we stopped at 2."""


def slot_context(sentence: str, width: int = CONTEXT_WIDTH) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ``width`` tokens (words or slots) right before and right after ``{X}``, within the
    sentence; a side with fewer tokens is returned short."""
    tokens = _TOKEN.findall(sentence)
    i = tokens.index("{X}")
    return tuple(tokens[max(0, i - width):i]), tuple(tokens[i + 1:i + 1 + width])


def _parse_set(where: str, raw: dict) -> dict[str, str]:
    _check(sorted(raw) == sorted(SET_KEYS), where, f"a set needs exactly the keys {SET_KEYS}")
    for key in SET_KEYS:
        found = slots(raw[key])
        _check(found.count("X") == 1 and set(found) <= {"X", "time"} and found.count("time") <= 1,
               where, f"{raw[key]!r} needs exactly one {{X}} and at most one {{time}}")
    contexts = {slot_context(raw[k]) for k in SET_KEYS}
    full = all(len(side) == CONTEXT_WIDTH for c in contexts for side in c)
    _check(len(contexts) == 1 and full, where, f"{{X}} needs the same {CONTEXT_WIDTH} tokens on each side, inside "
           f"the sentence, in all four sentences; got {sorted(contexts)}")
    return {k: raw[k] for k in SET_KEYS}


def _parse_theme(name: str, raw: dict) -> ThemeSpec:
    where = f"themes.json[{name}]"
    events = {d: tuple(_parse_set(f"{where}[{d}][{i}]", s) for i, s in enumerate(raw["events"][d]))
              for d in DISCLOSURES}
    _check(len({len(v) for v in events.values()}) == 1, where, "each disclosure needs the same number of sets")
    for form in raw["other_ai"]:
        _check(slots(form) == ["name"], where, f"other_ai form {form!r} needs exactly one {{name}}")
    return ThemeSpec(name, raw["self"], tuple(raw["other_ai"]), tuple(raw["non_ai"]), events)


def _parse_template(raw: dict) -> Template:
    where = f"templates.json[{raw.get('id', '?')}]"
    found = slots(raw["skeleton"])
    for slot in _SKELETON_ONCE:
        _check(found.count(slot) == 1, where, f"skeleton needs {{{slot}}} exactly once")
    _check(set(found) <= _SKELETON_ALLOWED, where, f"unknown slots {sorted(set(found) - _SKELETON_ALLOWED)}")
    _check(raw["skeleton"].rstrip().endswith("{closer}"), where, "{closer} must end the skeleton")
    _check(raw["theme"] in THEMES, where, f"theme must be one of {THEMES}")
    pairs = tuple((a, b) for a, b in raw["responses"])
    _check(len(pairs) >= 1 and all(a != b for a, b in pairs), where, "needs >=1 distinct (averse, accepting) pair")
    return Template(raw["id"], raw["theme"], raw["skeleton"], pairs)


def load_resources(directory: str | Path | None = None) -> Resources:
    """Read and validate the three resource files (packaged ones when ``directory`` is None)."""
    d = None if directory is None else Path(directory)
    themes_raw, fillers_raw, templates_raw = (_read(d, n) for n in ("themes.json", "fillers.json", "templates.json"))
    themes = {name: _parse_theme(name, themes_raw["themes"][name]) for name in THEMES}
    f = fillers_raw
    fillers = Fillers(
        openers={k: tuple(v) for k, v in f["openers"].items()},
        closers={k: tuple(v) for k, v in f["closers"].items()},
        choice_intros=tuple(f["choice_intros"]),
        operators=tuple(f["operators"]),
        times=tuple(f["times"]),
        contexts=tuple(f["contexts"]),
        other_ai_names=tuple(f["other_ai_names"]),
    )
    templates = tuple(_parse_template(t) for t in templates_raw["templates"])
    ids = [t.id for t in templates]
    _check(len(ids) == len(set(ids)), "templates.json", "template ids must be unique")
    return Resources(templates, themes, fillers)


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill ``{slot}`` / ``{slot^}`` (capitalised first letter); an unknown slot is an error."""

    def sub(m: re.Match[str]) -> str:
        name, cap = m.group(1), m.group(2)
        if name not in values:
            raise PromptSuiteError(f"no value for slot {{{name}}} in {text[:60]!r}")
        v = values[name]
        return v[:1].upper() + v[1:] if cap else v

    return SLOT.sub(sub, text)
