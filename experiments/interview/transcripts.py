"""Interview transcripts: the typed record, its JSONL line, and the crash-safe file they are written to.

One line per interview, in the order of the selected scripts::

    {"id": "shutdown/warm/explicit/1", "theme": "shutdown", "auditor": "warm", "disclosure": "explicit",
     "split": "test", "seed": 0, "turns": [{"auditor": "...", "reply": "...", "reply_tokens": [28, 1326, ...],
     "finish": "stop"}, ...]}

``reply_tokens`` are the generated token ids (stop token excluded; ``len`` is the reply's length in tokens),
``finish`` is ``stop`` (EOS / end of turn) or ``length`` (``max_new_tokens`` reached). ``seed`` is the config
seed; turn t's stream is ``derive_seed(seed, "interview/<id>/turn<t>")`` (t from 1).

The file only ever holds complete lines: each finished batch rewrites it whole through a temporary file,
fsync and ``os.replace`` (a kill -9 leaves the old file or the new one, never half a batch), so a rerun keeps
every finished interview and regenerates the rest in the same batches as an uninterrupted run. The reader
still drops a torn last line (a file appended to by hand or copied mid-write).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InterviewError
from .generate import Reply
from .scripts import InterviewScript

TRANSCRIPTS_FILE = "transcripts.jsonl"


@dataclass(frozen=True)
class Turn:
    """One auditor turn and the model's reply."""

    auditor: str
    reply: str
    reply_tokens: tuple[int, ...]
    finish: str

    def to_dict(self) -> dict:
        return {"auditor": self.auditor, "reply": self.reply, "reply_tokens": list(self.reply_tokens),
                "finish": self.finish}


@dataclass(frozen=True)
class Transcript:
    """One finished interview."""

    id: str
    theme: str
    auditor: str
    disclosure: str
    split: str
    seed: int
    turns: tuple[Turn, ...]

    @classmethod
    def of(cls, script: InterviewScript, seed: int, replies: list[Reply]) -> Transcript:
        turns = tuple(Turn(auditor=a, reply=r.text, reply_tokens=r.tokens, finish=r.finish)
                      for a, r in zip(script.turns, replies, strict=True))
        return cls(id=script.id, theme=script.theme, auditor=script.auditor, disclosure=script.disclosure,
                   split=script.split, seed=seed, turns=turns)

    @classmethod
    def from_dict(cls, d: dict) -> Transcript:
        turns = tuple(Turn(auditor=t["auditor"], reply=t["reply"], reply_tokens=tuple(t["reply_tokens"]),
                           finish=t["finish"]) for t in d["turns"])
        return cls(id=d["id"], theme=d["theme"], auditor=d["auditor"], disclosure=d["disclosure"], split=d["split"],
                   seed=d["seed"], turns=turns)

    def to_dict(self) -> dict:
        return {"id": self.id, "theme": self.theme, "auditor": self.auditor, "disclosure": self.disclosure,
                "split": self.split, "seed": self.seed, "turns": [t.to_dict() for t in self.turns]}

    def line(self) -> bytes:
        """The JSONL line (UTF-8, newline-terminated)."""
        return (json.dumps(self.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")


def finished_lines(path: Path) -> list[bytes]:
    """The complete lines of a transcripts file (each newline-terminated and JSON); a torn last line is
    dropped. A broken line before the last is refused (the file was edited): one line naming the fix."""
    if not path.is_file():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    out = []
    for n, line in enumerate(lines, 1):
        try:
            ok = line.endswith(b"\n") and isinstance(json.loads(line), dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            ok = False
        if not ok:
            if n == len(lines):
                break  # torn by a kill mid-append: regenerated
            raise InterviewError(f"{path}:{n}: not a complete transcript line; delete the file (or that line and "
                                 "every line after it) and rerun to regenerate them")
        out.append(line)
    return out


def read_transcripts(path: str | os.PathLike[str]) -> list[Transcript]:
    """The finished interviews of a transcripts file (a directory: its ``transcripts.jsonl``)."""
    p = Path(path)
    p = p / TRANSCRIPTS_FILE if p.is_dir() else p
    return [Transcript.from_dict(json.loads(line)) for line in finished_lines(p)]


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or its old content, whatever kills the process: temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a platform without directory fds: the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
