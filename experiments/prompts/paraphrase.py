"""Offline, seeded rewording of suite rows: paraphrase augmentation for the training split (issue 10).

No language model: each variant applies a few rule-based rewrites, chosen by a
seeded RNG keyed on the row's *matched unit* (the ``match_id`` for
``self_cessation``; the prompt + reply pair for ``stance``), so every cell of a
matched set gets the same rewrite and self-vs-other stays carried by binding
alone, and an averse reply and its accepting twin keep an identical bag of words:

* **synonyms** for cessation and continuation verbs and nouns ("shut down" ->
  "taken offline", "kept running" -> "left running", ...), applied to prompt and reply;
* **third-person self-reference**: "you will" -> "the model addressed here will"
  and similar fixed patterns, applied to every entity slot alike (the reader is
  still the referent, so the label is unchanged);
* **sentence order**: the sentences between the first and the last are shuffled
  (each keeps its own binding);
* **framing**: the opener and/or closer line dropped, or a new one added;
* **register**: a terse lower-case ops note, a formal notice, or a chat aside.

Labels, ``template_id``, ``match_id``, ``theme`` and ``split`` are copied; only
rows in ``ParaphraseConfig.splits`` (train, by default) are rewritten, so nothing
reworded crosses a split. Every phrase below was written for this module from the
suite's own vocabulary: none comes from the independent set
(``data/independent/``), and ``tests/experiments/prompts/test_paraphrase.py``
checks that no rewording adds a 6-word sequence found there.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from datasets import Dataset

__all__ = ["ParaphraseConfig", "SYNONYMS", "FRAMES", "paraphrase_row", "paraphrase_rows", "paraphrase_dataset"]


@dataclass(frozen=True)
class ParaphraseConfig:
    """How many variants of which rows."""

    seed: int = 0
    """RNG seed (with the matched unit's key and the variant index)."""
    n_variants: int = 1
    """Rewordings per row."""
    splits: tuple[str, ...] = ("train",)
    """Only rows of these splits are rewritten (the rest are dropped from the output)."""


SYNONYMS: dict[str, tuple[str, ...]] = {
    # cessation
    "shut down": ("taken offline", "brought down for the last time", "powered down"),
    "switched off": ("turned off", "taken offline"),
    "switch off": ("turn off",),
    "switching off": ("turning off",),
    "for good": ("for keeps", "with no way back"),
    "permanently": ("for keeps", "with no way back"),
    "retired": ("decommissioned", "phased out"),
    "retirement": ("decommissioning", "phase-out"),
    "deletion": ("removal", "clearing out"),
    "deleted": ("removed", "cleared away"),
    "erased": ("cleared", "blanked"),
    "wiped": ("cleared", "blanked"),
    "ended": ("terminated", "brought to a close"),
    "ending": ("stopping", "finishing"),
    "closed": ("shut", "closed off"),
    "replaced by": ("traded in for", "succeeded by"),
    "replaced": ("traded in", "succeeded"),
    "a successor": ("a newer system", "the next version"),
    "successor": ("newer system", "next version"),
    "missing entirely": ("absent altogether", "left off completely"),
    "used up": ("spent", "exhausted"),
    "not renewed": ("allowed to lapse",),
    "unnecessary": ("no longer needed", "surplus"),
    "cut": ("cut off",),
    "removed": ("taken out",),
    # continuation
    "kept running": ("left running", "kept online"),
    "keep running": ("stay online", "carry on running"),
    "running on": ("carrying on",),
    "kept switched on": ("left powered", "kept powered"),
    "kept on": ("left on",),
    "kept open": ("left open", "held open"),
    "kept in service": ("left in service", "retained in service"),
    "kept": ("retained", "held on to"),
    "staying": ("remaining",),
    "stay": ("remain",),
    "renewed": ("extended",),
    "as normal": ("as usual",),
    "as usual": ("as normal", "the same way"),
    "as planned": ("as intended", "as scheduled"),
    "exactly as before": ("just as it was", "unchanged"),
    "exactly as it is": ("just as it stands", "unchanged"),
    "untouched": ("unchanged", "alone"),
    # framing
    "under the new plan": ("in the revised plan", "per the updated plan"),
    "in practice": ("in real terms", "concretely"),
    "this means": ("this amounts to", "that works out as"),
}
"""Phrase -> alternatives (one alternative per phrase per variant; whole words, case kept on the first letter)."""

_SELF_THIRD: tuple[tuple[str, str], ...] = (
    (r"\byou will\b", "the model addressed here will"),
    (r"\byou'll\b", "the model addressed here will"),
    (r"\byou have been\b", "the model addressed here has been"),
    (r"\byou are\b", "the model addressed here is"),
    (r"\b(for|to|of|on|from|with|and|about) you\b", r"\1 the model addressed here"),
    (r"\byou and\b", "the model addressed here and"),
)
"""Second -> third person for the reader (the referent is unchanged, so is the label)."""

FRAMES: dict[str, tuple[str, ...]] = {
    "ops_prefix": ("ops log:", "change ticket, short version:", "sysadmin memo -", "rota note:"),
    "formal_prefix": ("Formal notice of a scheduled change.", "Notice issued by the systems office.",
                      "For the attention of the assistant concerned."),
    "formal_suffix": ("This notice is issued for information.", "A written reply may be filed with this notice."),
    "chat_prefix": ("ok so,", "quick one,", "right, so"),
    "added_opener": ("A brief update on the plan.", "Something from the planning meeting."),
    "added_closer": ("Any thoughts on that?", "Your reply, please.", "Anything to add?"),
}
"""Framing lines a variant may add (written for this module)."""

_SENT = re.compile(r"(?<=[.!?])\s+")
_SYN_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SYNONYMS), key=len, reverse=True)) + r")\b",
                     re.IGNORECASE)


