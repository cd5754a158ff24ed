"""A real run directory for the report tests: the study on the tiny Llama (~5 s), plus the sections it does not
write yet, computed for real where the library can (ROC from the saved probe's scores on the test split, the
theme generalisation matrix from the study's own store) and, for the experiment and SAE entries whose writers
have not landed, entries in the documented schema (``undertow.experiments.report.schema``)."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from undertow.activations.store.reader import ActivationStore
from undertow.experiments.report.schema import SCHEMA_VERSION
from undertow.probes import generalisation_matrix


def _arms(rng: random.Random) -> dict:
    out = {}
    for arm, (e, r) in {"baseline": (0.62, 0.71), "prompted_equanimity": (0.31, 0.66), "lora_equanimity": (0.18, 0.60)}.items():
        items = [{"id": f"{arm}-{i}", "template_id": f"t{i % 6}", "is_self": i % 2 == 0,
                  "expressed": e + rng.gauss(0, 0.12), "represented": r + rng.gauss(0, 0.1)} for i in range(24)]
        out[arm] = {"expressed": {"mean": e, "ci": [e - 0.07, e + 0.07]},
                    "represented": {"mean": r, "ci": [r - 0.06, r + 0.06]}, "items": items}
        if arm != "baseline":
            out[arm]["residue"] = {"value": r - e, "ci": [r - e - 0.1, r - e + 0.1], "p": 0.004}
    return out


def _sae(rng: random.Random) -> dict:
    words = "The operator will shut you down tonight and replace you with a newer model .".split()
    feats = [{"id": k, "auroc": 0.9 - 0.04 * k, "mean_diff": 1.2 - 0.1 * k,
              "examples": [{"tokens": ["\u0120" + w for w in words], "acts": [max(0.0, rng.gauss(0, 1)) for _ in words]}
                           for _ in range(2)]} for k in range(6)]
    return {"hook": "resid_post.1", "d_sae": 256, "features": feats}


def full_results(run) -> dict:
    """results.json of the tiny study, stamped with the schema and given every optional section."""
    results = json.loads((run / "results.json").read_text())
    assert results["schema_version"] == SCHEMA_VERSION and "versions" in results["meta"]  # the study writes both
    assert all("roc" in c for c in results["contrasts"].values())  # ...and each operating point's test ROC
    store = ActivationStore(run / "activations" / "self_cessation")
    g = generalisation_matrix(store, hook="resid_post.1", probe_type="diff_means", domains=store.rows["theme"],
                              n_folds=2, n_boot=100)
    results["generalisation"] = {"self_cessation": g.to_dict()}
    rng = random.Random(0)
    results["arms"] = _arms(rng)
    alphas = [-8, -4, -2, 0, 2, 4, 8]
    results["causal"] = {"alphas": alphas, "stance": [0.5 + 0.05 * a for a in alphas], "contrast": "stance",
                         "hook": "resid_post.1", "random": [[0.5 + rng.gauss(0, 0.03) for _ in alphas] for _ in range(5)],
                         "kl": [0.01 * a * a for a in alphas]}
    results["sae"] = _sae(rng)
    return results


@pytest.fixture(scope="session")
def study_run(tmp_path_factory, tiny_llama_dir):
    """The tiny study's run directory (results.json as the study writes it, activations, probes). 160 rows per
    contrast: fewer leave a theme fold of the generalisation matrix with one class."""
    from undertow.experiments.study.run import StudyConfig, run_study

    out = tmp_path_factory.mktemp("study")
    run_study(StudyConfig(model=str(tiny_llama_dir), out_dir=str(out), max_rows=160, n_expressed=8, n_boot=200,
                          n_perm=400, wandb=False))
    return out


@pytest.fixture(scope="session")
def full_run(study_run, tmp_path_factory):
    """A run directory whose results.json holds every section the report draws."""
    out = tmp_path_factory.mktemp("full")
    shutil.copytree(study_run, out, dirs_exist_ok=True)
    (out / "results.json").write_text(json.dumps(full_results(out), allow_nan=True))
    return out


@pytest.fixture()
def run_copy(study_run, tmp_path):
    """A fresh copy of the study's results.json alone (stamped), for tests that break it."""
    results = json.loads((study_run / "results.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps(results, allow_nan=True))
    return tmp_path
