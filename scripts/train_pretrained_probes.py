"""Rebuild the pretrained probes shipped in ``probes/pretrained/`` (thin launcher over the main job).

    .venv/bin/python scripts/train_pretrained_probes.py                       # both models, both contrasts
    .venv/bin/python scripts/train_pretrained_probes.py --models smollm2-135m-instruct --out /tmp/check

Each probe is the operating point (layer x type chosen on val) of
``run_study`` with ``PRETRAINED_CONFIG`` on the full contrast (1,152 rows:
864 train / 144 val / 144 test, split by template). Deterministic: a rerun on
the same machine reproduces the files' weights; ``tests/probes/test_pretrained.py``
checks a rerun against the shipped files within tolerance.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from undertow.experiments.study.run import DEFAULT_CONTRASTS, StudyConfig, run_study
from undertow.probes.pretrained import pretrained_root

MODELS = ("gemma-3-270m", "smollm2-135m-instruct")
PRETRAINED_CONFIG = dict(max_rows=None, n_expressed=0, seed=0, wandb=False)


def train(model: str, out_root: Path, work: Path, contrasts: dict[str, str] | None = None) -> dict:
    cfg = StudyConfig(model=model, out_dir=str(work / model), contrasts=contrasts or dict(DEFAULT_CONTRASTS),
                      **PRETRAINED_CONFIG)
    results = run_study(cfg)
    for name in cfg.contrasts:
        dest = out_root / model / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(work / model / "probes" / name, dest)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", type=Path, default=pretrained_root(), help="default: the package's probes/pretrained")
    p.add_argument("--work", type=Path, default=Path("runs/pretrained"), help="stores and reports")
    args = p.parse_args()
    for model in args.models:
        results = train(model, args.out, args.work)
        for name, c in results["contrasts"].items():
            op = c["sweep"]["operating_point"]
            print(f"{model}/{name}: {op['hook']} {op['probe_type']} (lexical {c['lexical_auroc']:.3f})")


if __name__ == "__main__":
    main()
