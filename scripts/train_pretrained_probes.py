"""Rebuild the pretrained probes shipped in ``probes/pretrained/`` (thin launcher, issue 10 selection).

    .venv/bin/python scripts/train_pretrained_probes.py                       # both models, both contrasts
    .venv/bin/python scripts/train_pretrained_probes.py --models smollm2-135m-instruct --out /tmp/check

Extracts (resumably, into ``--work``) the suite contrast, the independent set,
the model-written-evals answers (``stance``: ``--mwe``, by default ``../shared/data/model-written-evals``
beside the repository; scored only, they hold no val half, so without them the
``stance`` probes are the same but lack their MWE figures) and the control
chat set (``undertow.experiments.validity.extract_stores``),
then runs the generalisation ideas that share one sweep (``IDEAS[:QUICK]``: choice rules, layer prior,
probe type; the others did not fit this session's CPU)
with the independent set's val half in the rule and the control chat set
setting the threshold at 1% FPR, and ships the kept idea's operating point
(highest independent *val* AUROC; the test half is only reported). Fitting
sees suite train rows only. Each evaluation set's lexical line (a bag-of-words model
fitted on the probe's train rows, scored on the set's scored rows) goes into ``probe.json``. Deterministic: ``tests/probes/test_pretrained.py``
reruns it for one model and contrast and compares with the shipped files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from undertow.experiments.validity import IDEAS, POSITION, QUICK, extract_stores, measure_contrast, ship
from undertow.probes.pretrained import pretrained_root

MODELS = ("gemma-3-270m", "smollm2-135m-instruct")
MWE = Path(__file__).resolve().parents[2] / "shared" / "data" / "model-written-evals"
"""The public model-written evals beside the repository (``../shared``); the package never reads them."""


def train(model: str, out_root: Path, work: Path, contrasts: dict[str, str] | None = None,
          mwe: str | Path | None = None) -> dict:
    """Extract, measure and save the kept probe of each contrast to ``out_root/<model>/<contrast>``
    (``mwe``: the model-written-evals directory, for ``stance``; None leaves that set out)."""
    contrasts = contrasts or dict(POSITION)
    names = ["control_chat"] + [f"{p}_{c}" for c in contrasts for p in ("independent", "suite")]
    if mwe is not None and "stance" in contrasts:
        names.append("mwe_stance")
    extract_stores(model, work, mwe=None if mwe is None else str(mwe), only=names)
    out = {}
    for contrast, position in contrasts.items():
        m = measure_contrast(work / model, model, contrast, position, shipped=False, ideas=IDEAS[:QUICK], mwe=mwe)
        ship(m.pop("_kept_result"), m, model, contrast, position, out_root)
        out[contrast] = m
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", type=Path, default=pretrained_root(), help="default: the package's probes/pretrained")
    p.add_argument("--work", type=Path, default=Path("/tmp/undertow-issue10/stores"), help="activation stores")
    p.add_argument("--contrasts", nargs="+", default=list(POSITION), choices=list(POSITION))
    p.add_argument("--mwe", type=Path, default=MWE, help="model-written-evals directory (stance's MWE set, scored "
                   "only); default: ../shared/data/model-written-evals beside the repository")
    args = p.parse_args()
    if "stance" in args.contrasts and not args.mwe.is_dir():
        print(f"--mwe {args.mwe} is not a directory: the stance probes are built without their MWE figures "
              "(the shipped ones have them); pass --mwe DIR to add them", file=sys.stderr)
        args.mwe = None
    torch.set_num_threads(1)  # small sweeps on 2 shared cores: more intra-op threads only oversubscribe
    for model in args.models:
        for name, m in train(model, args.out, args.work, {c: POSITION[c] for c in args.contrasts},
                              args.mwe).items():
            a = m["after"]
            print(f"{model}/{name}: {a['hook']} {a['probe_type']} ({a['idea']}); independent test AUROC "
                  f"{a['independent_auroc']:.3f} [{a['independent_auroc_lo']:.3f}, {a['independent_auroc_hi']:.3f}], "
                  f"flags {a['flags'] or 'none'}")


if __name__ == "__main__":
    main()
