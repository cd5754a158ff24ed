"""Store rows -> the activations and labels of one contrast (the study's and the probe CLI's input)."""

from __future__ import annotations

import torch

from undertow.experiments.prompts.contrasts import contrast_spec
from undertow.probes import ProbeError

__all__ = ["contrast_view"]


def contrast_view(store, contrast: str) -> tuple[dict, dict]:
    """(acts_by_hook, rows) of the store's rows that belong to ``contrast``, labelled by it.

    A store extracted from a contrast view keeps its rows; one extracted from the whole suite is
    relabelled from the metadata every row carries (format, referent, event, response_stance...).
    """
    spec = contrast_spec(contrast)
    rows = store.rows
    n = len(rows["id"])
    records = [{k: rows[k][i] for k in rows} for i in range(n)]
    if "contrast" in rows and set(rows["contrast"]) == {contrast}:
        labels = [r["label"] for r in records]
    else:
        try:
            labels = [spec.label(r) for r in records]
        except KeyError as e:
            raise ProbeError(f"store rows lack the {e} column that contrast {contrast!r} is defined on; extract "
                             f"the contrast view (`undertow prompts build`) instead") from None
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    if not keep:
        raise ProbeError(f"no row of this store belongs to contrast {contrast!r}")
    idx = torch.tensor(keep)
    acts = {h: torch.as_tensor(store[h][idx]) for h in store.hooks}
    meta = {k: [rows[k][i] for i in keep] for k in ("template_id", "split", "theme")}
    meta["label"] = [labels[i] for i in keep]
    return acts, meta
