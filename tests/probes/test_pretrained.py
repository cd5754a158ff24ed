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
    flagged = p.metrics["independent_flag"] != ""
    assert flagged == bool(p.extra["flags"]), name  # a flag in the table is a flag in probe.json


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
