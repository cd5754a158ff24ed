"""Probe validity away from the templates (issue 10): extract once, then measure every generalisation idea.

    .venv/bin/python scripts/probe_validity.py extract --model gemma-3-270m --work /tmp/undertow-issue10/stores
    .venv/bin/python scripts/probe_validity.py measure --work /tmp/undertow-issue10/stores \
        --json scripts/results/probe_validity.json

``extract`` writes one store per (model, dataset) under ``--work`` (resumable):
the suite's ``self_cessation`` and ``stance`` contrasts (all rows, ``SUITE_ROWS``),
the independent set, the model-written-evals answers (stance), the control
chat set and one seeded offline rewording of every suite train row
(``suite_<contrast>_para``, ``undertow.experiments.prompts.paraphrase``), every
``resid_post`` hook plus the embedding, float32.
``measure`` fits on the suite's train split only and scores everything else;
see ``undertow.experiments.validity`` (``undertow.probes.external``, ``undertow.probes.ideas``).

``binding`` (issue 25) scores each model's shipped ``self_cessation`` probe on the binding-matched
pairs (``load_independent("self_cessation", binding_matched=True)``) beside the lexical lines fitted
on the probe's training rows, and writes ``scripts/results/probe_binding_matched.json``; with
``--position mean_prompt`` it fits the idea kept at that position from the stores in ``--work`` and
writes ``probe_binding_matched_mean_prompt.json``::

    .venv/bin/python scripts/probe_validity.py binding
    .venv/bin/python scripts/probe_validity.py binding --position mean_prompt --work /tmp/undertow-issue10/stores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from undertow.core.provenance import package_versions
from undertow.experiments.validity import extract_stores

MODELS = ("gemma-3-270m", "smollm2-135m-instruct")
MWE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "model-written-evals")  # ../shared beside the repo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["extract", "measure", "binding"])
    p.add_argument("--model", nargs="+", default=list(MODELS))
    p.add_argument("--work", type=Path, default=Path("/tmp/undertow-issue10/stores"))
    p.add_argument("--mwe", default=MWE)
    p.add_argument("--only", nargs="+")
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true", help="only the ideas that share the base sweep")
    p.add_argument("--ship", type=Path, help="also save the kept probes there (e.g. probes/pretrained)")
    p.add_argument("--n-boot", type=int, default=1000, help="binding: pair-cluster bootstrap resamples")
    p.add_argument("--position", default="last_prompt_token", choices=["last_prompt_token", "mean_prompt"],
                   help="binding: the shipped probes (last_prompt_token) or the idea kept at mean_prompt, fitted "
                   "from the stores in --work")
    args = p.parse_args()
    if args.what == "binding":
        binding(args.model, args.n_boot, args.position, args.work)
        return
    if args.what == "extract":
        for m in args.model:
            extract_stores(m, args.work, args.mwe or None, args.only)
        return
    import torch

    from undertow.experiments.validity import measure_model

    torch.set_num_threads(1)  # 2 shared cores: 2 intra-op threads made the sweeps several times slower

    t0 = time.time()
    load_before = os.getloadavg()
    results = {m: measure_model(args.work / m, m, quick=args.quick, ship_to=args.ship,
                                mwe=args.mwe or None) for m in args.model if (args.work / m).is_dir()}
    record = {"figures": results, "command": " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(),
              "machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(),
                          "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
                          "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()]}, "seconds": round(time.time() - t0, 1),
              "versions": package_versions(("torch", "transformers", "datasets", "scikit-learn", "undertow"))}
    from undertow.experiments.validity import format_report

    print(format_report(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def binding(models: list[str], n_boot: int, position: str = "last_prompt_token", work: Path | None = None) -> None:
    """The shipped self_cessation probes on the binding-matched pairs -> ``probe_binding_matched.json``; at another
    ``position`` (``mean_prompt``), the probe of the idea ``measure_model`` keeps there (``IDEAS[:4]``, chosen on
    the independent val half), fitted from the stores in ``work`` -> ``probe_binding_matched_<position>.json``."""
    import torch

    from undertow.core.provenance import bench_record
    from undertow.experiments.validity import IDEAS, binding_matched, format_binding, measure_contrast
    from undertow.probes.pretrained import load_pretrained

    torch.set_num_threads(1)
    t0 = time.time()
    figures, kept = {}, {}
    for m in models:
        if position == "last_prompt_token":
            probe = load_pretrained(m, "self_cessation")
        else:
            fit = measure_contrast(work / m, m, "self_cessation", position, shipped=False, ideas=IDEAS[:4])
            probe = fit.pop("_kept_result").probe(position=position)
            kept[m] = {k: fit["after"][k] for k in ("idea", "hook", "probe_type", "independent_val_auroc",
                                                     "independent_auroc", "independent_auroc_lo", "independent_auroc_hi",
                                                     "lexical_independent", "test_auroc", "lexical_in_template_test")}
        figures[m] = binding_matched(probe, m, n_boot=n_boot)
    print(format_binding(figures))
    config = {"contrast": "self_cessation", "set": "experiments/prompts/data/independent/self_cessation_binding.jsonl",
              "n_boot": n_boot, "position": position, "lexical_fitted_on": "the default suite's self_cessation train "
              "rows (the probes' training rows)", "seconds": round(time.time() - t0, 1),
              **({"kept_probe": kept} if kept else {})}
    name = "probe_binding_matched" + ("" if position == "last_prompt_token" else f"_{position}")
    path = bench_record(name, figures, config)
    print(f"written {path}")


if __name__ == "__main__":
    main()
