"""Config integrity (issue 25): errors name the full dotted path of the field, choice fields are Literals.

- Every config error names the dotted path of the field that holds the bad value, the same through YAML
  and through the generated flags (one validation layer: ``TypedConfig.from_dict``), and checks made
  outside ``__post_init__`` (``check_lora`` against the loaded model) name it too (``config_path``).
- Every ``Literal`` field of every ``TypedConfig`` subclass in the package lists its choices in ``--help``
  and is refused by YAML and by flag with the same message, which lists the choices.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import typing
from pathlib import Path

import pytest
import yaml

from undertow.core.errors import ConfigError, UndertowError
from undertow.core.typed_config import TypedConfig, literal_choices
from undertow.experiments.cli.common import config_parser
from undertow.experiments.suppression.config import LoraConfig, RunConfig

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "activations", "probes", "sae", "experiments")


def _config_classes() -> list[type]:
    """Every TypedConfig subclass defined in the package (found in the source, then imported)."""
    modules = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(isinstance(n, ast.ClassDef) and any("TypedConfig" in ast.unparse(b) for b in n.bases)
                   for n in ast.walk(tree)):
                modules.add(".".join(["undertow", *path.relative_to(ROOT).with_suffix("").parts]))
    for module in sorted(modules):
        importlib.import_module(module)
    found, todo = set(), list(TypedConfig.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls not in found and dataclasses.is_dataclass(cls):
            found.add(cls)
            todo += cls.__subclasses__()
    return sorted(found, key=lambda c: (c.__module__, c.__name__))


CLASSES = _config_classes()


def _literal_fields(cls: type, prefix: str = "") -> list[tuple[str, tuple]]:
    """(dotted path, choices) of every Literal field of ``cls`` and of its nested configs."""
    out = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            out += _literal_fields(hint, f"{prefix}{f.name}.")
        elif (choices := literal_choices(hint)) is not None:
            out.append((prefix + f.name, choices))
    return out


def _nested(path: str, value) -> dict:
    """``{"a": {"b": value}}`` for ``a.b``."""
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


def _refusal(call) -> str:
    """The message of the config error ``call`` raises, less its source (``file:line`` / ``command line``)."""
    with pytest.raises((ConfigError, UndertowError)) as info:
        call()
    return str(info.value).split(": ", 1)[1]


def test_the_package_configs_are_found():
    names = {c.__name__ for c in CLASSES}
    assert {"ExtractConfig", "SweepConfig", "FitConfig", "SAEConfig", "ArchConfig", "DataConfig", "RunConfig",
            "LoraConfig", "ArmsConfig", "CausalConfig", "StudyConfig", "SuiteConfig"} <= names
    assert sum(len(_literal_fields(c)) for c in CLASSES) >= 20


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_literal_field_lists_its_choices_and_refuses_others_alike(cls, tmp_path):
    fields = _literal_fields(cls)
    if not fields:
        pytest.skip(f"{cls.__name__} has no choice field")
    parser = config_parser(f"undertow {cls.__name__}", "", cls, None, None)
    text = io.StringIO()
    parser.print_help(text)
    help_text = " ".join(text.getvalue().split())
    flags = {a.dest.removeprefix("config."): a for a in parser._actions}
    for path, choices in fields:
        flag = flags[path]
        listed = "{" + ",".join(map(str, choices)) + "}"
        assert f"{flag.option_strings[0]} {listed}" in help_text, (path, flag.option_strings)
        many = flag.nargs == "*"
        cfg = tmp_path / f"{path}.yaml"
        cfg.write_text(yaml.safe_dump(_nested(path, ["bogus-choice"] if many else "bogus-choice")))
        from_yaml = _refusal(lambda: cls.from_yaml(cfg))  # noqa: B023 - called at once
        from_flag = _refusal(lambda: parser.parse_args([flag.option_strings[0], "bogus-choice"]))  # noqa: B023
        where = f"{path}[0]" if many else path
        listing = ", ".join(map(str, choices))
        assert from_yaml == from_flag == f"{where}: 'bogus-choice' is not one of {listing}"


def test_a_close_choice_is_suggested():
    msg = _refusal(lambda: RunConfig.from_dict({"arms": {"suppress_lora": {"method": "loar"}}}))
    assert msg == "arms.suppress_lora.method: 'loar' is not one of lora, full (did you mean lora?)"
    with pytest.raises(ConfigError, match=r"^method: 'qlora' is not one of lora, full"):
        LoraConfig(method="qlora")  # built in Python: the same check, on construction


def test_a_nested_post_init_error_names_the_full_path_in_yaml_and_flags(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("seed: 1\narms:\n  kl_max: 0.2\n  suppress_lora:\n    steps: 4\n    rank: 0\n")
    with pytest.raises(UndertowError) as yaml_error:
        RunConfig.from_yaml(cfg)
    assert str(yaml_error.value) == f"{cfg}:6: arms.suppress_lora.rank must be a positive integer, got 0"
    parser = config_parser("undertow run", "", RunConfig, None, None)
    with pytest.raises(UndertowError) as flag_error:
        parser.parse_args(["--suppress-lora.rank", "0"])
    assert str(flag_error.value) == "command line: arms.suppress_lora.rank must be a positive integer, got 0"
    with pytest.raises(UndertowError, match=r"^command line: lora.rank must be a positive integer, got 0"):
        parser.parse_args(["--rank", "0"])  # the instilling LoRA's flag is the short one
    with pytest.raises(ConfigError, match=r"run.yaml:2: arms: expected a mapping of ArmsConfig fields"):
        cfg.write_text("seed: 1\narms: 3\n")
        RunConfig.from_yaml(cfg)


def test_nested_configs_know_their_path():
    cfg = RunConfig()
    assert cfg.arms.suppress_lora.config_path("rank") == "arms.suppress_lora.rank"
    assert cfg.lora.config_path("rank") == "lora.rank" and cfg.config_path("seed") == "seed"
    parser = config_parser("undertow run", "", RunConfig, None, None)
    built = parser.parse_args(["--suppress-lora.steps", "3"]).config
    assert built.arms.suppress_lora.config_path() == "arms.suppress_lora"
    assert built.replace(seed=3).arms.suppress_lora.config_path("rank") == "arms.suppress_lora.rank"
    assert LoraConfig().config_path("rank") == "rank"


def test_a_rank_that_does_not_fit_the_model_names_the_lora_it_belongs_to(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from undertow.experiments.suppression.organism import check_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)  # hidden size 64
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("lora:\n  rank: 16\narms:\n  suppress_lora:\n    rank: 5000\n")
    from_yaml = RunConfig.from_yaml(cfg_file)
    from_flag = config_parser("undertow run", "", RunConfig, None, None).parse_args(
        ["--rank", "16", "--suppress-lora.rank", "5000"]).config
    for cfg in (from_yaml, from_flag):
        check_lora(model, cfg.lora)
        with pytest.raises(UndertowError, match=r"^arms\.suppress_lora\.rank=5000 does not fit q_proj"):
            check_lora(model, cfg.arms.suppress_lora)


def test_flags_valid_with_the_file_are_not_judged_against_the_class_defaults(tmp_path):
    import argparse

    from undertow.experiments.cli.common import config_command

    cfg = tmp_path / "run.yaml"
    cfg.write_text("items:\n  instances_per_template: 6\n  test_sets: 2\n  val_sets: 2\n  train_sets: 2\n")
    got = []
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    config_command(sub, "run", RunConfig, lambda c, a: got.append(c) or 0, help="run", config_arg="optional")
    args = sub.choices["run"].parse_args([])
    # with the class defaults (test_sets 6) --instances-per-template 2 is refused; with the file's it is not
    args.argv = [str(cfg), "--instances-per-template", "2"]
    assert args.func(args) == 0 and got[0].items.instances_per_template == 2
    args.argv = ["--instances-per-template", "2"]
    with pytest.raises(UndertowError, match=r"^command line: items.test_sets=6 exceeds instances_per"):
        args.func(args)
