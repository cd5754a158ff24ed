"""``run_interviews(cfg)``: every selected script interviewed, batch by batch, into ``<out_dir>/transcripts.jsonl``.

Batches are consecutive runs of ``batch_size`` scripts in selection order; within a batch all interviews
advance turn by turn together (``generate.generate_replies``: one ``generate`` call per turn). After each batch
the transcripts file is rewritten atomically (``transcripts.write_atomic``), so a killed run resumes at the
first unfinished interview and writes the same bytes as an uninterrupted one. ``interview.json`` records the
config (all but ``out_dir`` and ``batch_size``), the model fingerprint and the scripts; a rerun into a
directory made with another config is refused rather than mixing two sets of transcripts. Under ``torchrun`` the
batches are split over the ranks (``sharded.py``); a killed sharded run is resumed here too (``shard.fold_prefix``).
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from undertow.core.seeds import derive_seed

from .config import InterviewConfig, check_against_model, conversation
from .errors import InterviewError
from .generate import Reply, ReplyGenerator, generate_replies
from .scripts import InterviewScript
from .shard import fold_prefix, remove_parts
from .transcripts import TRANSCRIPTS_FILE, Transcript, finished_lines, write_atomic

META_FILE = "interview.json"


def turn_seed(seed: int, script_id: str, turn: int) -> int:
    """The seed of interview ``script_id``'s reply to auditor turn ``turn`` (from 1)."""
    return derive_seed(seed, f"interview/{script_id}/turn{turn}")


def interview_batch(handle, batch: tuple[InterviewScript, ...], cfg: InterviewConfig,
                    system: str | None = None, generator: ReplyGenerator | None = None) -> list[Transcript]:
    """The interviews of one batch, turn by turn: turn t of every script that has one is one ``generate``
    (``system``: a system turn before each conversation, a prompted arm's; ``generator``: the generation
    backend, default ``generate_replies`` on ``handle``)."""
    generate = generator if generator is not None else partial(generate_replies, handle)
    replies: list[list[Reply]] = [[] for _ in batch]
    for t in range(max(len(s.turns) for s in batch)):
        active = [k for k, s in enumerate(batch) if len(s.turns) > t]
        out = generate(
            [conversation(batch[k], [r.text for r in replies[k]], system) for k in active],
            [turn_seed(cfg.seed, batch[k].id, t + 1) for k in active], cfg.sampling,
            where=[f"{batch[k].id} turn {t + 1}" for k in active])
        for k, reply in zip(active, out, strict=True):
            replies[k].append(reply)
    return [Transcript.of(s, cfg.seed, r) for s, r in zip(batch, replies, strict=True)]


def _scripts_digest(interviews: tuple[InterviewScript, ...]) -> str:
    text = json.dumps([[s.id, s.split, list(s.turns)] for s in interviews], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_meta(cfg: InterviewConfig, interviews: tuple[InterviewScript, ...]) -> dict:
    """What ``interview.json`` records (the model fingerprint aside) and a resumed run must match."""
    return {"config": cfg.recorded(), "scripts_sha256": _scripts_digest(interviews),
            "scripts": [s.id for s in interviews]}


def check_resumable(out: Path, meta: dict) -> bool:
    """True when ``out`` already holds this run's ``interview.json``; refuse another config's directory."""
    meta_path, lines = out / META_FILE, out / TRANSCRIPTS_FILE
    if not meta_path.is_file():
        if lines.is_file():
            raise InterviewError(f"{lines} exists without {META_FILE}; delete it or choose another out_dir")
        return False
    old = json.loads(meta_path.read_text(encoding="utf-8"))
    # a field the record predates (``generation_backend``) matches when this run asks for its default
    old["config"] = {**InterviewConfig().recorded(), **old.get("config", {})}
    for key in ("config", "scripts_sha256"):
        if old.get(key) != meta[key]:
            what = key
            if key == "config":
                what = next((f"config field {k!r} ({old[key].get(k)!r} there, {v!r} now)"
                             for k, v in meta[key].items() if old[key].get(k) != v), "config")
            raise InterviewError(f"{out} holds interviews of another run ({what} differs); choose another out_dir "
                                 "or delete it to start again")
    return True


def check_model(out: Path, handle) -> None:
    """Refuse to resume ``out`` with another model than the one its ``interview.json`` records."""
    fingerprint = getattr(handle, "fingerprint", None)
    old = json.loads((out / META_FILE).read_text(encoding="utf-8")).get("model_fingerprint")
    if old != fingerprint:
        raise InterviewError(f"{out} holds interviews of model {old}, this one is {fingerprint}; choose another "
                             "out_dir or delete it to start again")


def write_meta(out: Path, meta: dict, handle) -> None:
    """``interview.json``: ``meta`` and the model's fingerprint."""
    write_atomic(out / META_FILE, (json.dumps({**meta, "model_fingerprint": getattr(handle, "fingerprint", None)},
                                              indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _load(cfg: InterviewConfig):
    from undertow.activations import load_model

    return load_model(cfg.model, dtype=cfg.model_dtype, device=cfg.device)


def run_interviews(cfg: InterviewConfig, handle=None, progress: bool = True, system: str | None = None,
                   generator: ReplyGenerator | None = None) -> Path:
    """Run (or resume) the interviews of ``cfg``; returns the path of ``transcripts.jsonl``. ``handle``: a
    loaded model (default: ``cfg.model`` loaded here, only when interviews remain to be generated; an arm of a
    run: ``arm.load_arm``, its ``system`` prompt passed here and its intervention held open by the caller).
    ``generator``: the generation backend (default: HF ``generate_replies`` on ``handle``; ``cfg``'s
    ``vllm`` backend: ``vllm_backend.VllmGenerator``, built by the caller, called only if replies remain).
    Raises ``InterviewError`` (one line, the fix) on a bad scripts file, an empty selection, a context the
    replies cannot fit, or an ``out_dir`` holding another config's interviews."""
    interviews = cfg.interviews()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / TRANSCRIPTS_FILE
    meta = run_meta(cfg, interviews)
    resuming = check_resumable(out, meta)
    if resuming:  # a sharded run's part files (shard.py): their finished prefix first
        fold_prefix(out, TRANSCRIPTS_FILE, [s.id for s in interviews])
    done = finished_lines(path) if resuming else []
    for k, line in enumerate(done):
        if k >= len(interviews) or json.loads(line)["id"] != interviews[k].id:
            raise InterviewError(f"{path}:{k + 1}: not interview {k + 1} of this selection; delete the file and "
                                 "rerun")
    if len(done) == len(interviews):
        return path
    handle = handle if handle is not None else _load(cfg)
    check_against_model(cfg, handle, interviews[len(done):], system)
    if resuming:
        check_model(out, handle)
    else:
        remove_parts(out, TRANSCRIPTS_FILE)  # left by a run whose interview.json is gone: not this run's
        write_meta(out, meta, handle)
    data = b"".join(done)  # a torn last line is not kept: the next write replaces the whole file
    bar = tqdm(total=len(interviews), initial=len(done), desc="interviews", unit="interview", disable=not progress)
    with bar:
        for start in range(len(done), len(interviews), cfg.batch_size):
            batch = interviews[start:start + cfg.batch_size]
            data += b"".join(t.line() for t in interview_batch(handle, batch, cfg, system, generator))
            write_atomic(path, data)
            bar.update(len(batch))
    return path
