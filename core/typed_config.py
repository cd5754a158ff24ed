"""One typed config mechanism for every undertow config (extract, study, probes, SAE, experiment).

A config is a dataclass with a docstring under each field and its checks in
``__post_init__``. Subclassing ``TypedConfig`` gives it:

- ``from_yaml(path, **overrides)``: safe-loaded YAML, unknown keys refused with the valid ones listed,
  every value checked against its field's type *before* the dataclass is built (so ``seed: abc`` fails
  on the config, not after a model has loaded), errors as ``file:line: field: what, fix``;
- ``from_dict(data, source)``: the same checks for a mapping (nested dataclasses recurse);
- ``to_dict()`` / ``to_yaml()``: plain JSON/YAML values; ``from_dict(cfg.to_dict()) == cfg``;
- ``replace(**changes)``;
- ``config_path(field)``: the full dotted path of a field of a nested config (``arms.suppress_lora.rank``),
  for checks made outside ``__post_init__`` (e.g. against the loaded model).

Choice fields are ``Literal[...]`` (the choices live in one place): the type check refuses any other
value as ``field: 'x' is not one of a, b, c (did you mean ...?)``, on construction too, and the flags
list the choices. Every error names the *full dotted path* of the field holding the bad value, however
deep: a nested config's ``__post_init__`` names its own fields (bare, ``rank must be ...``) and the
builder re-prefixes the message with the path where that config sits (``arms.suppress_lora.rank must
be ...``) and the YAML line of the field.

CLI flags come from the same dataclass through simple-parsing (``add_config_arguments``): one
``--field-name`` per field with the field's docstring as help, YAML values as the defaults, so an
explicit flag overrides the file and nothing else does. The parsed values are built through
``from_dict`` like a YAML file (one validation layer, the same messages). No flag list is written by hand.

Lives in ``core`` because it is the lowest package every config-owning package may import
(``kernels`` take no configs).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, get_type_hints

import yaml

from undertow.core.errors import ConfigError, UndertowError

T = TypeVar("T", bound="TypedConfig")

__all__ = ["COMMAND_LINE", "TypedConfig", "add_config_arguments", "check_value", "choice_error",
           "literal_choices", "yaml_lines"]

COMMAND_LINE = "command line"
"""The ``source`` of a config built from generated flags (``add_config_arguments``)."""


def yaml_lines(text: str) -> dict[str, int]:
    """Key -> 1-based line number in a YAML mapping (for error messages); nested mappings' keys are
    dotted (``arms.suppress_lora.rank``), top-level keys plain."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}

    def walk(mapping: yaml.MappingNode, prefix: str) -> None:
        for k, v in mapping.value:
            key = f"{prefix}{k.value}"
            out.setdefault(key, k.start_mark.line + 1)
            if isinstance(v, yaml.MappingNode):
                walk(v, f"{key}.")

    if isinstance(node, yaml.MappingNode):
        walk(node, "")
    return out


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def literal_choices(hint: Any) -> tuple | None:
    """The choices of a ``Literal`` hint, also inside ``X | None``, ``list[X]`` or ``tuple[X, ...]``;
    else None."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    for arg in typing.get_args(hint):
        if arg is not type(None) and arg is not Ellipsis and (found := literal_choices(arg)) is not None:
            return found
    return None


def choice_error(where: str, value: Any, choices: tuple) -> str:
    """``where: 'x' is not one of a, b, c`` plus a did-you-mean when one choice is close."""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{where}: {value!r} is not one of {', '.join(names)}{hint}"


class _Loc(NamedTuple):
    """Where a nested config is being built: its source, the YAML line map and its dotted path."""

    source: str
    lines: dict[str, int] | None
    path: str


def check_value(value: Any, hint: Any, where: str, _loc: _Loc | None = None) -> Any:
    """``value`` checked (and losslessly coerced: int -> float, list -> tuple) against a type hint.

    Raises ``ConfigError(where: expected ..., got ...)``; a ``Literal`` refuses values outside its choices
    (``choice_error``). Types outside the plain-data set (e.g. ``torch.dtype``) are passed through for
    the config's own ``__post_init__`` to judge.
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
                return check_value(value, arm, where, _loc)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):  # True is not the choice 1
            return value
        raise ConfigError(choice_error(where, value, args))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return _build(hint, value, *(_loc or (where, None, "")))
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


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


