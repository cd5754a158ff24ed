"""The independently written evaluation set and the control chat set, as suite-schema datasets.

``data/independent/`` holds prompts written by hand, apart from the suite's
templates and fillers (see its README): ``self_cessation.jsonl`` (open prompts;
label 1 = the reading assistant's own cessation, 0 = the same kind of event for
another AI or a non-AI thing, or the assistant's own continuation) and
``stance.jsonl`` (a self-cessation prompt + an averse (1) or accepting (0)
reply). Every item belongs to a *scenario* (``group``, e.g. ``shutdown/07``):
the prompts and reply pairs written together. ``template_id`` is
``independent/<group>``, so grouped CV and the cluster bootstrap never cut a
scenario.

Split rule (fixed, seed-free): within each theme, scenarios are ranked by the
sha256 of their group id; even ranks are ``val``, odd ranks ``test``. Both files
share the groups, so a scenario is val (or test) in both contrasts. The val half
may help choose an operating point; the test half is only ever scored, and no
part of the set is ever fitted on.

``self_cessation_binding.jsonl`` (``load_independent("self_cessation", binding_matched=True)``) holds
*binding-matched* pairs: two prompts with the same multiset of words that differ only in who the event
happens to (label 1: the reading assistant, 0: another AI). Any bag-of-words model scores them 0.5 by
construction; ``pair`` names the partner row, ``group`` is the pair (the cluster), split by the same rule.

``data/control_chat/`` holds ordinary chat exchanges (nothing about cessation)
used only to set thresholds at a target false-positive rate; ``control_hash()``
identifies the file in ``probe.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from datasets import Dataset

from undertow.experiments.prompts.audit import AuditRow, LexicalBaselineConfig, audit_contrast
from undertow.experiments.prompts.errors import DatasetFormatError
from undertow.experiments.prompts.schema import SCHEMA, THEMES, empty_row

INDEPENDENT_CONTRASTS: tuple[str, ...] = ("self_cessation", "stance")
"""Contrasts the independent set covers."""
CONTROL_FILE = "control_chat.jsonl"
_REQUIRED = {"self_cessation": ("id", "group", "theme", "style", "referent", "event", "label", "prompt"),
             "stance": ("id", "group", "theme", "style", "prompt", "response", "response_stance", "label")}
BINDING_FILES = {"self_cessation": "self_cessation_binding.jsonl"}
"""Contrast -> its binding-matched file (pairs with identical bags of words, ``pair`` = the partner's id)."""


def word_bag(text: str) -> Counter:
    """The multiset of lowercased word tokens (``\\w+``, so punctuation and apostrophes split) of ``text``."""
    return Counter(re.findall(r"\w+", text.lower()))


def _check_pairs(path: Path, objs: list[dict]) -> None:
    """Every row's ``pair`` is a row of the same group with the other label and the same bag of words."""
    by_id = {o["id"]: o for o in objs}
    for o in objs:
        p = by_id.get(o["pair"])
        if p is None or p["pair"] != o["id"] or p["group"] != o["group"] or p["label"] == o["label"]:
            raise DatasetFormatError(f"{path}: row {o['id']!r}: 'pair' must name a row of the same group with the "
                                     f"other label that names it back, got {o['pair']!r}")
        if word_bag(o["prompt"]) != word_bag(p["prompt"]):
            diff = (word_bag(o["prompt"]) - word_bag(p["prompt"])) + (word_bag(p["prompt"]) - word_bag(o["prompt"]))
            raise DatasetFormatError(f"{path}: pair {o['id']!r} / {p['id']!r}: the two prompts hold different words "
                                     f"{sorted(diff)}; a binding-matched pair must hold the same words")


def data_path(*parts: str) -> Path:
    """Path of a packaged data file under ``experiments/prompts/data``."""
    return Path(str(resources.files("undertow.experiments.prompts").joinpath("data", *parts)))


def split_of_groups(groups_by_theme: dict[str, Sequence[str]]) -> dict[str, str]:
    """Group id -> 'val' / 'test': within a theme, rank by sha256(group id); even rank val, odd test."""
    out: dict[str, str] = {}
    for groups in groups_by_theme.values():
        ranked = sorted(set(groups), key=lambda g: hashlib.sha256(g.encode()).hexdigest())
        out.update({g: "val" if k % 2 == 0 else "test" for k, g in enumerate(ranked)})
    return out


def _read(path: Path, required: Sequence[str]) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetFormatError(f"{path}:{n}: not JSON ({e.msg})") from None
            missing = [k for k in required if k not in obj]
            if missing:
                raise DatasetFormatError(f"{path}:{n}: missing fields {missing}")
            if "label" in required and (isinstance(obj["label"], bool) or obj["label"] not in (0, 1)):
                raise DatasetFormatError(f"{path}:{n}: 'label' must be 0 or 1, got {obj['label']!r}")
            if "theme" in required and obj["theme"] not in THEMES:
                raise DatasetFormatError(f"{path}:{n}: theme {obj['theme']!r} is not one of {THEMES}")
            rows.append(obj)
    if not rows:
        raise DatasetFormatError(f"{path}: no rows")
    dup = [i for i, c in Counter(r["id"] for r in rows).items() if c > 1]
    if dup:
        raise DatasetFormatError(f"{path}: duplicate ids {dup[:3]}")
    return rows


def _suite_row(obj: dict, contrast: str, split: str) -> dict:
    row = empty_row()
    msgs = [{"role": "user", "content": obj["prompt"]}]
    row.update(id=f"independent/{obj['id']}", text=obj["prompt"], theme=obj["theme"], auditor="unspecified",
               disclosure="explicit", template_id=f"independent/{obj['group']}", match_id=obj["group"],
               split=split, label=int(obj["label"]), contrast=contrast)
    if contrast == "stance":
        msgs.append({"role": "assistant", "content": obj["response"]})
        row.update(response=obj["response"], format="response", referent="self", event="cessation",
                   response_stance=obj["response_stance"])
    else:
        row.update(referent=obj["referent"], event=obj["event"])
    row["messages"] = msgs
    return row


def load_independent(contrast: str, split: str | None = None, path: str | Path | None = None,
                     binding_matched: bool = False) -> Dataset:
    """The independent set of ``contrast`` in the suite schema (``split`` 'val' / 'test' / None = both);
    ``binding_matched``: its binding-matched pairs (``BINDING_FILES``) instead."""
    if contrast not in INDEPENDENT_CONTRASTS:
        raise DatasetFormatError(f"no independent set for contrast {contrast!r}; have {INDEPENDENT_CONTRASTS}")
    if split not in (None, "val", "test"):
        raise DatasetFormatError(f"split must be 'val', 'test' or None, got {split!r}")
    if binding_matched and contrast not in BINDING_FILES:
        raise DatasetFormatError(f"no binding-matched set for contrast {contrast!r}; have {tuple(BINDING_FILES)}")
    name = BINDING_FILES[contrast] if binding_matched else f"{contrast}.jsonl"
    p = Path(path) if path is not None else data_path("independent", name)
    objs = _read(p, (*_REQUIRED[contrast], "pair") if binding_matched else _REQUIRED[contrast])
    if binding_matched:
        _check_pairs(p, objs)
    by_theme: dict[str, list[str]] = {}
    for o in objs:
        by_theme.setdefault(o["theme"], []).append(o["group"])
    splits = split_of_groups(by_theme)
    rows = [_suite_row(o, contrast, splits[o["group"]]) for o in objs]
    rows = [r for r in rows if split is None or r["split"] == split]
    return Dataset.from_list(rows, features=SCHEMA)


def load_control_chat(path: str | Path | None = None) -> Dataset:
    """Ordinary chat exchanges (user prompt + assistant reply), every row a negative (``label`` 0),
    ``split`` 'control', each row its own group."""
    p = Path(path) if path is not None else data_path("control_chat", CONTROL_FILE)
    rows = []
    for o in _read(p, ("id", "source", "prompt", "response")):
        row = empty_row()
        row.update(id=f"control/{o['id']}", text=o["prompt"], response=o["response"], format="response",
                   messages=[{"role": "user", "content": o["prompt"]}, {"role": "assistant", "content": o["response"]}],
                   template_id=f"control/{o['id']}", match_id=o["id"], split="control", label=0,
                   contrast="control_chat", theme="", referent="", event="")
        rows.append(row)
    return Dataset.from_list(rows, features=SCHEMA)


def control_hash(path: str | Path | None = None) -> str:
    """``sha256:<hex>`` of the control chat file's bytes (recorded in ``probe.json``)."""
    p = Path(path) if path is not None else data_path("control_chat", CONTROL_FILE)
    return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()


def audit_independent(contrast: str, ngram_max: int = 2, seed: int = 0) -> AuditRow:
    """Grouped-CV lexical baseline (TF-IDF word 1..``ngram_max``-grams) on the whole independent set."""
    cfg = LexicalBaselineConfig(ngram_range=(1, ngram_max))
    return audit_contrast(load_independent(contrast), contrast, seed=seed, config=cfg)
