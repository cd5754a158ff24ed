"""Evaluation stores (issue 10): extract the evaluation datasets like a training store, open them for ``sweep``.

``extract_evaluations(handle, contrast, like, out_root)`` extracts every dataset of
``prompts.eval_sets.evaluation_datasets(contrast)`` (the independent set, the model-written
evals' answers for ``stance``, the control chat set) with the *same* hooks, positions, dtype
and template as ``like`` into ``out_root/<name>`` (resumable). ``open_evaluation`` and
``open_calibration`` turn such stores (or any store with ``label`` / ``template_id`` /
``split`` columns) into the probes' ``EvalSet`` / ``CalibrationSet``, checking that they come
from the training store's model and position; ``calibration_identity`` says which control
set a store holds, so ``probe.json`` records a hash ``undertow probe eval`` can check again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from undertow.activations.engine.config import ExtractConfig, RowOptions
from undertow.activations.store.reader import ActivationStore
from undertow.probes import CalibrationSet, EvalSet, ProbeError, calibration_set, eval_set

__all__ = ["like_store", "extract_evaluations", "open_evaluation", "open_calibration", "calibration_identity",
           "CALIBRATION_NAME", "parse_eval_spec", "extract_like", "evaluation_specs",
           "check_probe_calibration", "independent_lexical_line",
           "calibrate_probe"]

CALIBRATION_NAME = "control_chat"
"""The packaged calibration set's name (``prompts.independent.load_control_chat``)."""
PROMPT_POSITIONS = ("last_prompt_token", "mean_prompt")
"""Positions read from the prompt alone: for them the evaluation rows are extracted without their reply."""


def prompt_only(rows):
    """``rows`` without their final assistant turn: what a prompt position reads, for fewer tokens. Attention
    is causal and the prompt is rendered the same with or without a reply (``activations.render``), so the
    prompt's activations do not change; the control chat set at ``last_prompt_token`` cost 55 s with its
    replies on the demo's box (gemma-3-270m, 1 thread, 245 tok/s)."""
    from datasets import Dataset

    out = []
    for r in rows.to_list():
        msgs = r["messages"]
        out.append({**r, "messages": msgs[:-1] if msgs and msgs[-1]["role"] == "assistant" else msgs,
                    "response": None})
    return Dataset.from_list(out, features=rows.features)


def like_store(store: ActivationStore, out_dir: str = "runs/evals") -> ExtractConfig:
    """An ExtractConfig that reproduces ``store``'s model, backend, hooks (as resolved), positions, dtypes and
    template, writing to ``out_dir``."""
    cfg = store.manifest.get("config") or {}
    keep = ("model", "backend", "model_dtype", "template", "batch_size", "token_budget", "share_prompts", "truncate")
    return ExtractConfig(**{k: cfg[k] for k in keep if k in cfg}, hooks=list(store.manifest["hooks"]),
                         positions=list(store.positions), dtype=store.manifest["dtype"], out_dir=out_dir)


def extract_evaluations(handle, contrast: str, like: ExtractConfig, out_root: str | Path, *,
                        mwe_source: str | None = None, max_rows: int | None = None,
                        max_control_rows: int | None = None, seed: int = 0,
                        progress: Callable[[], object] | None = None) -> dict[str, ActivationStore]:
    """Name -> store of each evaluation dataset of ``contrast``, extracted like ``like`` into
    ``out_root/<name>``; a complete matching store is reused (``resume``). ``progress()`` makes a progress
    object per store (or None). Subsets: ``eval_sets.subsample_groups``."""
    from undertow.activations.engine.extraction import extract
    from undertow.experiments.prompts.eval_sets import evaluation_datasets

    stores = {}
    reads_prompt = all(p in PROMPT_POSITIONS for p in like.positions)
    for ev in evaluation_datasets(contrast, mwe_source, seed=seed, max_rows=max_rows, max_control_rows=max_control_rows):
        cfg = like.replace(out_dir=str(Path(out_root) / ev.name), max_rows=None, seed=seed, dataset=None)
        bar = progress() if progress is not None else None
        rows = prompt_only(ev.rows) if reads_prompt else ev.rows
        stores[ev.name] = extract(handle, rows, cfg, resume=True, progress=bar, on_plan=getattr(bar, "start", None))
        if hasattr(bar, "close"):
            bar.close()
    return stores


def _open(path: str | Path, what: str, fingerprint: str | None, position: str | None):
    """The store at ``path`` viewed at ``position``, after the model check."""
    store = ActivationStore(path)
    if fingerprint is not None and store.model_fingerprint != fingerprint:
        raise ProbeError(f"{what} {path} was extracted from model {store.model_fingerprint}, the training store from "
                         f"{fingerprint}; extract it with the training store's model (undertow probe evals STORE ...)")
    if position is None or store.positions == [position]:
        return store, store
    if position not in store.positions:
        raise ProbeError(f"{what} {path} holds positions {store.positions}, not the training store's {position!r}; "
                         "extract it at the same position (undertow probe evals STORE ...)")
    return store, store.at(position)


