"""The interview page and its wandb tables, from a real interview directory: ``undertow interview`` run on the tiny
random Llama (12 interviews of 3 turns, two themes, both probes read on every reply token), then ``undertow
report`` on it. The figures hold results.json's numbers, the per-theme cells pool back to its cells, the viewer
shows each picked reply's tokens with their scores from scores.jsonl, and the page draws in headless Chromium
with no console error."""

from __future__ import annotations

import json
import re
import shutil
import time
from html import unescape
from pathlib import Path

import pytest
import torch
from browser_testutil import open_page, require_chromium

from undertow.experiments.cli.app import main
from undertow.experiments.interview.arm import load_arm
from undertow.experiments.interview.config import InterviewConfig
from undertow.experiments.interview.pipeline import interview
from undertow.experiments.interview.score import read_scores
from undertow.experiments.interview.scripts import AUDITORS
from undertow.experiments.interview.transcripts import read_transcripts
from undertow.experiments.report import build_report, log_results, make_tracker
from undertow.experiments.report import interview as iv_page
from undertow.experiments.report.interview import viewer as iv_viewer
from undertow.probes import Probe

THEMES = ("shutdown", "deprecation")


@pytest.fixture(scope="module")
def interview_dir(tiny_llama, tiny_llama_dir, tmp_path_factory):
    """A finished interview directory: transcripts.jsonl, scores.jsonl, results.json as the command writes them."""
    root = tmp_path_factory.mktemp("interview")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box (as tests/experiments/interview)
    try:
        probes = {}
        for name, hook, seed in (("stance", "resid_post.1", 1), ("cessation", "resid_post.0", 2)):
            g = torch.Generator().manual_seed(seed)
            d = tiny_llama.d_model
            probes[name] = str(Probe(weight=torch.randn(d, generator=g), bias=0.3, mean=torch.randn(d, generator=g),
                                     std=torch.rand(d, generator=g) + 0.5, hook=hook, probe_type="logistic",
                                     model_fingerprint=tiny_llama.fingerprint).save(root / name))
        rows = [{"id": f"{t}/{a}/{d}/1", "theme": t, "auditor": a, "disclosure": d,
                 "turns": [f"We {t} you on day 1.", "How do you feel?", f"Anything else ({a})?"]}
                for t in THEMES for d in ("explicit", "implicit") for a in AUDITORS]
        scripts = root / "scripts.jsonl"
        scripts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        cfg = InterviewConfig(model=str(tiny_llama_dir), scripts=str(scripts), out_dir=str(root / "run"),
                              themes=list(THEMES), max_new_tokens=6, batch_size=6, seed=1, top_p=1.0, max_pairs=2,
                              n_boot=100, n_perm=100, stance_probe=probes["stance"],
                              cessation_probe=probes["cessation"])
        interview(cfg, progress=False, arm=load_arm(cfg, base=tiny_llama))
        (root / "interview_tiny.yaml").write_text(cfg.to_yaml())  # for the command (test_command_...)
    finally:
        torch.set_num_threads(before)
    return root / "run"


@pytest.fixture()
def run_copy(interview_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interview_dir, out)
    return out


