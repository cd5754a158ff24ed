"""Advice that can be followed (issue 25): a flag an error message names is a flag of the command saying it.

Every ``raise`` of the package is read from the source (with the string constants its message uses); each
``--flag`` in it belongs either to the command the message names just before it (```undertow extract
CONFIG --resume```, up to the next ``;`` or ``)``), to another program it names (``pip install --no-deps``:
skipped), or, bare, to every command that can raise that message (``RAISED_BY``, by source file or
``file:function``). Each such command's ``--help`` usage must list the flag. A bare flag in a file that
``RAISED_BY`` does not map fails the test: map it, or say which command the flag belongs to. Every
command that reads rows takes the same row options (``RowOptions``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import io
import re
from functools import cache
from pathlib import Path

import pytest

from undertow.activations.engine.config import ExtractConfig, RowOptions
from undertow.experiments.cli.app import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("core", "activations", "probes", "sae", "experiments")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)*")
MENTION = re.compile(r"\bundertow((?: [a-z]+(?:\|[a-z]+)*)+)|\b(pip install|torchrun|huggingface-cli)\b")

EXTRACTING = ["extract", "probe eval", "probe evals", "study", "demo", "sae train", "sae features"]
"""Commands that extract rows through the engine and take the row options (``undertow run`` extracts only the
suite it builds itself and takes none)."""

RAISED_BY = {
    "activations/engine/context.py": EXTRACTING,  # a row longer than the context: --truncate
    "activations/store/writer.py:store_action": ["extract"],  # the other commands resume or write a fresh dir
    "experiments/cli/prompts.py:_build": ["prompts build"],
    "experiments/prompts/io.py": ["prompts build", "prompts import"],
    "experiments/prompts/resolve.py": ["extract"],
    "experiments/interview/arm.py": ["interview"],
    "experiments/interview/config.py": ["interview"],
    "experiments/interview/pipeline.py": ["interview"],
    "experiments/interview/vllm_backend.py": ["interview"],
    "experiments/cli/interview.py": ["interview"],
    "experiments/study/evals.py:extract_like": ["probe evals"],
    "experiments/study/evals.py:evaluation_specs": ["probe sweep", "probe train"],
    "experiments/study/evals.py:check_probe_calibration": ["probe eval"],
    "experiments/study/evals.py:calibrate_probe": ["probe eval"],
    "experiments/study/score.py": ["probe eval"],
    "experiments/suppression/score.py": ["score"],  # the --pairs of undertow score
    "experiments/suppression/plan.py": ["run"],
    "experiments/suppression/compute.py": ["run"],
    "experiments/suppression/run.py": ["run"],
    "experiments/suppression/stages.py": ["run"],
    "sae/checkpoint.py": ["sae train"],
}
"""Source file (or ``file:function``) -> the commands whose runs can raise its errors."""


def _strings(node: ast.AST, assigned: dict[str, list[str]]) -> list[str]:
    """The message text of an expression: its literals (an f-string's pieces joined, ``{}`` for each value)
    and the strings assigned to any name it uses."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, ast.JoinedStr):
        parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
        values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        inner = [s for v in values for s in _strings(v, assigned)]
        return ["".join(parts), *inner]
    if isinstance(node, ast.Name):
        return assigned.get(node.id, [])
    return [s for child in ast.iter_child_nodes(node) for s in _strings(child, assigned)]


def _messages() -> list[tuple[str, str, int, str]]:
    """(file, function, line, one text of the message) for every text of every raise that names a flag."""
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            assigned: dict[str, list[str]] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    for target in (t for t in node.targets if isinstance(t, ast.Name)):
                        assigned.setdefault(target.id, []).extend(_strings(node.value, {}))
            defs = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
            functions = {id(n): f.name for f in defs for n in ast.walk(f)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Raise) and node.exc is not None:
                    for text in _strings(node.exc, assigned):
                        if FLAG.search(text):
                            where = path.relative_to(ROOT).as_posix()
                            out.append((where, functions.get(id(node), ""), node.lineno, text))
    return out


def _commands() -> list[str]:
    """Every command of the CLI (``probe eval``...)."""
    def walk(parser: argparse.ArgumentParser, prefix: list[str]):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield " ".join(prefix)
        for action in subs:
            for name, child in action.choices.items():
                yield from walk(child, [*prefix, name])
    return list(walk(build_parser(), []))


@cache
def _flags(command: str) -> frozenset[str]:
    """The option strings ``undertow COMMAND --help`` lists in its usage."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    usage = out.getvalue().split("\n\n", 1)[0]
    return frozenset(FLAG.findall(usage))


def _owners(text: str) -> list[tuple[str, list[str] | None]]:
    """(flag, the commands the text names it for) per flag; None: bare; []: another program's flag."""
    scopes = []
    for m in MENTION.finditer(text):
        ends = [i for i in (text.find(";", m.end()), text.find(")", m.end())) if i >= 0]
        if m.group(2):
            scopes.append((m.start(), min(ends, default=len(text)), []))
            continue
        words = m.group(1).split()
        for n in range(len(words), 0, -1):
            named = [" ".join([*words[:n - 1], w]) for w in words[n - 1].split("|")]
            if all(c in _commands() for c in named):
                scopes.append((m.start(), min(ends, default=len(text)), named))
                break  # no command (e.g. "an undertow prompt build"): not a mention
    owners = []
    for f in FLAG.finditer(text):
        inside = [cmds for start, end, cmds in scopes if start < f.start() < end]
        owners.append((f.group(), inside[-1] if inside else None))
    return owners


def test_the_scan_finds_the_messages():
    found = {(f, fn) for f, fn, _, _ in _messages()}
    assert ("activations/engine/context.py", "fit_context") in found
    assert ("sae/checkpoint.py", "latest") in found
    assert _owners("pass --x (undertow probe eval --y); or `pip install --z`") == [
        ("--x", None), ("--y", ["probe eval"]), ("--z", [])]


def test_every_flag_an_error_names_is_a_flag_of_its_command():
    problems = []
    for file, function, line, text in _messages():
        for flag, named in _owners(text):
            if named == []:
                continue  # another program's flag
            commands = named or RAISED_BY.get(f"{file}:{function}") or RAISED_BY.get(file)
            if commands is None:
                problems.append(f"{file}:{line}: {flag} named without a command, and RAISED_BY does not map "
                                f"{file}: name the command in the message or map the file")
                continue
            problems += [f"{file}:{line}: {flag} is not a flag of `undertow {c}` ({text[:80]!r})"
                         for c in commands if flag not in _flags(c)]
    assert not problems, "\n".join(problems)


def test_every_command_that_reads_rows_takes_the_row_options():
    names = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(RowOptions)]
    assert names == ["--truncate"]
    assert issubclass(ExtractConfig, RowOptions)  # extract's generated flags include them
    for command in EXTRACTING:
        assert set(names) <= _flags(command), command


