"""One validation layer for files undertow did not write in this process (data, manifests, probe JSON, weights).

Every reader of an external file goes through these helpers, so every bad
input ends as an ``UndertowError`` subclass (the caller picks which) whose one
line names the file, the line or field, and the fix; never a ``KeyError``,
``UnicodeDecodeError`` or a library's traceback. The property tests
(``tests/activations/test_property_readers.py``) feed each reader random
bytes and random JSON shapes and assert exactly that.

- ``read_text`` / ``load_json``: UTF-8 text and JSON, with line and column.
- ``confine``: a path named inside a file resolves inside its root (no
  ``../x``, no absolute paths, no symlink out).
- ``safetensors_header``: the 8-byte length + JSON header of a safetensors
  file, checked against the file size before safetensors (Rust) parses it.
- ``expect``: one typed field check (``field must be int, got 'abc'``).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from undertow.core.errors import UndertowError

MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on the JSON header (a larger length is a crafted or corrupt file)."""
ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def read_text(path: Path, error: type[UndertowError], fix: str) -> str:
    """The file as UTF-8 text; unreadable or non-UTF-8 raises ``error`` naming the byte offset and ``fix``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}; {fix}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); "
                    "save the file as UTF-8") from None


def load_json(path: Path, error: type[UndertowError], fix: str) -> Any:
    """Parse a whole JSON file; a syntax error raises ``error`` with ``path:line:column``."""
    text = read_text(path, error, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg}); {fix}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to read; {fix}") from None


_KINDS = {int: "an integer", str: "a string", bool: "true or false", float: "a number", list: "a list",
          dict: "an object", type(None): "null"}


def expect(value: Any, kinds: type | tuple[type, ...], field: str, where: str, error: type[UndertowError],
           fix: str) -> Any:
    """``value`` if it is one of ``kinds`` (bool is never an int here; int counts as float), else ``error``."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    ok = any(isinstance(value, k) and not (isinstance(value, bool) and k in (int, float)) for k in kinds)
    ok = ok or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        want = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        raise error(f"{where}: {field} must be {want}, got {_short(value)}; {fix}")
    return value


def first_line(e: BaseException, limit: int = 160) -> str:
    """A library exception's first line (its type name when it has no message), cut to ``limit`` characters."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def confine(root: Path, rel: Any, where: str, error: type[UndertowError], fix: str) -> Path:
    """``root / rel`` when ``rel`` is a relative path that stays inside ``root`` (symlinks resolved)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise error(f"{where}: path {_short(rel)} is not a file name; {fix}")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise error(f"{where}: path {rel!r} points outside {root}; a store reads only its own files: {fix}")
    full = root / p
    try:
        inside = full.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise error(f"{where}: path {rel!r} resolves outside {root} (a symlink); a store reads only its own "
                    f"files: {fix}")
    return full


def safetensors_header(path: Path, error: type[UndertowError], fix: str) -> dict[str, dict]:
    """``{tensor name: {"dtype", "shape", "data_offsets"}}`` of a safetensors file (``__metadata__`` dropped),
    every offset checked against the file size; a crafted or truncated file raises ``error``."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            size = path.stat().st_size
            if len(head) < 8:
                raise error(f"{path}: {size} bytes, too short for a safetensors file; {fix}")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise error(f"{path}: safetensors header claims {n:,} bytes but the file has {size:,}; "
                            f"the file is truncated or not safetensors; {fix}")
            raw = f.read(n)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}; {fix}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise error(f"{path}: the safetensors header is not valid JSON; the file is corrupt, {fix}") from None
    if not isinstance(header, dict):
        raise error(f"{path}: the safetensors header is not a JSON object; {fix}")
    header.pop("__metadata__", None)
    body = size - 8 - n
    for name, spec in header.items():
        _check_tensor_entry(path, name, spec, body, error, fix)
    spans = sorted(tuple(spec["data_offsets"]) for spec in header.values())
    end = 0
    for lo, hi in spans:  # safetensors' own rule: the tensors tile the data bytes exactly, in some order
        if lo != end:
            raise error(f"{path}: tensor data overlaps or leaves a gap at byte {min(lo, end):,}; the file is "
                        f"corrupt, {fix}")
        end = hi
    if end != body:
        raise error(f"{path}: tensors cover {end:,} of the file's {body:,} data bytes; the file is corrupt, {fix}")
    return header


def _check_tensor_entry(path: Path, name: str, spec: Any, body: int, error: type[UndertowError], fix: str) -> None:
    where = f"{path}: tensor {name!r}"
    if not isinstance(spec, dict):
        raise error(f"{where} has no dtype/shape/data_offsets; the file is corrupt, {fix}")
    dtype = spec.get("dtype")
    shape, offsets = spec.get("shape"), spec.get("data_offsets")
    if dtype not in ST_DTYPES:
        raise error(f"{where} has unknown dtype {_short(dtype)}; {fix}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise error(f"{where} has shape {_short(shape)}, not a list of sizes; {fix}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) and 0 <= offsets[0] <= offsets[1] <= body):
        raise error(f"{where} has data_offsets {_short(offsets)} outside the file's {body:,} data bytes; {fix}")
    if offsets[1] - offsets[0] != math.prod(shape) * ST_DTYPES[dtype]:
        raise error(f"{where}: shape {shape} x {dtype} does not fill data_offsets {offsets}; the file is corrupt, {fix}")
