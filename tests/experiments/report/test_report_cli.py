from __future__ import annotations

from undertow.experiments.cli.app import main


def test_report_command_rebuilds_the_page(run_copy, capsys):
    assert main(["report", str(run_copy)]) == 0
    assert "report.html (" in capsys.readouterr().out and (run_copy / "report.html").stat().st_size > 4e6


def test_report_command_bad_inputs_print_one_line_each(tmp_path, capsys):
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "results.json").write_text('{"meta": {"model": "x", "fing')
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text('{"meta": {}, "config": {}, "contrasts": {}}')
    for case in ("", "trunc", "old"):
        assert main(["report", str(tmp_path / case)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("undertow: error: ") and err.count("\n") == 1, err
