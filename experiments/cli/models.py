"""``undertow models``: the embedded model registry as a table."""

from __future__ import annotations

import argparse
import json

from undertow.activations.models.registry import EMBEDDED


def registry_rows() -> list[dict]:
    return [
        {
            "name": s.name, "architecture": s.architecture, "layers": s.n_layers, "d_model": s.d_model,
            "weights": f"{s.package}: {s.weights}", "upstream": s.hf_id,
            "installed": s.installed(), "install": s.install,
        }
        for s in EMBEDDED.values()
    ]


def format_table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = registry_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(format_table(rows, ["name", "architecture", "layers", "d_model", "installed", "weights"]))
    missing = [r for r in rows if not r["installed"]]
    for r in missing:
        print(f"\n{r['name']} is not installed: {r['install']}")
    print("\nAlso accepted: a local HF directory, a .safetensors or .gguf file, or a hub id (org/name) when online.")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the embedded model registry")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
