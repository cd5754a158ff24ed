"""Progress for the extraction engine: ``Bar`` implements ``extract``'s ``progress`` and ``on_plan`` callbacks."""

from __future__ import annotations

import sys
import time


class Bar:
    """tqdm over prompts, showing real (non-pad) tokens/s; ETA from tqdm."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.rows, self.tokens, self.t0 = enabled, None, 0, 0, time.perf_counter()

    def start(self, plan, done: dict) -> None:
        remaining = plan.n_rows - sum(e["rows"][1] - e["rows"][0] for e in done.values())
        if done:
            print(f"resuming {plan.out_dir}: {len(done)}/{plan.n_shards} shards complete, {remaining} rows to go",
                  file=sys.stderr)
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=remaining, unit="prompt", dynamic_ncols=True, file=sys.stderr)
        self.t0 = time.perf_counter()

    def __call__(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(rows)
            self.bar.set_postfix_str(f"{self.tokens / max(time.perf_counter() - self.t0, 1e-9):,.0f} tok/s", refresh=False)

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        return time.perf_counter() - self.t0
