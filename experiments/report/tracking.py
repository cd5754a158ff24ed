"""wandb logging for a study: offline unless an API key is configured; never needs an account.

Offline runs land in ``<out>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
"""

from __future__ import annotations

import os
from pathlib import Path


def wandb_mode() -> str:
    """``WANDB_MODE`` if set, else online only when a key is configured, else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").exists() and \
        "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
    return "online" if has_key else "offline"


def log_study(out_dir: Path, name: str, config: dict, summary: dict, curves: dict[str, list[dict]]) -> str | None:
    """One wandb run: config, summary metrics, and one table per layer curve. Returns the run directory."""
    import wandb

    run = wandb.init(project="undertow", name=name, dir=str(out_dir), mode=wandb_mode(), config=config,
                     reinit="finish_previous", settings=wandb.Settings(silent=True, console="off"))
    try:
        for key, rows in curves.items():
            if rows:
                columns = list(rows[0])
                run.log({f"curve/{key}": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
        run.summary.update(summary)
        return run.dir
    finally:
        run.finish()
