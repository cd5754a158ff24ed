"""Every committed YAML config loads into its typed class and round-trips (torchtune's test_configs habit)."""

from __future__ import annotations

import pytest
import yaml

from undertow.core.errors import ConfigError
from undertow.experiments.config_kinds import config_class, load_any, packaged_configs

CONFIGS = packaged_configs()


def test_configs_are_shipped():
    assert any(p.name.startswith("extract_") for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_round_trips(path, tmp_path):
    cfg = load_any(path)
    cls = config_class(path)
    assert cls.from_dict(cfg.to_dict()) == cfg
    again = tmp_path / path.name
    again.write_text(cfg.to_yaml())
    assert cls.from_yaml(again) == cfg
    assert set(yaml.safe_load(path.read_text())) <= set(cfg.to_dict())  # every key in the file is a field


def test_unknown_config_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="start it with one of extract_"):
        config_class(tmp_path / "mystery.yaml")