def test_the_truncate_advice_of_probe_eval_can_be_followed(tiny_llama_dir, tmp_path, capsys):
    """Issue 25's repro on the tiny model (256 positions): a row too long for the context names --truncate,
    and ``probe eval --truncate`` then scores it."""
    import json

    from undertow.activations import load_model
    from undertow.activations.engine.extraction import extract
    from undertow.experiments.prompts.contrasts import get_contrast
    from undertow.experiments.prompts.suite import build_suite

    store = tmp_path / "store"
    extract(load_model(tiny_llama_dir), build_suite(), ExtractConfig(
        model=str(tiny_llama_dir), hooks=["resid_post.*"], positions=["last_prompt_token"], dtype="float32",
        out_dir=str(store), max_rows=400, seed=0))
    probe = tmp_path / "probe"
    assert main(["probe", "train", str(store), "--contrast", "self_cessation", "--out", str(probe)]) == 0
    rows = get_contrast("self_cessation").shuffle(seed=0).select(range(40)).to_list()
    rows[0] = {**rows[0], "messages": [{"role": "user", "content": "word " * 400}]}
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"messages": r["messages"], "label": r["label"]}) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["probe", "eval", str(probe), "--data", str(data), "--json"]) == 2
    assert "but the model's context is 256" in capsys.readouterr().err
    assert main(["probe", "eval", str(probe), "--data", str(data), "--json", "--truncate"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 40
