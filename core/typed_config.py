"""One typed config mechanism for every undertow config (extract, study, probes, SAE, experiment).

A config is a dataclass with a docstring under each field and its checks in
``__post_init__``. Subclassing ``TypedConfig`` gives it:

- ``from_yaml(path, **overrides)``: safe-loaded YAML, unknown keys refused with the valid ones listed,
  every value checked against its field's type *before* the dataclass is built (so ``seed: abc`` fails
  on the config, not after a model has loaded), errors as ``file:line: field: what, fix``;
- ``from_dict(data, source)``: the same checks for a mapping (nested dataclasses recurse);
- ``to_dict()`` / ``to_yaml()``: plain JSON/YAML values; ``from_dict(cfg.to_dict()) == cfg``;
- ``replace(**changes)``.

CLI flags come from the same dataclass through simple-parsing (``add_config_arguments``): one
``--field-name`` per field with the field's docstring as help, YAML values as the defaults, so an
explicit flag overrides the file and nothing else does. No flag list is written by hand.

Lives in ``activations`` because it is the lowest package every config-owning package may import
(``kernels`` take no configs).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from undertow.core.errors import ConfigError

T = TypeVar("T", bound="TypedConfig")

__all__ = ["TypedConfig", "add_config_arguments", "check_value", "yaml_lines"]


def yaml_lines(text: str) -> dict[str, int]:
    """Top-level key -> 1-based line number in a YAML mapping (for error messages)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked (and losslessly coerced: int -> float, list -> tuple) against a type hint.

    Raises ``ConfigError(where: expected ..., got ...)``. Types outside the plain-data set (e.g.
    ``torch.dtype``) are passed through for the config's own ``__post_init__`` to judge.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return _build(hint, value, where)
    if origin in (list, tuple):
        if isinstance(value, str) and origin is list:  # `hooks: resid_post.*` means a one-element list
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else Any
        items = [check_value(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = args or (Any, Any)
        return {check_value(k, kt, f"{where} key"): check_value(v, vt, f"{where}[{k!r}]") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: dict, source: str, lines: dict[str, int] | None = None) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        at = f":{lines[unknown[0]]}" if lines and unknown[0] in lines else ""
        raise ConfigError(f"{source}{at}: unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
                          f"valid fields are {', '.join(names)}")
    values = {}
    for key, value in data.items():
        at = f":{lines[key]}" if lines and key in lines else ""
        values[key] = check_value(value, hints[key], f"{source}{at}: {key}")
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {cls.__name__}: {e}") from None


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if isinstance(value, TypedConfig) else {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value).removeprefix("torch.")  # torch.dtype and friends: their spelling in YAML


class TypedConfig:
    """Mixin for config dataclasses: YAML/dict loading with typed checks, plain-data export, replace."""

    @classmethod
    def from_dict(cls: type[T], data: dict, source: str = "config", **overrides) -> T:
        """Build from a mapping (e.g. parsed JSON); ``overrides`` that are not None win over ``data``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: must be a mapping of {cls.__name__} fields, got {type(data).__name__}")
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        return _build(cls, data, source)

    @classmethod
    def from_yaml(cls: type[T], path: str | Path, **overrides) -> T:
        """Load a YAML mapping of this config's fields (errors carry the file and line)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"cannot read config {path}: not UTF-8 text; save it as UTF-8 YAML") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}" if mark is not None else ""
            what = getattr(e, "problem", None) or " ".join(str(e).split())  # ReaderError (a NUL byte) spans lines
            raise ConfigError(f"cannot read config {path}{at}: {what}; fix the YAML syntax") from None
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a YAML mapping of {cls.__name__} fields")
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        return _build(cls, data, str(path), yaml_lines(text))

    def to_dict(self) -> dict:
        """Plain JSON/YAML values, nested configs included."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(json.dumps(self.to_dict())), sort_keys=False)

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)


def _parse_mapping(text: str) -> dict:
    """``a=b,c=d`` or a JSON object, for dict-typed fields on the command line."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    return dict(part.split("=", 1) for part in text.split(",") if part)


def add_config_arguments(parser, cls: type, default: Any = None, dest: str = "config") -> None:
    """One generated ``--field-name`` flag per field of ``cls`` (help = the field's docstring).

    ``parser`` is a ``simple_parsing.ArgumentParser`` (the CLI's root parser class); ``default`` is
    the instance whose values the flags default to (the loaded YAML), so only explicit flags change it.
    Dict-typed fields take ``a=b,c=d`` or JSON.
    """
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if typing.get_origin(hints[f.name]) is dict or hints[f.name] is dict:
            f.metadata = types.MappingProxyType({**f.metadata, "custom_args": {"type": _parse_mapping, "metavar": "NAME=VALUE,..."}})
    parser.add_arguments(cls, dest=dest, default=default)
