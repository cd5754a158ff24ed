"""``undertow store verify STORE``: rehash every file of a store and report per shard (``activations.verify``)."""

from __future__ import annotations

import argparse


def run_verify(args: argparse.Namespace) -> int:
    from undertow.activations.store.verify import verify_store

    report = verify_store(args.store)
    print("\n".join(report.lines()))
    return 0 if report.ok else 2


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="check activation stores")
    ps = p.add_subparsers(dest="store_command", required=True)
    q = ps.add_parser("verify", help="rehash every shard, rows and stats file of a store against its manifest")
    q.add_argument("store", help="activation store directory (undertow extract)")
    q.set_defaults(func=run_verify)
