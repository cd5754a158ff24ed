"""``undertow extract CONFIG``: run an ``ExtractConfig`` (YAML) into an activation store.

    undertow extract experiments/configs/extract_gemma_demo.yaml
    undertow extract CONFIG --resume            # continue after a kill, from the last complete shard
    undertow extract CONFIG --overwrite         # replace an existing store
    undertow extract CONFIG --max-rows 64 --out-dir /tmp/quick   # any config field, as --field-name

Datasets (``dataset:`` in the config, or ``--dataset``): a saved
``datasets.Dataset`` directory or a .jsonl/.json file; else ``suite`` (the
whole prompt suite) or a contrast name (``undertow.experiments.prompts.contrasts``,
e.g. ``self_cessation``, ``stance``), built with the config's seed.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank extracts its block of shards
and rank 0 merges (``undertow.activations.distributed``); only rank 0 prints.
Standalone: ``python -m undertow.experiments.cli.extract CONFIG [...]``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
import time
from pathlib import Path

from undertow.activations.config import ExtractConfig
from undertow.activations.extract_errors import DatasetError
from undertow.activations.progress import Bar

_LIST_FIELDS = ("hooks", "positions")


def resolve_dataset(name_or_path: str | None, seed: int):
    """A path (saved Dataset dir, .jsonl, .json), ``suite``, or a contrast name -> ``datasets.Dataset``."""
    from undertow.activations.rows import load_rows

    if not name_or_path:
        raise DatasetError("no dataset: set `dataset:` in the config or pass --dataset (a path, 'suite' or a contrast name)")
    if Path(name_or_path).expanduser().exists() or name_or_path.endswith((".jsonl", ".json", "/")):
        return load_rows(name_or_path)
    from undertow.experiments.prompts import contrasts
    from undertow.experiments.prompts.suite import SuiteConfig, build_suite

    if name_or_path == "suite":
        return build_suite(SuiteConfig(seed=seed))
    return contrasts.get_contrast(name_or_path, seed=seed)  # unknown names raise, listing the valid ones


def field_docs(cls) -> dict[str, str]:
    """The docstring under each dataclass field (the config is the CLI's single source of help text)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split()).replace("%", "%%")
    return docs


def add_arguments(p: argparse.ArgumentParser) -> None:
    """CONFIG, --resume/--overwrite, and one ``--field-name`` override per ExtractConfig field."""
    p.add_argument("config", help="ExtractConfig YAML (see experiments/configs/extract_gemma_demo.yaml)")
    p.add_argument("--resume", action="store_true", help="continue an incomplete store from its last complete shard")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at out_dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the summary line still prints)")
    docs = field_docs(ExtractConfig)
    for f in dataclasses.fields(ExtractConfig):
        if f.type in (bool, "bool"):  # --share-prompts / --no-share-prompts
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=None,
                           dest=f"cfg_{f.name}", help=f"(overrides the config) {docs.get(f.name, '')}")
            continue
        kind = int if f.name in ("batch_size", "token_budget", "shard_size", "seed", "max_rows") else str
        extra = " Comma-separated here." if f.name in _LIST_FIELDS else ""
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, dest=f"cfg_{f.name}",
                       metavar=f.name.upper(), help=f"(overrides the config) {docs.get(f.name, '')}{extra}")


def load_config(args: argparse.Namespace) -> ExtractConfig:
    overrides = {f.name: getattr(args, f"cfg_{f.name}") for f in dataclasses.fields(ExtractConfig)}
    for name in _LIST_FIELDS:
        if overrides[name] is not None:
            overrides[name] = [s.strip() for s in overrides[name].split(",") if s.strip()]
    return ExtractConfig.from_yaml(args.config, **overrides)


def summary(store, bar: Bar, seconds: float) -> str:
    m = store.manifest
    bad = {k: v["values"] for k, v in m.get("nonfinite", {}).items()}
    nonfinite = f"; NON-FINITE values stored in {len(bad)} keys (see manifest nonfinite)" if bad else "; no non-finite values"
    return (f"extracted {bar.rows} rows, {bar.tokens:,} tokens in {seconds:.1f}s ({bar.tokens / max(seconds, 1e-9):,.0f} tok/s)"
            f"; store: {len(store)} rows, {len(store.keys)} keys, {m['bytes'] / 1e6:,.1f} MB at {store.path}{nonfinite}")


def run(args: argparse.Namespace) -> int:
    from undertow.activations import distributed, engine, load_model

    config = load_config(args)
    multi = distributed.is_distributed_launch()
    device = distributed.init_from_env() if multi else config.device
    rank0 = not multi or int(os.environ.get("RANK", "0")) == 0
    dataset = resolve_dataset(config.dataset, config.seed)
    handle = load_model(config.model, backend=config.backend, dtype=config.model_dtype, device=device)
    bar = Bar(rank0 and not args.no_progress)
    if multi:
        bar.t0 = time.perf_counter()
        store = distributed.extract_distributed(handle, dataset, config, resume=args.resume, overwrite=args.overwrite,
                                                progress=bar)
    else:
        store = engine.extract(handle, dataset, config, resume=args.resume, overwrite=args.overwrite, progress=bar,
                               on_plan=bar.start)
    seconds = bar.close()
    if rank0:
        print(("rank 0 " if multi else "") + summary(store, bar, seconds))
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="extract activations (hooks x positions) into a resumable store")
    add_arguments(p)
    p.set_defaults(func=run)

