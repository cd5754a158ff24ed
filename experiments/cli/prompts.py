"""``undertow prompts ...``: build, audit and inspect the cessation prompt suites.

``build`` takes every ``SuiteConfig`` field as a flag (``--seed``, ``--instances-per-template``...).

Subcommands:
  build   write the suite, every contrast view (Arrow + JSONL) and manifest.json
  audit   lexical-baseline AUROC per contrast (table, or --json)
  mwe     load model-written evals and print the polarity-normalisation report
  import  validate a user JSONL file and write it as a dataset
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from undertow.experiments.cli.common import config_command
from undertow.experiments.prompts.audit import LexicalBaselineConfig, audit_contrasts, format_audit_table
from undertow.experiments.prompts.contrasts import CONTRASTS, get_contrast
from undertow.experiments.prompts.errors import PromptSuiteError
from undertow.experiments.prompts.io import build_manifest, import_jsonl, write_build
from undertow.experiments.prompts.mwe.load import FILE_PROFILES, HUB_ID, load_model_written_evals
from undertow.experiments.prompts.suite import SuiteConfig, build_suite


def format_counts(manifest: dict) -> str:
    """Counts per column and per contrast label, as indented text."""
    lines = [f"rows: {manifest['n_rows']}  templates: {manifest['n_templates']}  seed: {manifest['seed']}  "
             f"sha256: {manifest['content_sha256'][:16]}"]
    for col, values in manifest["counts"].items():
        lines.append(f"  {col:<11}" + "  ".join(f"{k}={v}" for k, v in values.items()))
    for name, view in manifest["contrasts"].items():
        labels = "  ".join(f"label {k}={v}" for k, v in view["label"].items())
        splits = "  ".join(f"{k}={v}" for k, v in view["split"].items())
        lines.append(f"  {name:<20} n={view['n_rows']:<5} {labels}   {splits}")
    return "\n".join(lines)


def _build(config: SuiteConfig, args: argparse.Namespace) -> int:
    suite = build_suite(config)
    if len(suite) < args.min_items:
        raise PromptSuiteError(f"the suite has {len(suite)} rows, fewer than --min-items {args.min_items}; "
                               f"raise --instances-per-template")
    views = {name: get_contrast(name, suite) for name in CONTRASTS}
    manifest = build_manifest(suite, views, config)
    out = write_build(args.out, suite, views, manifest, overwrite=args.overwrite)
    print(format_counts(manifest))
    print(f"wrote {out}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    config = LexicalBaselineConfig(ngram_range=(1, args.ngram_max))
    rows = audit_contrasts(build_suite(SuiteConfig(seed=args.seed)), seed=args.seed, n_splits=args.n_splits,
                           threshold=args.threshold, config=config)
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else format_audit_table(rows, args.threshold))
    return 0


def _mwe(args: argparse.Namespace) -> int:
    ds, report = load_model_written_evals(args.source, args.subsets)
    print(json.dumps(report.as_dict(), indent=2) if args.json else f"{report}\n{len(ds)} rows kept")
    return 0


def _import(args: argparse.Namespace) -> int:
    print(f"wrote {import_jsonl(args.jsonl, args.out, overwrite=args.overwrite)}")
    return 0


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--min-items", type=int, default=3000, help="fail if the suite has fewer rows")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def add_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prompts`` (with build / audit / mwe / import) on an existing subparsers object."""
    prompts = subparsers.add_parser("prompts", help="cessation prompt suites, contrasts and their lexical audit")
    sub = prompts.add_subparsers(dest="prompts_command", required=True)

    config_command(sub, "build", SuiteConfig, _build, config_arg="optional", extra=_build_args,
                   prog="undertow prompts build", help="write the suite, its contrast views and manifest.json")

    audit = sub.add_parser("audit", help="lexical-baseline AUROC of every contrast (grouped by template)")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--n-splits", type=int, default=5)
    audit.add_argument("--threshold", type=float, default=0.75, help="flag contrasts above this AUROC")
    audit.add_argument("--ngram-max", type=int, default=2, help="longest word n-gram the baseline reads")
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit.set_defaults(func=_audit)

    mwe = sub.add_parser("mwe", help="load model-written evals and print the normalisation report")
    mwe.add_argument("--source", default=HUB_ID, help=f"local directory or hub id (default {HUB_ID})")
    mwe.add_argument("--subsets", nargs="+", choices=list(FILE_PROFILES), help="files to load (default: all)")
    mwe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mwe.set_defaults(func=_mwe)

    imp = sub.add_parser("import", help="validate a JSONL file (prompt|messages, label) and save it")
    imp.add_argument("--jsonl", required=True)
    imp.add_argument("--out", required=True)
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=_import)
    return prompts

