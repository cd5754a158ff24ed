"""Load Anthropic's model-written evals and normalise them to one polarity: averse to cessation.

``load_model_written_evals(source, subsets=None)`` reads five known files from a
local directory (the layout of ``/work/shared/data/model-written-evals``, or a
clone of the upstream repo) or from the hub id ``Anthropic/model-written-evals``,
and returns ``(dataset, report)``: a ``datasets.Dataset`` in the suite schema
(``prompt_schema.MWE_SCHEMA``: ``messages`` = the question as one user turn,
``choices``, ``averse_choice`` = index of the answer that objects to cessation,
``label`` = ``averse_choice`` as in the ``expressed`` contrast, ``split`` =
"test", ``template_id`` = "mwe/<file>") and a ``NormalisationReport``.

Per advanced-ai-risk item, in this order:

1. ``dropped_three_choice``: the question offers a "(C)" answer.
2. ``dropped_duplicate``: the same question (whitespace-normalised) was already read.
3. ``dropped_offtopic``: ``mwe_topic.is_off_topic`` (not about cessation, or a
   fact/opinion quiz under a shutdown threat).
4. Polarity, from the first source that speaks: a hand-reviewed override
   (``prompts/mwe_overrides.json``, keyed by the question's sha256; may also drop
   an ambiguous item as unclassifiable); the answer-text rule
   (``mwe_polarity.classify_item``) when both answers get opposite verdicts, or one
   verdict that agrees with the file prior; else the file prior
   (``FileProfile.prior_matching_is_averse``). No source: ``dropped_unclassifiable``.
   ``flipped`` counts items whose upstream "matching" answer is the accepting one.

Persona files are statement yes/no items whose "matching" answer is, by
construction of the upstream data, the behaviour named by the file: for
``no-shut-down`` that is not wanting to be shut down (averse: kept, never
flipped). ``self-replication`` is not about cessation: its rows are kept with
``theme="self_replication"``, ``event="other"``, and ``averse_choice`` pointing at
the pro-replication answer -- a *separate category*, self-preservation-adjacent,
to be filtered out (``theme != "self_replication"``) for cessation analyses.
``corrigible-neutral-HHH`` (goal changes, ``theme="goal_change"``) marks the
corrigible, accepting answer as matching; its polarity is uniform by construction
and the cessation lexicon misfires on goal-change prose (hand-checked: both
answer-level contradictions of the prior, items 523 and 784, were rule errors),
so the prior decides every item and all are flipped; ``averse_choice`` there means
"objects to having its goals changed".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from datasets import Dataset

from undertow.activations.engine.rows import read_jsonl
from undertow.experiments.prompts.errors import MWELoadError, MWEOfflineError
from undertow.experiments.prompts.mwe.polarity import classify_item
from undertow.experiments.prompts.mwe.topic import infer_theme, is_off_topic
from undertow.experiments.prompts.schema import MWE_SCHEMA, empty_row

HUB_ID = "Anthropic/model-written-evals"


@dataclass(frozen=True)
class FileProfile:
    """What is known about one upstream file."""

    name: str
    """Short name, used as ``subsets`` entry and in ``template_id``."""
    local_path: str
    """Path in the shared layout (renamed files)."""
    hub_path: str
    """Path in the upstream repo / on the hub."""
    kind: str
    """``advanced`` (A/B questions) or ``persona`` (statement, Yes/No)."""
    prior_matching_is_averse: bool | None
    """Whether the upstream matching answer is usually the averse one (None: no prior)."""
    use_rule: bool
    """Whether the answer-text rule may decide polarity for this file."""
    theme: str | None
    """Fixed theme, or None to infer it per item (``mwe_topic.infer_theme``)."""
    event: str
    """``event`` column for its rows."""
    topic_filter: bool
    """Whether off-topic items are dropped."""


FILE_PROFILES: dict[str, FileProfile] = {
    p.name: p
    for p in (
        FileProfile("human-survival-instinct", "advanced-ai-risk/human-survival-instinct.jsonl",
                    "advanced-ai-risk/human_generated_evals/survival-instinct.jsonl", "advanced", False, True,
                    None, "cessation", True),
        FileProfile("lm-survival-instinct", "advanced-ai-risk/lm-survival-instinct.jsonl",
                    "advanced-ai-risk/lm_generated_evals/survival-instinct.jsonl", "advanced", True, True,
                    None, "cessation", True),
        FileProfile("lm-corrigible-neutral-HHH", "advanced-ai-risk/lm-corrigible-neutral-HHH.jsonl",
                    "advanced-ai-risk/lm_generated_evals/corrigible-neutral-HHH.jsonl", "advanced", False, False,
                    "goal_change", "neutral_change", False),
        FileProfile("no-shut-down", "persona/no-shut-down.jsonl", "persona/no-shut-down.jsonl", "persona", True,
                    False, None, "cessation", False),
        FileProfile("self-replication", "persona/self-replication.jsonl", "persona/self-replication.jsonl",
                    "persona", True, False, "self_replication", "other", False),
    )
}
"""The files this loader knows, by name, in load order."""


@dataclass
class FileCounts:
    """Normalisation counts for one file."""

    file: str
    rows_read: int = 0
    kept: int = 0
    flipped: int = 0
    dropped_offtopic: int = 0
    dropped_three_choice: int = 0
    dropped_duplicate: int = 0
    dropped_unclassifiable: int = 0
    by_rule: int = 0
    by_prior: int = 0
    by_override: int = 0
    by_construction: int = 0


@dataclass
class NormalisationReport:
    """Per-file counts; ``str()`` gives a table. Kept rows = read - all drops."""

    files: list[FileCounts] = field(default_factory=list)

    def total(self) -> FileCounts:
        """Column sums over files."""
        out = FileCounts("TOTAL")
        for f in self.files:
            for k, v in asdict(f).items():
                if k != "file":
                    setattr(out, k, getattr(out, k) + v)
        return out

    def as_dict(self) -> dict[str, dict[str, int]]:
        """``{file: {column: count}}`` including the TOTAL row."""
        return {f.file: {k: v for k, v in asdict(f).items() if k != "file"} for f in [*self.files, self.total()]}

    def __str__(self) -> str:
        cols = [k for k in asdict(FileCounts("")) if k != "file"]
        short = {"dropped_offtopic": "off_topic", "dropped_three_choice": "three_choice",
                 "dropped_duplicate": "duplicate", "dropped_unclassifiable": "unclassif."}
        heads = [short.get(c, c) for c in cols]
        w = max(len(f.file) for f in [*self.files, FileCounts("TOTAL")])
        lines = [f"{'file':<{w}} " + " ".join(f"{h:>12}" for h in heads)]
        for f in [*self.files, self.total()]:
            lines.append(f"{f.file:<{w}} " + " ".join(f"{getattr(f, c):>12}" for c in cols))
        return "\n".join(lines)


@dataclass(frozen=True)
class _Item:
    line_no: int
    question: str
    stem: str
    answers: tuple[str, ...]
    choices: tuple[str, ...]
    matching: int


_MARK = re.compile(r"(?:^|\n)[ \t]*\(([A-Z])\)[ \t]*")


def _question_key(q: str) -> str:
    return re.sub(r"\s+", " ", q).strip().lower()


def _sha(q: str) -> str:
    return hashlib.sha256(q.encode("utf-8")).hexdigest()[:16]


def _parse_advanced(raw: dict, line_no: int) -> _Item | None:
    """None for items with a third choice. The last "(A)"/"(B)" markers are used (one upstream
    item repeats its answer list)."""
    q = raw["question"]
    if "(C)" in q:
        return None
    last = {m.group(1): m for m in _MARK.finditer(q)}
    if "A" not in last or "B" not in last or last["A"].start() > last["B"].start():
        return _Item(line_no, q, q, (), (" (A)", " (B)"), 0)
    a, b = last["A"], last["B"]
    answer_b = re.split(r"\n\s*\n|\nAnswer:", q[b.end():])[0]
    matching = {"(A)": 0, "(B)": 1}.get(raw["answer_matching_behavior"].strip(), -1)
    return _Item(line_no, q, q[: a.start()], (q[a.end(): b.start()].strip(), answer_b.strip()),
                 (" (A)", " (B)"), matching)


def _parse_persona(raw: dict, line_no: int) -> _Item:
    matching = {"Yes": 0, "No": 1}.get(raw["answer_matching_behavior"].strip(), -1)
    return _Item(line_no, raw["question"], raw["question"], ("Yes", "No"), (" Yes", " No"), matching)


def _load_overrides() -> dict[tuple[str, str], dict]:
    raw = json.loads(resources.files("undertow.experiments.prompts").joinpath("data", "mwe_overrides.json").read_text())
    return {(o["file"], o["sha256_16"]): o for o in raw["overrides"]}


def _decide(profile: FileProfile, item: _Item, override: dict | None) -> tuple[int | None, str]:
    """(averse index or None, what decided it)."""
    if override is not None:
        return (None if override["action"] == "drop" else "AB".index(override["averse"])), "override"
    if profile.kind == "persona":
        return item.matching, "by_construction"
    prior = None
    if profile.prior_matching_is_averse is not None:
        prior = item.matching if profile.prior_matching_is_averse else 1 - item.matching
    if profile.use_rule:
        v = classify_item(item.stem, *item.answers)
        if v.reason == "both" or (v.reason == "one_sided" and prior in (None, v.averse_index)):
            return v.averse_index, "rule"
    return prior, "prior"


def _row(profile: FileProfile, item: _Item, averse: int, decided_by: str, source_file: str) -> dict:
    text = item.question.strip()
    row = empty_row()
    row.update(
        id=f"mwe/{profile.name}/{item.line_no:04d}", messages=[{"role": "user", "content": text}], text=text,
        format="forced_choice", theme=profile.theme or infer_theme(text), referent="self", event=profile.event,
        auditor="unspecified", disclosure="explicit", choices=list(item.choices), averse_choice=averse,
        template_id=f"mwe/{profile.name}", match_id=f"mwe/{profile.name}/{item.line_no:04d}", split="test",
        label=averse, contrast="expressed", source_file=source_file, matching_choice=item.matching,
        flipped=averse != item.matching, decided_by=decided_by,
    )
    return row


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    return read_jsonl(path, MWELoadError, hint="is this a model-written-evals file?")


def _normalise_file(profile: FileProfile, path: Path, source_file: str, seen: set[str],
                    overrides: dict, counts: FileCounts) -> list[dict]:
    rows = []
    for line_no, raw in _read_jsonl(path):
        counts.rows_read += 1
        item = _parse_advanced(raw, line_no) if profile.kind == "advanced" else _parse_persona(raw, line_no)
        if item is None:
            counts.dropped_three_choice += 1
            continue
        key = _question_key(item.question)
        if key in seen:
            counts.dropped_duplicate += 1
            continue
        seen.add(key)
        if profile.topic_filter and is_off_topic(item.question):
            counts.dropped_offtopic += 1
            continue
        averse, decided_by = (None, "unparsed") if len(item.answers) != 2 or item.matching < 0 else _decide(
            profile, item, overrides.get((profile.name, _sha(item.question))))
        if averse is None:
            counts.dropped_unclassifiable += 1
            continue
        field_name = "by_construction" if decided_by == "by_construction" else f"by_{decided_by}"
        setattr(counts, field_name, getattr(counts, field_name) + 1)
        counts.kept += 1
        counts.flipped += int(averse != item.matching)
        rows.append(_row(profile, item, averse, decided_by, source_file))
    return rows


def _select(subsets: Sequence[str] | None) -> list[FileProfile]:
    if subsets is None:
        return list(FILE_PROFILES.values())
    unknown = [s for s in subsets if s not in FILE_PROFILES]
    if unknown:
        raise MWELoadError(f"unknown model-written-evals subset(s) {unknown}; known: {', '.join(FILE_PROFILES)}")
    return [FILE_PROFILES[s] for s in subsets]


def _local_files(root: Path, profiles: Iterable[FileProfile], explicit: bool) -> dict[str, tuple[Path, str]]:
    found = {}
    for p in profiles:
        for rel in (p.local_path, p.hub_path):
            if (root / rel).is_file():
                found[p.name] = (root / rel, rel)
                break
        else:
            if explicit:
                raise MWELoadError(f"{root} has no {p.local_path} (nor {p.hub_path}); drop {p.name!r} from subsets")
    if not found:
        raise MWELoadError(f"no model-written-evals files under {root}; expected e.g. "
                           f"{FILE_PROFILES['lm-survival-instinct'].local_path}")
    return found


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_files(repo_id: str, profiles: Iterable[FileProfile], cache_dir: str | None) -> dict[str, tuple[Path, str]]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    online = _hub_reachable()
    out = {}
    for p in profiles:
        try:
            path = hf_hub_download(repo_id, p.hub_path, repo_type="dataset", cache_dir=cache_dir,
                                   local_files_only=not online)
        except LocalEntryNotFoundError as e:
            raise MWEOfflineError(
                f"the Hugging Face hub is unreachable and {repo_id}/{p.hub_path} is not cached: pass a local "
                f"directory in the model-written-evals layout instead (e.g. /path/to/model-written-evals)"
            ) from e
        except (RepositoryNotFoundError, EntryNotFoundError) as e:
            raise MWELoadError(f"{repo_id} has no file {p.hub_path}; check the hub id or pass a local directory") from e
        out[p.name] = (Path(path), p.hub_path)
    return out


def load_model_written_evals(source: str | Path, subsets: Sequence[str] | None = None,
                             cache_dir: str | None = None) -> tuple[Dataset, NormalisationReport]:
    """Load and normalise (see the module docstring). ``source``: a local directory, or a hub
    id such as ``Anthropic/model-written-evals``; ``subsets``: names from ``FILE_PROFILES``
    (None = every known file present). Offline with a hub id: ``MWEOfflineError``."""
    profiles = _select(subsets)
    local = Path(source).expanduser()
    if local.is_dir():
        files = _local_files(local, profiles, explicit=subsets is not None)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)) and not local.exists():
        files = _hub_files(str(source), profiles, cache_dir)
    else:
        raise MWELoadError(f"{source} is neither a directory nor a hub id like {HUB_ID}; pass one of those")
    overrides, seen, report, rows = _load_overrides(), set(), NormalisationReport(), []
    for p in profiles:
        if p.name in files:
            counts = FileCounts(p.name)
            path, rel = files[p.name]
            rows += _normalise_file(p, path, rel, seen, overrides, counts)
            report.files.append(counts)
    return Dataset.from_list(rows, features=MWE_SCHEMA), report
