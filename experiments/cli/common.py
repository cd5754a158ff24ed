"""Config-driven commands: flags generated from a config dataclass, YAML values as their defaults.

``config_command(sub, "extract", ExtractConfig, run, ...)`` registers a command whose flags are one
``--field-name`` per config field (simple-parsing, help from the field docstrings) plus the few
command-only flags ``extra`` adds (``--resume``...). With a CONFIG file the file's values become the
defaults, so only flags given explicitly override it. ``run(config, args) -> int``.

The command's own parser is built when the command runs (twice: once to find CONFIG, once with its
values as defaults), so ``undertow extract --help`` lists the generated flags. The first pass builds
nothing (a flag valid with the file's values is not judged against the class defaults); the config is
built once, through ``TypedConfig.from_dict``, so flags and YAML share one set of checks and messages.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import simple_parsing
from simple_parsing import DashVariant

from undertow.activations.engine.config import RowOptions
from undertow.core.typed_config import COMMAND_LINE, add_config_arguments

__all__ = ["RowParser", "add_row_options", "config_command", "config_parser"]


class RowParser(simple_parsing.ArgumentParser):
    """The parser class of a command group whose commands take generated flags (``add_row_options``):
    ``add_subparsers(..., parser_class=RowParser)``; argparse's own help format for the hand-written flags."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.HelpFormatter)
        super().__init__(*args, **kwargs)


def add_row_options(p: argparse.ArgumentParser) -> None:
    """The row options (``RowOptions``: ``--truncate``), the same generated flags on every command that reads
    rows, parsed into ``args.rows`` (a ``RowOptions``). ``extract`` has them as ``ExtractConfig`` fields."""
    if not isinstance(p, simple_parsing.ArgumentParser):
        raise TypeError(f"{p.prog}: row options need a simple-parsing parser (parser_class=RowParser)")
    add_config_arguments(p, RowOptions, dest="rows")


def config_parser(prog: str, description: str, cls: type, default=None, config_arg: str | None = "required",
                  extra: Callable[[argparse.ArgumentParser], None] | None = None,
                  build: bool = True) -> simple_parsing.ArgumentParser:
    """The full parser of one config command (CONFIG positional, ``extra`` flags, generated fields);
    ``build=False``: ``config`` is parsed into a plain mapping of the field values, not checked."""
    p = simple_parsing.ArgumentParser(prog=prog, description=description,
                                      add_option_string_dash_variants=DashVariant.DASH)
    if config_arg:
        p.add_argument("config_file", metavar="CONFIG", nargs=None if config_arg == "required" else "?",
                       help=f"YAML file of {cls.__name__} fields (experiments/configs/); flags override it")
    if extra is not None:
        extra(p)
    add_config_arguments(p, cls, default=default, dest="config", build=build)
    return p


def config_command(sub: argparse._SubParsersAction, name: str, cls: type, run: Callable, help: str,
                   config_arg: str | None = "required",
                   extra: Callable[[argparse.ArgumentParser], None] | None = None, prog: str | None = None) -> None:
    """Register ``name`` on ``sub``; its arguments are parsed by ``config_parser`` when it runs."""
    q = sub.add_parser(name, help=help, description=help, add_help=False)  # its flags: config_parser
    prog = prog or f"undertow {name}"

    def dispatch(args: argparse.Namespace) -> int:
        first = config_parser(prog, help, cls, None, config_arg, extra, build=config_arg is None)
        ns = first.parse_args(args.argv)
        if getattr(ns, "config_file", None):
            loaded = cls.from_yaml(ns.config_file)
            ns = config_parser(prog, help, cls, loaded, config_arg, extra).parse_args(args.argv)
        elif config_arg is not None:
            ns.config = cls.from_dict(ns.config, COMMAND_LINE)
        return run(ns.config, ns)

    q.set_defaults(func=dispatch, takes_argv=True)  # app.main hands it the arguments it did not parse
