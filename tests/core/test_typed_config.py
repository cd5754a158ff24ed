"""The one typed config mechanism: typed checks with file:line, nested configs, round trips, generated flags."""

from __future__ import annotations

import pytest

from undertow.activations.engine.config import ExtractConfig
from undertow.core.errors import ConfigError
from undertow.core.typed_config import check_value, yaml_lines
from undertow.experiments.cli.common import config_parser
from undertow.experiments.study.run import StudyConfig
from undertow.probes import SweepConfig


@pytest.mark.parametrize(("value", "hint", "expected"), [
    (3, int, 3), (3, float, 3.0), (None, int | None, None), ("a", list[str], ["a"]), ([1, 2], tuple[int, ...], (1, 2)),
    ({"a": "b"}, dict[str, str], {"a": "b"}), (True, bool, True),
])
def test_check_value_accepts(value, hint, expected):
    assert check_value(value, hint, "f") == expected


@pytest.mark.parametrize(("value", "hint", "message"), [
    ("abc", int, "expected an integer"), (True, int, "expected an integer"), ("yes", bool, "expected true or false"),
    (5, list[str], "expected a list"), ([1], list[str], r"f\[0\]: expected a string"), (1.5, int | None, "expected"),
    ({"a": 1}, dict[str, str], r"f\['a'\]: expected a string"),
])
def test_check_value_refuses(value, hint, message):
    with pytest.raises(ConfigError, match=message):
        check_value(value, hint, "f")


def test_yaml_errors_carry_file_and_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hooks: [embed]\nbatch_size: 4\nseed: abc\n")
    assert yaml_lines(cfg.read_text()) == {"hooks": 1, "batch_size": 2, "seed": 3}
    with pytest.raises(ConfigError, match=r"c.yaml:3: seed: expected an integer, got 'abc'"):
        ExtractConfig.from_yaml(cfg)
    cfg.write_text("hooks: [embed]\nbatch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: unknown field\(s\) batch_sise .*valid fields are truncate, model"):
        ExtractConfig.from_yaml(cfg)
    cfg.write_bytes(b"seed: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        ExtractConfig.from_yaml(cfg)


def test_nested_configs_and_round_trips(tmp_path):
    sweep = SweepConfig.from_dict({"n_folds": 3, "fit": {"l2": 0.01, "dtype": "float64"}})
    assert sweep.fit.l2 == 0.01 and str(sweep.fit.dtype) == "torch.float64"
    assert SweepConfig.from_dict(sweep.to_dict()) == sweep
    with pytest.raises(ConfigError, match=r"fit: unknown field\(s\) l3"):
        SweepConfig.from_dict({"fit": {"l3": 1}})
    study = StudyConfig(max_rows=0)  # 0 = the whole contrast
    assert study.max_rows is None and StudyConfig.from_dict(study.to_dict()) == study
    path = tmp_path / "e.yaml"
    path.write_text(ExtractConfig(hooks=["embed", "resid_post.*"], max_rows=8).to_yaml())
    assert ExtractConfig.from_yaml(path) == ExtractConfig(hooks=["embed", "resid_post.*"], max_rows=8)


def test_generated_flags_override_only_when_given(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("seed: 5\ncontrasts: {stance: mean_response}\n")
    loaded = StudyConfig.from_yaml(path)
    parse = config_parser("undertow study", "", StudyConfig, loaded, "optional").parse_args
    assert parse([str(path)]).config == loaded
    got = parse([str(path), "--n-boot", "10", "--contrasts", "self_cessation=last_prompt_token"]).config
    assert got.seed == 5 and got.n_boot == 10 and got.contrasts == {"self_cessation": "last_prompt_token"}
    sweep = config_parser("undertow probe sweep", "", SweepConfig, None, None).parse_args(
        ["--probe-types", "lda", "logistic", "--l2", "0.1"]).config
    assert sweep.probe_types == ["lda", "logistic"] and sweep.fit.l2 == 0.1
