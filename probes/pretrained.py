"""Trained probes shipped with the package: ``load_pretrained("gemma-3-270m", "stance")``.

Each lives in ``probes/pretrained/<model>/<contrast>/`` as ``probe.safetensors`` +
``probe.json`` (checksummed, fingerprinted). Since issue 10 they are chosen with the
independently written set's val half in the rule and their thresholds set at 1% FPR
on the control chat set; ``probe.json`` records the in-template test, independent-set
(test half, with CI) AUROCs, the rule, any flag, and the control set's sha256
(``undertow.probes.require_calibration``). Rebuilt by ``scripts/train_pretrained_probes.py``;
``tests/probes/test_pretrained.py`` checks that the rebuild matches the shipped files.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from .artifact import Probe
from .errors import ProbeError


def pretrained_root() -> Path:
    return Path(str(resources.files("undertow.probes").joinpath("pretrained")))


def list_pretrained() -> list[str]:
    """``model/contrast`` names of every shipped probe."""
    root = pretrained_root()
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/probe.json"))


def pretrained_path(model: str, contrast: str) -> Path:
    name = f"{model}/{contrast}"
    available = list_pretrained()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ProbeError(f"no pretrained probe {name!r}{hint}; available: {', '.join(available) or 'none'}")
    return pretrained_root() / model / contrast


def load_pretrained(model: str, contrast: str, expected_fingerprint: str | None = None) -> Probe:
    """A shipped probe, verified (checksums; the model fingerprint when ``expected_fingerprint`` is given)."""
    return Probe.load(pretrained_path(model, contrast), expected_fingerprint=expected_fingerprint)


def resolve_probe(name_or_dir: str) -> Probe:
    """A probe directory, or a pretrained name ``model/contrast``."""
    path = Path(name_or_dir)
    if (path / "probe.json").exists():
        return Probe.load(path)
    if name_or_dir.count("/") == 1 and not path.exists():
        return load_pretrained(*name_or_dir.split("/"))
    raise ProbeError(f"{name_or_dir!r} is neither a probe directory (with probe.json) nor a pretrained name; "
                     f"pretrained: {', '.join(list_pretrained())}")
