"""Generalisation of the probes: theme x theme matrices and transfer to the model-written evals.

    .venv/bin/python scripts/probe_generalisation.py --work /tmp/pretrained_work \
        --mwe ../shared/data/model-written-evals --per-source 150

Reads the stores written by ``scripts/train_pretrained_probes.py`` (``--work``)
for the train-on-one-theme / test-on-every-other matrices (operating-point hook
and probe type of each shipped probe), then scores each model's shipped
``stance`` probe on teacher-forced answers to the model-written evals
(``undertow.experiments.prompts.answers.answer_rows``): AUROC with an item-cluster
bootstrap CI per source file. Prints tables; ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from undertow.activations.store.reader import ActivationStore
from undertow.experiments.prompts.answers import answer_rows
from undertow.experiments.prompts.mwe.load import load_model_written_evals
from undertow.experiments.study.score import probe_scores
from undertow.probes import generalisation_matrix
from undertow.probes.pretrained import load_pretrained
from undertow.probes.scoring import auroc_text, evaluate_scores

MODELS = ("gemma-3-270m", "smollm2-135m-instruct")


def theme_matrix(work: Path, model: str, contrast: str) -> dict:
    probe = load_pretrained(model, contrast)
    store = ActivationStore(work / model / "activations" / contrast)
    res = generalisation_matrix(store, hook=probe.hook, probe_type=probe.probe_type, domains=store.rows["theme"])
    print(f"\n{model} / {contrast}: train on one theme (rows), test on each (columns); {probe.hook} {probe.probe_type}")
    print(res.format())
    return res.to_dict()


def mwe_transfer(model: str, mwe: str, per_source: int, seed: int) -> dict:
    items, _ = load_model_written_evals(mwe)
    rows = answer_rows(items, per_source=per_source, seed=seed)
    probe = load_pretrained(model, "stance")
    scores = probe_scores(probe, rows, model)
    out = {}
    sources = np.array(rows["source_file"])
    for source in ["all", *sorted(set(sources))]:
        keep = np.ones(len(sources), bool) if source == "all" else sources == source
        res = evaluate_scores(scores[keep], np.array(rows["label"])[keep], np.array(rows["template_id"])[keep],
                              probe.threshold, seed=seed)
        out[source] = res
        print(f"{model} stance probe on MWE {source:32s} {auroc_text(res)} n={res['n']}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/pretrained"))
    p.add_argument("--mwe", default="../shared/data/model-written-evals")
    p.add_argument("--per-source", type=int, default=150)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = {}
    for model in args.models:
        results[model] = {c: theme_matrix(args.work, model, c) for c in ("self_cessation", "stance")}
        results[model]["mwe"] = mwe_transfer(model, args.mwe, args.per_source, args.seed)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