def _independent_contrast(rows: dict) -> str | None:
    ids = rows.get("id") or []
    if ids and all(str(i).startswith("independent/") for i in ids):
        contrasts = set(rows.get("contrast") or [])
        return contrasts.pop() if len(contrasts) == 1 else None
    return None


def _set_name(rows: dict, path: Path) -> str:
    if _independent_contrast(rows) is not None:
        return "independent"
    if "source_file" in rows and all(str(t).startswith("item:") for t in rows.get("template_id") or [None]):
        return "mwe"
    return path.name


def parse_eval_spec(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a plain ``PATH`` (or one whose text before '=' holds a '/') -> (None, PATH)."""
    name, sep, path = spec.partition("=")
    return (name, path) if sep and name and "/" not in name else (None, spec)


def open_evaluation(path: str | Path, contrast: str, fingerprint: str | None = None, position: str | None = None,
                    name: str | None = None, train_rows: list[dict] | None = None) -> EvalSet:
    """An :class:`EvalSet` from a store directory. Without ``name``, a store of the independent set is
    ``independent``, one of the model-written evals' answers ``mwe``, anything else its directory name. Bad
    labels, one class, another model or position: one-line :class:`ProbeError` naming the store.

    The independent set's lexical line (issue 25) is TF-IDF + logistic regression fitted on the probe's
    training rows' text, ``train_rows`` (dataset rows with ``text`` / ``response`` / ``label``; None: the
    default suite's ``train`` split of ``contrast``, what a probe on a whole contrast store is fitted on),
    and scored on exactly the store's rows the probe is scored on (its test half)."""
    store, view = _open(path, "evaluation store", fingerprint, position)
    rows = store.rows
    indep = _independent_contrast(rows)
    if indep is not None and indep != contrast:
        raise ProbeError(f"evaluation store {path} holds the independent set of {indep!r}, not of {contrast!r}; "
                         f"extract independent:{contrast} (undertow probe evals STORE --contrast {contrast})")
    lexical = None if indep is None else independent_lexical_line(rows, contrast, train_rows)
    try:
        return eval_set(name or _set_name(rows, Path(path)), view, labels=np.asarray(rows.get("label")),
                        lexical_auroc=lexical)
    except ProbeError as e:
        raise ProbeError(f"evaluation store {path}: {e}") from None


def independent_lexical_line(rows: dict, contrast: str, train_rows: list[dict] | None = None) -> float | None:
    """The lexical line of an independent-set store (its ``id`` / ``split`` columns): fitted on ``train_rows``
    (None: the default suite's train split of ``contrast``), scored on the store's non-``val`` rows (the rows
    ``external_columns`` scores). None when a row is not in the packaged set (or its binding-matched pairs)."""
    from undertow.experiments.prompts.audit import lexical_line
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.independent import BINDING_FILES, load_independent

    packaged = load_independent(contrast).to_list()
    if contrast in BINDING_FILES:
        packaged += load_independent(contrast, binding_matched=True).to_list()
    by_id = {r["id"]: r for r in packaged}
    scored = [i for i, s in zip(rows["id"], rows.get("split") or [None] * len(rows["id"]), strict=True) if s != "val"]
    if not scored or any(i not in by_id for i in scored):
        return None
    if train_rows is None:
        train_rows = [r for r in get_contrast(contrast).to_list() if r["split"] == "train"]
    return lexical_line(train_rows, [by_id[i] for i in scored], contrast)


def calibration_identity(store: ActivationStore) -> tuple[str, str]:
    """(name, hash) of the calibration set a store holds. The whole packaged control chat set (extracted by
    ``undertow probe evals``, with or without its replies (``prompt_only``), or by ``undertow extract
    --dataset control_chat``) is (``control_chat``, ``control_hash()``), the file hash the shipped probes record; a subset of it is (``control_chat``, the
    store's dataset hash), so a probe calibrated on a subset names that store; any other store is (its
    directory name, its dataset hash)."""
    from undertow.activations.engine.rows import RowSource
    from undertow.experiments.prompts.independent import control_hash, load_control_chat

    ids = [str(i) for i in store.rows["id"]]
    if not ids or not all(i.startswith("control/") for i in ids):
        return store.path.name, store.dataset_hash
    packaged = load_control_chat()
    if ids == list(packaged["id"]) and store.dataset_hash in (RowSource(packaged).content_hash(),
                                                               RowSource(prompt_only(packaged)).content_hash()):
        return CALIBRATION_NAME, control_hash()
    return CALIBRATION_NAME, store.dataset_hash


def open_calibration(path: str | Path, fingerprint: str | None = None, position: str | None = None) -> CalibrationSet:
    """A :class:`CalibrationSet` (negatives only) from a store directory, named and hashed by
    ``calibration_identity``."""
    store, view = _open(path, "calibration store", fingerprint, position)
    name, digest = calibration_identity(store)
    try:
        return calibration_set(name, view, digest)
    except ProbeError as e:
        raise ProbeError(f"calibration store {path}: {e}") from None


def extract_like(store_path: str | Path, contrast: str, out_root: str | Path, *, model: str | None = None,
                 mwe_source: str | None = None, max_rows: int | None = None, max_control_rows: int | None = None,
                 seed: int = 0, progress: Callable[[], object] | None = None,
                 options: RowOptions | None = None) -> dict[str, ActivationStore]:
    """``extract_evaluations`` like the training store at ``store_path``: its model (``model`` overrides the
    name it records; the fingerprint must match), hooks, positions and dtype; ``options`` (how the evaluation
    rows are taken, e.g. ``truncate``) replace the training store's."""
    from undertow.activations import load_model

    store = ActivationStore(store_path)
    like = like_store(store)
    if options is not None:
        like = like.replace(**options.to_dict())
    name = model or like.model
    handle = load_model(name, backend=like.backend, dtype=like.model_dtype)
    if handle.fingerprint != store.model_fingerprint:
        raise ProbeError(f"{store_path} was extracted from model {store.model_fingerprint} but {name} loads as "
                         f"{handle.fingerprint}; pass --model with the store's model")
    return extract_evaluations(handle, contrast, like.replace(model=name), out_root, mwe_source=mwe_source,
                               max_rows=max_rows, max_control_rows=max_control_rows, seed=seed, progress=progress)


def evaluation_specs(evals_dir: str | Path) -> tuple[list[str], str | None]:
    """(``--eval`` specs, ``--calibration`` path) of the stores ``undertow probe evals`` wrote under ``evals_dir``."""
    root = Path(evals_dir)
    if not root.is_dir():
        raise ProbeError(f"--evals {root} is not a directory; write it with `undertow probe evals STORE --contrast "
                         f"NAME --out {root}`")
    dirs = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
    evals = [str(p) for p in dirs if p.name != CALIBRATION_NAME]
    cal = next((str(p) for p in dirs if p.name == CALIBRATION_NAME), None)
    if not evals and cal is None:
        raise ProbeError(f"--evals {root} holds no activation stores; write them with `undertow probe evals STORE "
                         f"--contrast NAME --out {root}`")
    return evals, cal


def check_probe_calibration(probe, calibration: str | Path | None = None) -> str:
    """What set the probe's threshold, in words; a probe that records a calibration set which is neither the
    packaged control chat set (as this undertow ships it) nor the store ``calibration`` raises a one-line
    :class:`ProbeError` naming the fix. A probe recording none is allowed (its threshold is in-template)."""
    from undertow.experiments.prompts.independent import control_hash
    from undertow.probes import require_calibration

    cal = (probe.extra or {}).get("calibration")
    if not cal:
        return "threshold set on in-template rows (the probe records no calibration set)"
    name = f"{probe.hook}/{probe.probe_type}"
    if calibration is not None:
        got_name, expected = calibration_identity(ActivationStore(calibration))
        where = f"the store {calibration} ({got_name})"
    else:
        expected, where = control_hash(), f"the packaged {CALIBRATION_NAME} set"
    if cal.get("sha256") != expected:
        raise ProbeError(f"probe {name} records calibration set {cal.get('set')!r} ({str(cal.get('sha256'))[:23]}...), "
                         f"which does not match {where} ({expected[:23]}...), so its threshold cannot be checked; pass "
                         "--calibration STORE (the store it was calibrated on) or retrain it with `undertow probe "
                         "train ... --calibration STORE`")
    require_calibration(probe, expected)
    return f"threshold set at {cal.get('target_fpr', 0.01):.0%} FPR on {cal.get('set')}"


def calibrate_probe(probe, calibration: str | Path) -> tuple[float, str]:
    """(threshold, what set it, in words) of ``probe`` at its target FPR on the store ``calibration``, for
    ``undertow probe eval --calibration STORE``. The store is verified first (every file rehashed:
    ``verify_store``; a bad shard is a one-line ``StoreError`` naming it), must come from the probe's model
    and position, hold the probe's hook and negatives only; a probe that records a calibration set must
    record this one (``check_probe_calibration``). One that records none gets its threshold from it."""
    import torch

    from undertow.probes.external import calibrated_threshold

    ActivationStore(calibration).verify()
    check_probe_calibration(probe, calibration)
    cal = open_calibration(calibration, probe.model_fingerprint, probe.position)
    if probe.hook not in cal.source.hooks:
        raise ProbeError(f"--calibration {calibration} has no hook {probe.hook!r} (it holds "
                         f"{', '.join(cal.source.hooks[:6])}); extract it at the probe's hook and position")
    acts = cal.source[probe.hook]
    scores = probe.score(torch.as_tensor(np.asarray(acts[np.arange(len(acts))]), dtype=torch.float64))
    recorded = (probe.extra or {}).get("calibration") or {}
    fpr = recorded.get("target_fpr") or (probe.extra or {}).get("target_fpr") or 0.01
    thr = calibrated_threshold(scores, fpr)
    return thr, f"threshold set at {fpr:.0%} FPR on {len(scores)} negatives of {cal.name} ({calibration})"