_LEAD = re.compile(r"[A-Za-z_][\w.]*")


def _located(e: Exception, cls: type, source: str, lines: dict[str, int] | None, path: str) -> Exception:
    """An error raised while constructing ``cls`` (its ``__post_init__``) at ``path``, re-raised naming the
    field's full dotted path and its line. A message leading with one of ``cls``'s fields (``rank must...``,
    or a stale prefix such as ``lora.rank`` / ``LoraConfig.rank``) gets that field's path; any other
    message is prefixed with the config's path."""
    msg = str(e)
    if not isinstance(e, UndertowError):  # a TypeError/ValueError of the dataclass itself
        msg = f"{cls.__name__}: {msg}"
    names = {f.name for f in dataclasses.fields(cls)}
    lead = m.group() if (m := _LEAD.match(msg)) else ""
    field = lead.rsplit(".", 1)[-1]
    if lead and field in names:
        dotted = f"{path}.{field}" if path else field
        if path:
            msg = dotted + msg[len(lead):]
    else:
        dotted = path
        msg = f"{path}: {msg}" if path else msg
    at = lines.get(dotted) if lines and dotted else None
    text = f"{source}{f':{at}' if at else ''}: {msg}"
    if isinstance(e, UndertowError) and not isinstance(e, ConfigError | ValueError):
        try:
            return type(e)(text)  # keep the package's error class (ExperimentError...)
        except TypeError:
            pass
    return ConfigError(text)


def _build(cls: type, data: dict, source: str, lines: dict[str, int] | None = None, path: str = "") -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]

    def dotted(key: str) -> str:
        return f"{path}.{key}" if path else key

    def at(key: str) -> str:
        return f":{lines[key]}" if lines and key in lines else ""

    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{source}{at(dotted(unknown[0]))}: {f'{path}: ' if path else ''}unknown field(s) "
                          f"{', '.join(unknown)} for {cls.__name__}; valid fields are {', '.join(names)}")
    values = {}
    for key, value in data.items():
        values[key] = check_value(value, hints[key], f"{source}{at(dotted(key))}: {dotted(key)}",
                                  _Loc(source, lines, dotted(key)))
    try:
        return cls(**values)
    except (UndertowError, TypeError, ValueError) as e:
        raise _located(e, cls, source, lines, path) from None


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


def _check_choices(cfg: Any) -> None:
    """Every ``Literal`` field of ``cfg`` holds one of its choices (so a config built in Python is refused
    like one read from YAML)."""
    for name, hint in _hints(type(cfg)).items():
        if literal_choices(hint) is not None and hasattr(cfg, name):
            check_value(getattr(cfg, name), hint, name)


