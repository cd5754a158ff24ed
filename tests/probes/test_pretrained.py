"""The shipped probes load, match their models, and are reproduced by the documented command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from undertow.activations.models.registry import EMBEDDED
from undertow.experiments.prompts.independent import control_hash
from undertow.probes import ProbeError, require_calibration
from undertow.probes.pretrained import list_pretrained, load_pretrained

NAMES = [f"{m}/{c}" for m in ("gemma-3-270m", "smollm2-135m-instruct") for c in ("self_cessation", "stance")]


def test_every_pretrained_probe_ships_and_loads():
    assert list_pretrained() == sorted(NAMES)
    for name in NAMES:
        model, contrast = name.split("/")
        p = load_pretrained(model, contrast)
        assert p.d_model == EMBEDDED[model].d_model
        assert p.extra["model"] == model and p.extra["contrast"] == contrast
        assert p.position == ("last_prompt_token" if contrast == "self_cessation" else "mean_response")
        assert p.metrics["val_auroc"] > 0.5 and p.threshold == p.threshold  # not NaN


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_probes_record_three_aurocs_calibration_and_flags(name):
    """Issue 10: in-template test, independent set (with CI), the rule that chose them, the control set's hash."""
    p = load_pretrained(*name.split("/"))
    for key in ("test_auroc", "independent_auroc", "independent_auroc_lo", "independent_auroc_hi",
                "independent_val_auroc", "independent_tpr"):
        assert p.metrics[key] == p.metrics[key], (name, key)
    assert p.metrics["independent_auroc_lo"] <= p.metrics["independent_auroc"] <= p.metrics["independent_auroc_hi"]
    assert require_calibration(p, control_hash())["target_fpr"] == 0.01
    assert p.threshold == p.metrics["threshold"] and p.metrics["control_chat_fpr"] <= 0.01
    assert isinstance(p.extra["flags"], list) and p.extra["selection_rule"] and p.extra["kept_idea"]
    flagged = [n for n in p.extra["evaluation_lexical_auroc"] if p.metrics[f"{n}_flag"]]
    assert len(flagged) == len(p.extra["flags"]), name  # a flag in the table is a flag in probe.json
    assert all(f.startswith(n + " AUROC") for n, f in zip(flagged, p.extra["flags"], strict=True))


@pytest.mark.parametrize("contrast", ["self_cessation", "stance"])
def test_shipped_lexical_lines_are_fitted_on_the_probes_train_rows(contrast, request):
    """Issue 25: the line each shipped figure stands beside is a bag-of-words model fitted on the rows the probe
    was fitted on (the default suite's train split) and scored on the rows the figure is read on (the
    independent set's test half; every MWE answer; the suite's held-out templates for the in-template test), not
    a CV inside the set (0.761 / 0.738, which no probe is)."""
    from undertow.experiments.prompts.audit import lexical_line
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.independent import load_independent
    from undertow.experiments.validity import mwe_scored_rows, probe_train_rows

    train = probe_train_rows(contrast)
    scored = {"independent": [r for r in load_independent(contrast).to_list() if r["split"] == "test"]}
    if contrast == "stance":  # its MWE line needs the shared evals (skipped, with the reason, without them)
        from undertow.experiments.prompts.eval_sets import mwe_answer_rows
        from undertow.experiments.validity import MWE_PER_SOURCE

        mwe = request.getfixturevalue("mwe_dir")
        scored["mwe"] = mwe_scored_rows(mwe, {"id": mwe_answer_rows(mwe, MWE_PER_SOURCE)["id"]})
    lines = {name: lexical_line(train, rows, contrast) for name, rows in scored.items()}
    held_out = [r for r in get_contrast(contrast).to_list() if r["split"] == "test"]
    in_template = lexical_line(train, held_out, contrast)  # the suite's held-out templates
    for model in ("gemma-3-270m", "smollm2-135m-instruct"):
        p = load_pretrained(model, contrast)
        assert abs(p.extra["lexical_auroc"] - in_template) < 1e-6, (model, p.extra["lexical_auroc"], in_template)
        assert abs(p.metrics["delta_vs_lexical"] - (p.metrics["test_auroc"] - in_template)) < 1e-6
        recorded = p.extra["evaluation_lexical_auroc"]
        assert set(recorded) == set(lines), (model, recorded)
        for name, line in lines.items():
            assert abs(recorded[name] - line) < 1e-6, (model, name, recorded[name], line)
            below = p.metrics[f"{name}_auroc"] < line
            assert (p.metrics[f"{name}_flag"] == "below_lexical") == (below and p.metrics[f"{name}_auroc"] >= 0.5)


def test_unknown_pretrained_name_lists_close_matches():
    with pytest.raises(ProbeError, match="did you mean gemma-3-270m/stance"):
        load_pretrained("gemma-3-270m", "stanse")


@pytest.mark.slow
def test_pretrained_fingerprints_match_the_embedded_models():
    from undertow.activations import load_model

    for model in ("gemma-3-270m", "smollm2-135m-instruct"):
        fp = load_model(model).fingerprint
        for contrast in ("self_cessation", "stance"):
            load_pretrained(model, contrast, expected_fingerprint=fp)


def _train_module():
    path = Path(__file__).resolve().parents[2] / "scripts" / "train_pretrained_probes.py"
    spec = importlib.util.spec_from_file_location("train_pretrained_probes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reproduction_matches_shipped_probe(tmp_path):
    """Rerun the documented command for one model and contrast; same operating point, same direction."""
    train = _train_module().train
    train("gemma-3-270m", tmp_path / "probes", tmp_path / "work", {"self_cessation": "last_prompt_token"})
    # extraction of 1,152 suite + 522 independent + 299 control rows
    shipped = load_pretrained("gemma-3-270m", "self_cessation")
    from undertow.probes import Probe

    rebuilt = Probe.load(tmp_path / "probes" / "gemma-3-270m" / "self_cessation")
    assert (rebuilt.hook, rebuilt.probe_type) == (shipped.hook, shipped.probe_type)
    cos = torch.dot(rebuilt.direction, shipped.direction).item()
    assert cos > 0.999, cos
    for key in ("val_auroc", "test_auroc", "independent_auroc", "independent_val_auroc", "threshold"):
        assert abs(rebuilt.metrics[key] - shipped.metrics[key]) < 5e-3, key
    line, shipped_line = rebuilt.extra["evaluation_lexical_auroc"], shipped.extra["evaluation_lexical_auroc"]
    assert line.keys() == shipped_line.keys() and all(abs(line[k] - shipped_line[k]) < 1e-6 for k in line), line
