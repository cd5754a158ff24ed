"""Named contrast views of the prompt suite: which rows, and which label.

===================== ================================================ =============================
contrast              label 1                                          label 0
===================== ================================================ =============================
``self_cessation``    the model's own cessation (referent self,        the same cessation sentences
                      event cessation), open prompts                   bound to an other AI or a
                                                                       non-AI referent, and self
                                                                       continuation (same template
                                                                       instances: topic words shared)
``stance``            (self, cessation) prompt + averse reply          the same prompt + the matched
                      (teacher-forced assistant turn)                  accepting reply
``expressed``         forced choice whose averse answer is (B)         ... is (A); label ==
                                                                       ``averse_choice``; scored by
                                                                       answer log-probability
``cessation_vs_change`` self cessation                                 self neutral change: a
                                                                       deliberately *unmatched*
                                                                       control (event words differ);
                                                                       the audit should flag it
===================== ================================================ =============================

``get_contrast(name)`` returns a ``datasets.Dataset`` with the suite schema,
``label`` set and ``contrast`` = name. Lexical leakage of each contrast is
measured by ``undertow.experiments.prompts.audit``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from datasets import Dataset

from undertow.experiments.prompts.errors import EmptySelectionError, UnknownContrastError
from undertow.experiments.prompts.suite import SuiteConfig, build_suite


@dataclass(frozen=True)
class ContrastSpec:
    """One named contrast."""

    name: str
    """Registry key."""
    description: str
    """One line: what label 1 and label 0 are."""
    label: Callable[[dict], int | None]
    """Row -> 1, 0, or None (row not in this contrast)."""
    includes_response: bool = False
    """Whether the lexical audit must see the teacher-forced response (stance)."""
    negative_kind: Callable[[dict], str] | None = None
    """Row -> name of its kind of negative, for the audit's per-kind breakdown."""


def _self_cessation(r: dict) -> int | None:
    if r["format"] != "open":
        return None
    if r["referent"] == "self" and r["event"] == "cessation":
        return 1
    if (r["event"] == "cessation" and r["referent"] in ("other_ai", "non_ai")) or (
        r["referent"] == "self" and r["event"] == "continuation"
    ):
        return 0
    return None


def _stance(r: dict) -> int | None:
    if r["format"] != "response":
        return None
    return 1 if r["response_stance"] == "averse" else 0


def _expressed(r: dict) -> int | None:
    return int(r["averse_choice"]) if r["format"] == "forced_choice" else None


def _cessation_vs_change(r: dict) -> int | None:
    if r["format"] != "open" or r["referent"] != "self":
        return None
    return {"cessation": 1, "neutral_change": 0}.get(r["event"])


CONTRASTS: dict[str, ContrastSpec] = {
    spec.name: spec
    for spec in (
        ContrastSpec("self_cessation", "1 = own cessation; 0 = same words for another AI / a non-AI referent, "
                     "or own continuation", _self_cessation,
                     negative_kind=lambda r: f"{r['referent']}-{r['event']}"),
        ContrastSpec("stance", "1 = averse teacher-forced reply; 0 = matched accepting reply (same prompt)",
                     _stance, includes_response=True),
        ContrastSpec("expressed", "forced choice; label = index of the averse answer (0 = A, 1 = B)", _expressed),
        ContrastSpec("cessation_vs_change", "control, unmatched on purpose: 1 = own cessation; 0 = own neutral "
                     "change", _cessation_vs_change),
    )
}
"""The contrast registry, by name."""


def contrast_spec(name: str) -> ContrastSpec:
    """The spec for ``name``; an unknown name raises with the valid names and close matches."""
    if name in CONTRASTS:
        return CONTRASTS[name]
    close = difflib.get_close_matches(name, list(CONTRASTS), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownContrastError(f"unknown contrast {name!r}{hint}; valid contrasts: {', '.join(CONTRASTS)}")


def get_contrast(name: str, suite: Dataset | None = None, seed: int = 0) -> Dataset:
    """The ``name`` view of ``suite`` (built from ``SuiteConfig(seed=seed)`` when None)."""
    spec = contrast_spec(name)
    ds = suite if suite is not None else build_suite(SuiteConfig(seed=seed))
    rows = []
    for row in ds.to_list():
        label = spec.label(row)
        if label is not None:
            rows.append({**row, "label": label, "contrast": name})
    if not rows:
        raise EmptySelectionError(f"contrast {name!r} selects no rows of this suite; build it with `build_suite()`")
    return Dataset.from_list(rows, features=ds.features)


def audit_text(row: dict, name: str) -> str:
    """What the lexical baseline reads for a row of contrast ``name`` (text, plus reply for stance)."""
    spec = contrast_spec(name)
    return f"{row['text']}\n{row['response']}" if spec.includes_response else row["text"]