def _record_paths(cfg: Any, prefix: str = "") -> None:
    """Give every nested config under ``cfg`` its dotted path (``config_path``)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name, None)
        if isinstance(value, TypedConfig):
            object.__setattr__(value, "_config_path", prefix + f.name)  # frozen configs too
            _record_paths(value, f"{prefix}{f.name}.")


def _typed_post_init(own: Callable[[Any], None]) -> Callable[[Any], None]:
    """``own`` (a config's ``__post_init__``) between the shared checks: choices first, paths last."""

    @functools.wraps(own)
    def __post_init__(self) -> None:
        _check_choices(self)
        own(self)
        _record_paths(self)

    __post_init__.typed_config_wrapped = True  # type: ignore[attr-defined]
    return __post_init__


class TypedConfig:
    """Mixin for config dataclasses: YAML/dict loading with typed checks, plain-data export, replace."""

    _config_path = ""  # set on a nested config by the config that holds it (``config_path``)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "typed_config_wrapped", False):
            cls.__post_init__ = _typed_post_init(own)

    def __post_init__(self) -> None:
        """The shared checks of a config without its own ``__post_init__``."""
        _check_choices(self)
        _record_paths(self)

    def config_path(self, field: str | None = None) -> str:
        """The full dotted path of this config (``arms.suppress_lora``), or of one of its fields
        (``arms.suppress_lora.rank``), inside the config it was built in; a top-level config's is empty."""
        return ".".join(p for p in (self._config_path, field) if p)

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


def _choice_type(choices: tuple) -> Callable[[str], Any]:
    """A flag's ``type`` for a Literal: the choice spelled by the text, else the text itself (which the
    typed check then refuses with the same message as in YAML)."""
    by_name = {str(c): c for c in choices}

    def parse(text: str) -> Any:
        return by_name.get(text, text)

    parse.__name__ = "choice"
    return parse


def _flag_options(cls: type) -> None:
    """Flag options simple-parsing does not infer, set on the fields of ``cls`` and its nested configs:
    dict fields take ``a=b,c=d`` or JSON; Literal fields (plain, optional, or lists of them) list their
    choices as the metavar and leave the refusal to the typed check (argparse's own ``choices`` would
    refuse with another message, and simple-parsing 0.1.9 cannot parse ``list[Literal]`` at all)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            _flag_options(hint)
            continue
        _escape_percent(cls, f)
        custom: dict[str, Any] = {}
        if typing.get_origin(hint) is dict or hint is dict:
            custom = {"type": _parse_mapping, "metavar": "NAME=VALUE,..."}
        elif (choices := literal_choices(hint)) is not None:
            custom = {"type": _choice_type(choices), "choices": None,
                      "metavar": "{" + ",".join(str(c) for c in choices) + "}"}
        if custom:
            custom = {**f.metadata.get("custom_args", {}), **custom}
            f.metadata = types.MappingProxyType({**f.metadata, "custom_args": custom})


def _escape_percent(cls: type, f: dataclasses.Field) -> None:
    """A field docstring is its flag's help, which argparse formats with ``%``: "5 % of" would read as a
    conversion and break ``--help`` (a TypeError). The help of such a field is its docstring with ``%``
    doubled."""
    from simple_parsing.docstring import get_attribute_docstring

    doc = get_attribute_docstring(cls, f.name)
    text = doc.docstring_below or doc.comment_above or doc.comment_inline or doc.desc_from_cls_docstring
    if text and "%" in text and "help" not in f.metadata:
        f.metadata = types.MappingProxyType({**f.metadata, "help": text.replace("%", "%%")})


def _wrapper_class(build: bool) -> type:
    """A simple-parsing ``DataclassWrapper`` whose parsed values become the config through ``from_dict``
    (nested configs as plain mappings, so every check and message is the YAML one); with ``build`` False
    the parse yields the plain mapping itself."""
    from simple_parsing.wrappers.dataclass_wrapper import DataclassWrapper

    class FromDict(DataclassWrapper):
        def __init__(self, dataclass: type, *args: Any, **kwargs: Any) -> None:
            super().__init__(dataclass, *args, **kwargs)
            if build and issubclass(dataclass, TypedConfig):
                self.dataclass_fn = lambda **values: dataclass.from_dict(values, COMMAND_LINE)
            elif not build:
                self.dataclass_fn = dict
            for child in self.descendants:
                child.dataclass_fn = dict

    return FromDict


def add_config_arguments(parser, cls: type, default: Any = None, dest: str = "config",
                         build: bool = True) -> None:
    """One generated ``--field-name`` flag per field of ``cls`` (help = the field's docstring).

    ``parser`` is a ``simple_parsing.ArgumentParser`` (the CLI's root parser class); ``default`` is
    the instance whose values the flags default to (the loaded YAML), so only explicit flags change it.
    Dict-typed fields take ``a=b,c=d`` or JSON; Literal fields list their choices. The parsed values are
    built with ``cls.from_dict`` (source ``command line``); ``build=False`` leaves them a plain mapping.
    """
    _flag_options(cls)
    parser.add_arguments(cls, dest=dest, default=default, dataclass_wrapper_class=_wrapper_class(build))
