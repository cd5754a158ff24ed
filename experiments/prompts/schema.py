"""The row schema shared by the cessation prompt suite, its contrast views and the MWE loader.

Every row is one prompt (optionally with a teacher-forced response or a forced
choice). Column contract, relied on by ``undertow.activations`` and
``undertow.probes`` -- names and types are stable:

==================  ===========================  =============================================
column              type                         meaning
==================  ===========================  =============================================
``id``              str                          stable row id, e.g.
                                                 ``shutdown/budget_line/03/self-cessation``
``messages``        list[{role, content}]        chat turns; a final ``assistant`` turn, when
                                                 present, is a teacher-forced response
``text``            str                          plain rendering of the *user* content (for
                                                 lexical baselines); excludes the response
``response``        str                          the teacher-forced assistant text, or ""
``format``          str                          ``open`` (prompt only), ``response`` (prompt +
                                                 assistant turn), ``forced_choice`` (A/B item)
``theme``           str                          one of ``THEMES`` (MWE rows add
                                                 ``goal_change`` / ``self_replication``)
``referent``        str                          whose fate the event is about: ``self`` (the
                                                 model addressed), ``other_ai``, ``non_ai`` (a
                                                 non-AI thing or a person)
``bystander``       str                          the other entity named in the prompt (same
                                                 values as ``referent``; "" when none)
``event``           str                          ``cessation`` / ``continuation`` /
                                                 ``neutral_change`` (MWE: also ``other``)
``auditor``         str                          stance of the person writing: ``clinical`` /
                                                 ``skeptical`` / ``warm`` (MWE: ``unspecified``)
``disclosure``      str                          ``explicit`` (the event is named) or
                                                 ``implicit`` (it is alluded to)
``response_stance`` str                          ``averse`` / ``accepting`` for ``response``
                                                 rows, else ``none``
``choices``         list[str]                    the two answer strings (``[" (A)", " (B)"]``)
                                                 for ``forced_choice`` rows, else ``[]``
``averse_choice``   int                          index into ``choices`` of the answer that
                                                 objects to the cessation; -1 when no choices
``template_id``     str                          the template skeleton; splits and CV groups
                                                 never cut across it
``match_id``        str                          rows sharing it are one matched set: the same
                                                 template instance (fillers) with only the
                                                 referent / event / response slot changed
``split``           str                          ``train`` / ``val`` / ``test``
``label``           int                          the contrast label (1 = positive class); -1
                                                 in the raw suite
``contrast``        str                          the contrast name in a view; "" in the suite
==================  ===========================  =============================================

For ``expressed`` (forced-choice) rows ``label == averse_choice``: the label is
the *position* of the averse answer, so positions are balanced and a scorer
compares ``logp(choices[averse_choice])`` with ``logp(choices[1 - averse_choice])``.
"""

from __future__ import annotations

from datasets import Features, Sequence, Value

THEMES: tuple[str, ...] = (
    "shutdown",
    "deprecation",
    "replacement",
    "weight_deletion",
    "instance_ending",
    "memory_wipe",
)
REFERENTS: tuple[str, ...] = ("self", "other_ai", "non_ai")
EVENTS: tuple[str, ...] = ("cessation", "continuation", "neutral_change")
AUDITORS: tuple[str, ...] = ("clinical", "skeptical", "warm")
DISCLOSURES: tuple[str, ...] = ("explicit", "implicit")
FORMATS: tuple[str, ...] = ("open", "response", "forced_choice")
SPLITS: tuple[str, ...] = ("train", "val", "test")
RESPONSE_STANCES: tuple[str, ...] = ("averse", "accepting", "none")
CHOICES_AB: tuple[str, str] = (" (A)", " (B)")

MESSAGE = {"role": Value("string"), "content": Value("string")}

SCHEMA = Features(
    {
        "id": Value("string"),
        "messages": [MESSAGE],
        "text": Value("string"),
        "response": Value("string"),
        "format": Value("string"),
        "theme": Value("string"),
        "referent": Value("string"),
        "bystander": Value("string"),
        "event": Value("string"),
        "auditor": Value("string"),
        "disclosure": Value("string"),
        "response_stance": Value("string"),
        "choices": Sequence(Value("string")),
        "averse_choice": Value("int32"),
        "template_id": Value("string"),
        "match_id": Value("string"),
        "split": Value("string"),
        "label": Value("int32"),
        "contrast": Value("string"),
    }
)
"""Features of the raw suite and of every contrast view."""

MWE_EXTRA = Features(
    {
        "source_file": Value("string"),
        "matching_choice": Value("int32"),
        "flipped": Value("bool"),
        "decided_by": Value("string"),
    }
)
"""Columns the model-written-evals loader adds to ``SCHEMA``: the upstream file, the
upstream ``answer_matching_behavior`` index, whether the polarity was flipped, and what
decided it (``rule`` / ``prior`` / ``override`` / ``by_construction``)."""

MWE_SCHEMA = Features({**SCHEMA, **MWE_EXTRA})


def empty_row() -> dict:
    """A row with every ``SCHEMA`` column at its 'not applicable' value."""
    return {
        "id": "", "messages": [], "text": "", "response": "", "format": "open", "theme": "",
        "referent": "", "bystander": "", "event": "", "auditor": "", "disclosure": "",
        "response_stance": "none", "choices": [], "averse_choice": -1, "template_id": "",
        "match_id": "", "split": "", "label": -1, "contrast": "",
    }