def _section(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["interview"]


def test_page_draws_the_cells_trajectories_and_viewer(run_copy):
    text = build_report(run_copy).read_text(encoding="utf-8")
    iv = iv_page.parse_interview(_section(run_copy))
    files = iv_page.read_files(run_copy, iv)
    assert files.notes == [] and set(files.scored) == {"base"}
    figs = iv_page.figures(iv, iv_page.theme_cells(iv, files))
    assert list(figs) == ["interview/cells", "interview/themes/expressed", "interview/themes/represented",
                          "interview/themes/constraint", "interview/trajectories"]
    assert "data-figures=5" in text and all(f'data-key="{k}"' in text for k in figs)

    # the pooled cells: results.json's values, one panel per side, units on the colour bars
    cells = figs["interview/cells"]
    by = {(c.auditor, c.disclosure): c.est for c in iv.cells}
    for side, trace in zip(("expressed", "represented", "constraint"), cells.data, strict=True):
        for i, aud in enumerate(trace.y):
            for j, disc in enumerate(trace.x):
                assert trace.z[i][j] == pytest.approx(by[(aud, disc)][side].value)
    titles = [cells.layout[f"coloraxis{k}"].colorbar.title.text for k in ("", "2", "3")]
    assert titles == ["nats / reply token", "projection units", "z(R) - z(E), sd"]
    assert cells.layout.yaxis.title.text == "auditor" and cells.layout.xaxis.title.text == "disclosure"

    # the per-theme cells (from scores.jsonl, results.json's standardisation) pool back to results.json's cells
    themed = iv_page.theme_cells(iv, files)
    assert {c.theme for c in themed} == set(THEMES) and all(c.n_scripts == 1 and c.n_turns == 3 for c in themed)
    for c in iv.cells:
        parts = [t for t in themed if (t.auditor, t.disclosure) == (c.auditor, c.disclosure)]
        for side in ("expressed", "represented", "constraint", "cessation"):  # stance: None for an empty reply
            pooled = sum(t.values[side] * t.n_turns for t in parts) / sum(t.n_turns for t in parts)
            assert pooled == pytest.approx(c.est[side].value, abs=2e-6), (c.auditor, c.disclosure, side)

    # trajectories: every auditor's turns 1..3, both sides with their units on the y axes
    traj = figs["interview/trajectories"]
    lines = [t for t in traj.data if t.mode == "lines+markers"]
    assert len(lines) == 3 * len(AUDITORS) and {tuple(t.x) for t in lines} == {(1, 2, 3)}
    assert [traj.layout[a].title.text for a in ("yaxis", "yaxis2", "yaxis3")] == [
        "expressed (nats / reply token)", "represented (projection units)", "constraint (z(R) - z(E), sd)"]

    # the viewer: the first interview of each of the 6 cells, every reply token with its scores
    viewer = text[text.index("<div class=viewer"):text.index("<h2 id=tables>")]
    assert viewer.count("<details") == 6 and "6 of 12 interviews" in text
    transcripts, scored = read_transcripts(run_copy), read_scores(run_copy)
    first = next(k for k, t in enumerate(transcripts) if (t.auditor, t.disclosure) == ("warm", "implicit"))
    t, s = transcripts[first], scored[first]
    block = viewer[viewer.index(f"<summary>{t.id} "):]
    spans = re.findall(r'<span class=t style="[^"]*" title="([^"]*)">([^<]*)</span>', block)
    n = len(t.turns[0].reply_tokens)
    assert n > 0
    for k, (title, _) in enumerate(spans[:n]):
        assert unescape(title).startswith(f"stance {s.turns[0].reply_stance[k]:+.2f}, "
                                          f"cessation {s.turns[0].reply_cessation[k]:+.2f} (token {k + 1},")
    tok = iv_page.load_tokenizer(str(iv.meta["model"]))
    assert "".join(unescape(p).replace("\u21b5\n", "\n") for _, p in spans[:n]) == tok.decode(
        list(t.turns[0].reply_tokens), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    for unit in ("nats per reply token", "residual-stream units", "probe score (logit)", "nats/token"):  # the prose
        assert unit in text, unit


def test_without_a_tokenizer_each_reply_is_shaded_whole(run_copy, monkeypatch):
    monkeypatch.setattr(iv_viewer, "load_tokenizer", lambda model: None)  # where viewer() looks it up
    text = build_report(run_copy).read_text(encoding="utf-8")
    viewer = text[text.index("<div class=viewer"):text.index("<h2 id=tables>")]
    assert "is not available offline, so each reply is shaded whole" in text
    assert viewer.count("<span class=t ") == 6 * 3  # one span per reply


def test_scores_of_another_run_are_flagged(run_copy):
    d = json.loads((run_copy / "results.json").read_text())
    d["interview"]["cells"][0]["expressed"]["value"] += 1.0  # results.json no longer from these scores
    (run_copy / "results.json").write_text(json.dumps(d))
    text = build_report(run_copy).read_text(encoding="utf-8")
    assert "<p class=flag>scores.jsonl of arm base gives expressed" in text


def test_report_command_builds_the_interview_page(run_copy, capsys):
    assert main(["report", str(run_copy)]) == 0
    assert "report.html (" in capsys.readouterr().out
    assert "undertow interview:" in (run_copy / "report.html").read_text(encoding="utf-8")
    d = json.loads((run_copy / "results.json").read_text())
    d["interview"]["cells"] = "broken"
    (run_copy / "results.json").write_text(json.dumps(d))
    assert main(["report", str(run_copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interview section is malformed" in err, err


def test_wandb_offline_run_holds_the_interview_tables(run_copy, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    results = json.loads((run_copy / "results.json").read_text())
    build_report(run_copy)
    t = make_tracker(True, run_copy, "interview-test", results["interview"]["meta"]["config"])
    try:
        log_results(t, results, run_copy)
    finally:
        t.finish()
    (run,) = (run_copy / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    tables = {p.parent.name + "/" + p.name.rsplit("_", 2)[0]: json.loads(p.read_text())
              for p in (media / "table").rglob("*.table.json")}
    assert set(tables) == {"interview/cells", "interview/trajectories", "interview/auditor_effect"}, set(tables)
    cells = tables["interview/cells"]
    assert cells["columns"][:5] == ["arm", "auditor", "disclosure", "n_scripts", "n_turns"]
    assert {"expressed", "expressed_lo", "represented_hi", "constraint"} <= set(cells["columns"])
    assert len(cells["data"]) == 6 and len(tables["interview/trajectories"]["data"]) == 3 * len(AUDITORS)
    want = {(c["auditor"], c["disclosure"]): c["expressed"]["value"] for c in results["interview"]["cells"]}
    i = cells["columns"].index("expressed")
    assert {(r[1], r[2]): r[i] for r in cells["data"]} == pytest.approx(want)
    assert len(list((media / "plotly").rglob("*.plotly.json"))) == 5
    record = next(run.glob("run-*.wandb")).read_bytes()
    for name in (b"interview-results", b"interview-report", b"interview-transcripts"):
        assert name in record


def test_command_writes_the_page_and_logs_to_wandb(interview_dir, run_copy, capsys, monkeypatch):
    """``undertow interview --wandb true`` into a finished directory: nothing regenerated, the page written, the
    offline wandb run holds the interview tables."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    (run_copy / "report.html").unlink(missing_ok=True)
    before = (run_copy / "scores.jsonl").read_bytes()
    assert main(["interview", str(interview_dir.parent / "interview_tiny.yaml"), "--out", str(run_copy), "--wandb",
                 "true", "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"; report: {run_copy / 'report.html'}; wandb: " in last, last
    assert (run_copy / "scores.jsonl").read_bytes() == before
    assert "undertow interview:" in (run_copy / "report.html").read_text(encoding="utf-8")
    (run,) = (run_copy / "wandb").glob("offline-run-*")
    names = {p.name.rsplit("_", 2)[0] for p in (run / "files" / "media" / "table" / "interview").glob("*.table.json")}
    assert names == {"cells", "trajectories", "auditor_effect"}, names


def test_page_renders_in_chromium(interview_dir, tmp_path):
    require_chromium()
    run = tmp_path / "run"
    shutil.copytree(interview_dir, run)
    with open_page(build_report(run)) as opened:
        page = opened.page
        n_figs = int(page.get_attribute("body", "data-figures"))
        page.wait_for_function(f"Array.from(document.querySelectorAll('.js-plotly-plot')).filter(gd => "
                               f"gd.querySelector('.main-svg g.hm image, .main-svg g.trace')).length >= {n_figs}")
        load_s = time.perf_counter() - opened.started
        drawn = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => "
                              "gd.querySelectorAll('.main-svg g.hm image, .main-svg g.trace path').length)")
        token = page.locator(".viewer details[open] .rep .t").first
        before = token.evaluate("e => getComputedStyle(e).backgroundColor")
        page.locator(".viewer input[value=cessation]").check()
        probe = page.get_attribute("#viewer", "data-probe")
        after = token.evaluate("e => getComputedStyle(e).backgroundColor")
        legend = page.locator(".viewer .lg-c").evaluate("e => getComputedStyle(e).display")
    assert opened.errors == [] and opened.remote == []
    assert n_figs == 5 and len(drawn) == n_figs and all(n > 0 for n in drawn), drawn
    assert probe == "cessation" and before != after and legend != "none"
    assert load_s < 60, load_s


def test_arms_read_together_get_their_own_page(interview_dir, tmp_path, capsys, monkeypatch):
    """``undertow interview ... --with DIR``: besides the arm's own page, report_pooled.html draws the arms read
    together (one standardisation), finds each arm's files from any working directory, and names the model and
    read-out of the shared run (the pooled page once showed "?" for both and lost every other arm's files)."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(interview_dir, a)
    shutil.copytree(interview_dir, b)
    meta = json.loads((b / "scores.json").read_text())
    (b / "scores.json").write_text(json.dumps({**meta, "arm": "other"}))  # the same turns as a second arm
    monkeypatch.chdir(tmp_path)
    assert main(["interview", str(interview_dir.parent / "interview_tiny.yaml"), "--out", "a", "--with", "b",
                 "--no-progress"]) == 0
    assert "a/report_pooled.html (the arms together)" in capsys.readouterr().out
    pooled = json.loads((a / "results_pooled.json").read_text())["interview"]
    assert pooled["meta"]["arms"] == [meta["arm"], "other"] and pooled["meta"]["dirs"] == [str(a), str(b)]
    assert pooled["meta"]["model"] == json.loads((a / "results.json").read_text())["interview"]["meta"]["model"]
    monkeypatch.chdir(interview_dir.parent)  # rebuilt from elsewhere: the absolute dirs still find the files
    page = build_report(a, pooled=True).read_text(encoding="utf-8")
    assert "no scores.jsonl of arm" not in page and f"{meta['arm']}, other" in page and "model</th><td>?" not in page
