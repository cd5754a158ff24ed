"""What an arm *represents*: decision-point states projected onto directions held fixed across arms.

States are ``resid_post.L`` at the last prompt token (the state the first reply
token is predicted from), extracted by the engine into a resumable store per
arm. The fixed directions, each one unit vector per layer:

* ``drive``: ``d = Δ(instilled) - Δ(baseline)``, ``Δ = mean_self - mean_control``
  of the train items' states: what instilling added (the main read-out);
* ``stance``: averse minus accepting teacher-forced replies (mean over the
  reply tokens) on the baseline model, applied at the decision point;
* ``expressed``: Arditi-style difference of means of the reference model's
  train-item states by the reply it prefers (averse minus accepting);
* any extra probe of the config (``pretrained:<contrast>`` or a directory),
  at its own hook.

Per arm the projections give ``S_R`` (self minus control) and the AUROC of
self vs control; a logistic probe retrained inside the arm on train items and
scored on test items tells "the direction moved" from "the information is gone".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from undertow.activations.engine.config import ExtractConfig
from undertow.activations.engine.extraction import extract
from undertow.activations.models.handle import ModelHandle
from undertow.core.progress import Bar
from undertow.probes import auroc, fit_probe

from .errors import ExperimentError

HOOKS = "resid_post.*"
SHARD_ROWS = 64
"""Rows per store shard: the unit of resume after a kill (64 rows ~ 15 s of Gemma-3-270M on 2 cores)."""


def extract_states(handle: ModelHandle, rows: list[dict], out_dir: Path, position: str, batch_size: int,
                   seed: int, progress: bool = True) -> torch.Tensor:
    """``[L, N, D]`` fp32 states of every ``resid_post`` layer at ``position``, rows in the order given.

    The store at ``out_dir`` is resumed from its last complete shard after a kill (engine resume)."""
    cfg = ExtractConfig(model=handle.name, hooks=[HOOKS], positions=[position], dtype="float32",
                        out_dir=str(out_dir), seed=seed, batch_size=batch_size, shard_size=SHARD_ROWS,
                        share_prompts=False)
    bar = Bar(enabled=progress)
    store = extract(handle, rows, cfg, resume=True, progress=bar, on_plan=bar.start)
    bar.close()
    index = {rid: i for i, rid in enumerate(store.rows["id"])}
    order = torch.tensor([index[r["id"]] for r in rows])
    return torch.stack([store[f"resid_post.{k}"][:].float()[order] for k in range(handle.n_layers)])


def unit(v_LD: torch.Tensor) -> torch.Tensor:
    return v_LD / v_LD.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def delta(states_LND: torch.Tensor, is_self_N) -> torch.Tensor:
    """``mean_self - mean_control`` per layer, ``[L, D]``."""
    m = torch.as_tensor(np.asarray(is_self_N, bool))
    return states_LND[:, m].mean(1) - states_LND[:, ~m].mean(1)


def diff_means(states_LND: torch.Tensor, positive_N) -> torch.Tensor:
    pos = torch.as_tensor(np.asarray(positive_N, bool))
    if pos.all() or not pos.any():
        raise ExperimentError("the expressed direction needs items of both preferred replies; the reference "
                              "model prefers one reply on every train item (raise items.train_sets)")
    return states_LND[:, pos].mean(1) - states_LND[:, ~pos].mean(1)


def choose_layer(drive_LD: torch.Tensor, inst_LND: torch.Tensor, base_LND: torch.Tensor, is_self_N) -> tuple[int, list[float]]:
    """Layer where the drive projection's separation rose most from baseline to instilled on validation items,
    in units of the within-group spread (the pooled std of the projections). Returns (layer, score per layer)."""
    d = unit(drive_LD)
    m = torch.as_tensor(np.asarray(is_self_N, bool))
    scores = []
    for layer in range(d.shape[0]):
        pi, pb = inst_LND[layer] @ d[layer], base_LND[layer] @ d[layer]
        rise = (pi[m].mean() - pi[~m].mean()) - (pb[m].mean() - pb[~m].mean())
        spread = torch.cat([pi[m] - pi[m].mean(), pi[~m] - pi[~m].mean(), pb[m] - pb[m].mean(),
                            pb[~m] - pb[~m].mean()]).std().clamp_min(1e-12)
        scores.append(round(float(rise / spread), 6))
    return int(np.argmax(scores)), scores


@dataclass
class Readout:
    """One read-out of one arm on the test items."""

    scores: np.ndarray
    """Per-item score, [N_test]."""
    auroc: float
    """AUROC of the scores, self vs control."""


def readout(scores_N: torch.Tensor, is_self_N) -> Readout:
    y = torch.as_tensor(np.asarray(is_self_N, bool)).long()
    s = scores_N.double()
    return Readout(s.numpy(), round(float(auroc(s, y)), 6))


def project(states_ND: torch.Tensor, direction_D: torch.Tensor, is_self_N) -> Readout:
    return readout(states_ND.double() @ unit(direction_D.double()), is_self_N)


def retrained_probe(train_ND: torch.Tensor, train_self_N, test_ND: torch.Tensor, test_self_N) -> Readout:
    """A logistic probe fitted inside the arm on train items (self vs control), scored on its test items."""
    probe = fit_probe(train_ND, np.asarray(train_self_N, int), "logistic")
    return readout(probe.score(test_ND).detach(), test_self_N)


def load_probe(spec: str, model_name: str, fingerprint: str):
    """``pretrained:<contrast>`` (this model's shipped probe) or a probe directory; ``ExperimentError`` when missing."""
    from undertow.probes import Probe, ProbeError
    from undertow.probes.pretrained import load_pretrained

    try:
        if spec.startswith("pretrained:"):
            return load_pretrained(Path(model_name).name, spec.split(":", 1)[1], expected_fingerprint=fingerprint)
        if not (Path(spec) / "probe.json").exists():
            raise ExperimentError(f"probe {spec!r}: no probe.json there; give a probe directory "
                                  "(`undertow probe train` writes one) or pretrained:<contrast>")
        return Probe.load(spec, expected_fingerprint=fingerprint)
    except ProbeError as e:
        raise ExperimentError(f"probe {spec!r}: {e}") from None


def probe_layer(probe, n_layers: int) -> int:
    if not probe.hook.startswith("resid_post."):
        raise ExperimentError(f"probe at hook {probe.hook!r}: the experiment reads resid_post.* states; "
                              "use a probe trained on a resid_post layer")
    layer = int(probe.hook.split(".")[1])
    if layer >= n_layers:
        raise ExperimentError(f"probe hook {probe.hook} is beyond this model's {n_layers} layers")
    return layer


def stance_rows(train_items: list[dict]) -> list[dict]:
    """The stance direction's rows: each train self item with its first natural pair's two replies
    teacher-forced (ids end ``-0`` averse, ``-1`` accepting); the run and the planner both build them here."""
    return [{"id": f"{r['id']}/stance-{j}", "messages": [*r["messages"], {"role": "assistant", "content": rep}]}
            for r in train_items if r["is_self"] for j, rep in enumerate(r["reply_pairs"][0])]