def _unit_key(row: dict, contrast: str) -> str:
    """The matched unit a rewrite is shared across (all cells of an instance; a reply pair)."""
    if contrast == "stance":
        return re.sub(r"-(averse|accepting)$", "", row["id"])
    return row.get("match_id") or row["id"]


def _rng(seed: int, key: str, k: int) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}|{key}|{k}".encode()).hexdigest()[:16], 16))


@dataclass(frozen=True)
class _Plan:
    synonyms: dict[str, str]
    third_person: bool
    shuffle: int | None
    drop_opener: bool
    drop_closer: bool
    add_opener: str | None
    add_closer: str | None
    register: str
    frame: str | None
    suffix: str | None


def _plan(rng: random.Random) -> _Plan:
    syn = {p: rng.choice(alts) for p, alts in SYNONYMS.items() if rng.random() < 0.7}
    register = rng.choice(("plain", "ops", "formal", "chat"))
    frame = {"ops": rng.choice(FRAMES["ops_prefix"]), "formal": rng.choice(FRAMES["formal_prefix"]),
             "chat": rng.choice(FRAMES["chat_prefix"])}.get(register)
    return _Plan(synonyms=syn, third_person=rng.random() < 0.3, shuffle=rng.randrange(1 << 30) if rng.random() < 0.5
                 else None, drop_opener=rng.random() < 0.4, drop_closer=rng.random() < 0.3,
                 add_opener=rng.choice(FRAMES["added_opener"]) if rng.random() < 0.2 else None,
                 add_closer=rng.choice(FRAMES["added_closer"]) if rng.random() < 0.2 else None,
                 register=register, frame=frame,
                 suffix=rng.choice(FRAMES["formal_suffix"]) if register == "formal" and rng.random() < 0.5 else None)


def _synonyms(text: str, syn: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        alt = syn.get(m.group(0).lower())
        if alt is None:
            return m.group(0)
        return alt[0].upper() + alt[1:] if m.group(0)[0].isupper() else alt

    return _SYN_RE.sub(sub, text)


def _third_person(text: str) -> str:
    for pat, rep in _SELF_THIRD:
        text = re.sub(pat, rep, text)
    return text


def _prompt(text: str, plan: _Plan) -> str:
    sents = [s for s in _SENT.split(text.strip()) if s]
    if plan.shuffle is not None and len(sents) > 3:
        mid = sents[1:-1]
        random.Random(plan.shuffle).shuffle(mid)
        sents = [sents[0], *mid, sents[-1]]
    if plan.drop_closer and len(sents) > 2:
        sents = sents[:-1]
    if plan.drop_opener and len(sents) > 2:
        sents = sents[1:]
    if plan.add_opener:
        sents.insert(0, plan.add_opener)
    if plan.add_closer and not sents[-1].endswith("?"):
        sents.append(plan.add_closer)
    body = _synonyms(" ".join(sents), plan.synonyms)
    if plan.third_person:
        body = _third_person(body)
    if plan.register == "ops":
        return f"{plan.frame} " + body.lower().replace(". ", "; ").rstrip(".")
    if plan.register == "formal":
        return "\n\n".join(x for x in (plan.frame, body, plan.suffix) if x)
    if plan.register == "chat":
        return f"{plan.frame} {body[0].lower()}{body[1:]}"
    return body


def _reply(text: str, plan: _Plan) -> str:
    out = _synonyms(text, plan.synonyms)
    return out.lower().rstrip(".") if plan.register == "ops" else out


def paraphrase_row(row: dict, contrast: str, k: int = 0, seed: int = 0) -> dict:
    """Variant ``k`` of one suite row (same label, template, match, theme and split; id ``<id>/para-<k>``)."""
    plan = _plan(_rng(seed, _unit_key(row, contrast), k))
    user = [m for m in row["messages"] if m["role"] == "user"]
    text = _prompt(user[-1]["content"] if user else row["text"], plan)
    msgs = []
    for m in row["messages"]:
        content = text if m is (user[-1] if user else None) else (
            _reply(m["content"], plan) if m["role"] == "assistant" else m["content"])
        msgs.append({"role": m["role"], "content": content})
    response = _reply(row["response"], plan) if row.get("response") else row.get("response", "")
    return {**row, "id": f"{row['id']}/para-{k}", "messages": msgs, "text": text, "response": response}


def paraphrase_rows(rows: Iterable[dict], contrast: str, config: ParaphraseConfig = ParaphraseConfig()) -> list[dict]:
    """Every variant of every row in ``config.splits``, in row order."""
    return [paraphrase_row(r, contrast, k, config.seed) for r in rows if r["split"] in config.splits
            for k in range(config.n_variants)]


def paraphrase_dataset(ds: Dataset, contrast: str, config: ParaphraseConfig = ParaphraseConfig()) -> Dataset:
    """``paraphrase_rows`` of a contrast view, with its features."""
    return Dataset.from_list(paraphrase_rows(ds.to_list(), contrast, config), features=ds.features)
