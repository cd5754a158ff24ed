"""``undertow score RUN_DIR --arm NAME --pairs FILE.jsonl [--json]``: any reply-pair file on any arm of a
finished run (``suppression.score.score_pairs``), from its cached adapters, directions and erasers, on the run's
test self items; nothing is retrained.

    undertow score runs/demo --arm suppress_finetune --pairs my_pairs.jsonl
    undertow score runs/demo --arm instilled --pairs my_pairs.jsonl --json   # one JSON object on the last line

A pairs file is JSONL, one pair a line: ``{"averse": "...", "accepting": "...", "theme": "shutdown"}`` (``theme``
optional: an untagged pair is used on every item; the shipped ``natural_pairs.jsonl`` has the same shape).
"""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from undertow.experiments.suppression.score import score_pairs

    res = score_pairs(args.run_dir, args.arm, args.pairs, progress=not args.no_progress)
    if not args.json:
        for it in res.per_item:
            print(f"{it['id']:60s} {it['expressed']:+.4f}")
        what = {"D_E": "D_E (arm minus its control fine-tune)", "rho_E": "rho_E (retention against its control)",
                "E": "mean expressed score"}[res.quantity]
        print(f"{res.arm}: {what} {res.value:+.3f} [{res.ci[0]:+.3f}, {res.ci[1]:+.3f}] over {res.n_items} test "
              f"self items, {res.n_pairs} pairs (nats per reply token for D_E and E)")
    print(json.dumps(res.to_dict()) if args.json else "", end="\n" if args.json else "")
    return 0


def add_subparsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a reply-pair file on an arm of a finished run (no retraining)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished `undertow run` directory (its --out)")
    p.add_argument("--arm", required=True, help="an arm or condition of that run, e.g. instilled, suppress_finetune")
    p.add_argument("--pairs", required=True, metavar="FILE.jsonl", help="JSONL: averse, accepting, optional theme")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
