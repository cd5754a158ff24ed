"""``undertow study`` is the probe study; ``undertow demo`` is its deprecated name for one release."""

from __future__ import annotations

from undertow.experiments.cli import study as study_cli
from undertow.experiments.cli.app import main


def test_demo_is_a_deprecated_alias_of_study(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(study_cli, "run", lambda cfg, args: seen.append(cfg) or 0)  # the study itself: minutes
    assert main(["study", "--max-rows", "48", "--out-dir", "x"]) == 0
    assert "now `undertow study`" not in capsys.readouterr().err
    assert main(["demo", "--max-rows", "48", "--out-dir", "x"]) == 0
    err = capsys.readouterr().err
    assert "`undertow demo` is now `undertow study`" in err and "next release" in err
    assert len(seen) == 2 and seen[0] == seen[1] and seen[0].max_rows == 48


def test_help_names_study_and_marks_demo_deprecated(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "study" in out and "deprecated name of `undertow study`" in out
