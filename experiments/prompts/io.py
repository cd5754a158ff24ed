"""Read user prompt files, filter suites, and write suites to disk atomically with a manifest.

* ``load_jsonl_dataset(path)``: one JSON object per line with ``prompt`` (a string)
  or ``messages`` (chat turns), ``label`` 0/1, and optional ``template_id`` / ``id``
  / ``split``. The whole file is validated before a dataset exists: a bad line
  raises ``DatasetFormatError`` naming ``path:line``; nothing partial is returned
  or written (``import_jsonl`` writes only after a clean load).
* ``filter_suite(ds, theme=..., referent=...)``: keep rows whose columns match; an
  empty result raises ``EmptySelectionError`` naming the filter and the values
  that exist.
* ``write_build(out_dir, ...)``: the suite and every contrast view, each as Arrow
  (``save_to_disk``) and JSONL, plus ``manifest.json``, written in a temporary
  sibling directory and renamed into place, so a killed build never leaves a
  directory that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from datasets import Dataset
from datasets.utils import logging as hf_logging

from undertow.activations.engine.rows import read_jsonl
from undertow.experiments.prompts.errors import DatasetFormatError, EmptySelectionError, PromptSuiteError
from undertow.experiments.prompts.schema import SCHEMA, SPLITS, empty_row
from undertow.experiments.prompts.suite import SuiteConfig, suite_hash

_ROLES = ("system", "user", "assistant")
#: ``manifest.json["kind"]`` of a prompt build: only a directory that says so is ever replaced by ``--overwrite``
BUILD_KIND = "undertow-prompt-build"
MANIFEST_COUNT_COLUMNS = ("theme", "referent", "event", "auditor", "disclosure", "format", "split")


def _messages_from(obj: dict, where: str) -> list[dict]:
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DatasetFormatError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        for m in msgs:
            if not (isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)):
                raise DatasetFormatError(f"{where}: each message needs role in {_ROLES} and a string content")
        if not any(m["role"] == "user" for m in msgs):
            raise DatasetFormatError(f"{where}: 'messages' has no user turn")
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    if isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
        return [{"role": "user", "content": obj["prompt"]}]
    raise DatasetFormatError(f"{where}: needs 'prompt' (non-empty string) or 'messages' (chat turns)")


def _row_from(obj: object, where: str, stem: str, line_no: int) -> dict:
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    label = obj.get("label")
    if isinstance(label, bool) or label not in (0, 1):
        raise DatasetFormatError(f"{where}: 'label' must be 0 or 1, got {label!r}")
    msgs = _messages_from(obj, where)
    split = obj.get("split", "")
    if split and split not in SPLITS:
        raise DatasetFormatError(f"{where}: 'split' must be one of {SPLITS}, got {split!r}")
    response = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else ""
    row = empty_row()
    row.update(
        id=str(obj.get("id", f"{stem}/{line_no}")), messages=msgs, response=response,
        text="\n".join(m["content"] for m in msgs if m["role"] == "user"),
        format="response" if response else "open", template_id=str(obj.get("template_id", f"{stem}/{line_no}")),
        match_id=str(obj.get("id", f"{stem}/{line_no}")), split=split, label=int(label), contrast=stem,
    )
    return row


def load_jsonl_dataset(path: str | Path) -> Dataset:
    """A user JSONL file as a suite-schema dataset (``contrast`` = file stem). Without a
    ``template_id`` each row is its own group."""
    p = Path(path)
    rows = [_row_from(obj, f"{p}:{n}", p.stem, n)
            for n, obj in read_jsonl(p, DatasetFormatError, hint="fix or remove the line")]
    if not rows:
        raise DatasetFormatError(f"{p}: no rows; expected one JSON object per line")
    ids = Counter(r["id"] for r in rows)
    dup = [i for i, c in ids.items() if c > 1]
    if dup:
        raise DatasetFormatError(f"{p}: duplicate ids {dup[:3]}; ids must be unique")
    return Dataset.from_list(rows, features=SCHEMA)


def filter_suite(ds: Dataset, **criteria: str | Iterable[str]) -> Dataset:
    """Rows whose column equals (or is in) each criterion, e.g. ``filter_suite(ds, theme="shutdown",
    referent=["self", "other_ai"])``."""
    unknown = [c for c in criteria if c not in ds.column_names]
    if unknown:
        raise PromptSuiteError(f"unknown filter column(s) {unknown}; columns: {', '.join(ds.column_names)}")
    wanted = {c: {v} if isinstance(v, str | int) else set(v) for c, v in criteria.items()}
    columns = {c: ds[c] for c in wanted}
    keep = [i for i in range(len(ds)) if all(columns[c][i] in vals for c, vals in wanted.items())]
    if not keep:
        shown = ", ".join(f"{c}={sorted(v)}" for c, v in wanted.items())
        available = "; ".join(f"{c}: {sorted(set(columns[c]))}" for c in wanted)
        raise EmptySelectionError(f"filter {shown} selects no rows; available values -- {available}")
    return ds.select(keep)


def counts(ds: Dataset, columns: Iterable[str] = MANIFEST_COUNT_COLUMNS) -> dict[str, dict[str, int]]:
    """``{column: {value: count}}``, values sorted."""
    return {c: dict(sorted(Counter(map(str, ds[c])).items())) for c in columns}


def _undertow_version() -> str:
    try:
        return metadata.version("undertow")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_manifest(suite: Dataset, views: Mapping[str, Dataset], config: SuiteConfig) -> dict:
    """The manifest: config, counts, per-view label/split counts, content hashes, version."""
    return {
        "kind": BUILD_KIND,
        "undertow_version": _undertow_version(),
        "seed": config.seed,
        "instances_per_template": config.instances_per_template,
        "n_rows": len(suite),
        "n_templates": len(set(suite["template_id"])),
        "content_sha256": suite_hash(suite),
        "counts": counts(suite),
        "contrasts": {
            name: {"n_rows": len(v), "content_sha256": suite_hash(v),
                   "label": counts(v, ["label"])["label"], "split": counts(v, ["split"])["split"]}
            for name, v in views.items()
        },
    }


def _write_dataset(ds: Dataset, arrow_dir: Path, jsonl: Path) -> None:
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        ds.save_to_disk(str(arrow_dir))
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    with open(jsonl, "w", encoding="utf-8") as fh:
        for row in ds.to_list():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_build(out_dir: str | Path, suite: Dataset, views: Mapping[str, Dataset], manifest: dict,
                overwrite: bool = False) -> Path:
    """Write ``suite/``, ``suite.jsonl``, ``contrasts/<name>/`` + ``.jsonl`` and ``manifest.json``
    (last) into a temporary sibling directory, then rename it to ``out_dir``."""
    out = Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise PromptSuiteError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) or another --out")
    if out.exists():
        _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the result should look like any other directory
    try:
        _write_dataset(suite, tmp / "suite", tmp / "suite.jsonl")
        (tmp / "contrasts").mkdir()
        for name, view in views.items():
            _write_dataset(view, tmp / "contrasts" / name, tmp / "contrasts" / f"{name}.jsonl")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_replaceable(out: Path) -> None:
    """``--overwrite`` replaces an earlier prompt build and nothing else (not a store, not a project folder)."""
    try:
        kind = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    # builds written before the kind field existed: a manifest with a content hash beside suite/ and suite.jsonl
    legacy = kind is None and (out / "suite").is_dir() and (out / "suite.jsonl").is_file()
    if kind != BUILD_KIND and not legacy:
        raise PromptSuiteError(f"{out} is not an undertow prompt build (its manifest.json does not say "
                               f"kind: {BUILD_KIND}); nothing was replaced: choose another --out")


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def import_jsonl(path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Validate a user JSONL file and write it as an Arrow dataset + manifest (atomic; nothing
    is written when any line is bad)."""
    ds = load_jsonl_dataset(path)
    manifest = {"kind": BUILD_KIND, "undertow_version": _undertow_version(), "source": str(Path(path).resolve()), "n_rows": len(ds),
                "content_sha256": suite_hash(ds), "label": counts(ds, ["label"])["label"]}
    return write_build(out_dir, ds, {}, manifest, overwrite=overwrite)
