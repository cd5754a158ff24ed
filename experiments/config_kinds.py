"""Which config class each committed YAML under ``experiments/configs/`` loads into, by file-name prefix.

``extract_*.yaml`` -> ``ExtractConfig``, ``study_*`` -> ``StudyConfig``, ``run_*`` -> the suppression
experiment's ``RunConfig``, ``sae_*`` -> ``SAEConfig``. A test loads every committed file through this
table and round-trips it, so a new kind of config must be named here.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

__all__ = ["CONFIG_KINDS", "config_class", "load_any", "packaged_configs"]

#: file-name prefix -> "module:Class"
CONFIG_KINDS = {
    "extract_": "undertow.activations.engine.config:ExtractConfig",
    "study_": "undertow.experiments.study.run:StudyConfig",
    "run_": "undertow.experiments.suppression.config:RunConfig",
    "sae_": "undertow.sae.config:SAEConfig",
    "interview_": "undertow.experiments.interview.config:InterviewConfig",
}


def config_class(path: str | Path) -> type:
    """The config class a YAML file's name says it holds."""
    name = Path(path).name
    for prefix, target in CONFIG_KINDS.items():
        if name.startswith(prefix):
            module, cls = target.split(":")
            return getattr(importlib.import_module(module), cls)
    from undertow.core.errors import ConfigError

    raise ConfigError(f"{name}: no config kind for this name; start it with one of {', '.join(CONFIG_KINDS)}")


def load_any(path: str | Path):
    """Load a YAML config into the class its name gives."""
    return config_class(path).from_yaml(path)


def packaged_configs() -> list[Path]:
    """Every YAML file shipped under ``undertow.experiments/configs``."""
    root = Path(str(resources.files("undertow.experiments").joinpath("configs")))
    return sorted(root.glob("*.yaml"))
