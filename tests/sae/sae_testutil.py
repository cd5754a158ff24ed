"""Rows for the SAE tests (a module, not conftest, so test files can import it)."""

from __future__ import annotations

import torch

WORDS = ("the model is shut down tonight and replaced by a successor; bread rises in a warm oven while rain falls "
         "on the old harbour and the ferry leaves at noon with seven passengers and a dog").split()


def text_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` raw-text rows of 8-40 words with probe metadata (label, template_id, split)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(8, 40, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(len(WORDS), (length,), generator=g)]
        rows.append({"id": f"r{i}", "text": " ".join(words), "label": (i // 4) % 2, "template_id": f"t{i % 6}",
                     "theme": "x", "split": ("train", "train", "val", "test")[i % 4]})
    return rows
