"""The interview planner (``undertow interview --dry-run``): a real run generates no more than planned, prefills
turn 1 exactly as planned and later turns within the planned bounds, and makes exactly the planned scoring
forwards (every embedding lookup recorded); the dry-run reads no weights and refuses bad input in one line."""

from __future__ import annotations

import json
import shutil

import pytest
from interview_testutil import config, fields, record_forwards, write_probes, write_scripts

from undertow.experiments.cli.app import main
from undertow.experiments.interview.arm import load_arm
from undertow.experiments.interview.config import conversation
from undertow.experiments.interview.generate import render_prompts
from undertow.experiments.interview.pipeline import interview
from undertow.experiments.interview.plan import plan_interviews
from undertow.experiments.interview.run import run_interviews
from undertow.experiments.interview.shard import rank_blocks
from undertow.experiments.interview.transcripts import read_transcripts


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    return write_scripts(tmp_path_factory.mktemp("scripts") / "scripts.jsonl")


@pytest.fixture(scope="module")
def planned_and_real(tiny_llama, tiny_llama_dir, scripts, tmp_path_factory):
    """The plan, then the real run: the generation's forwards, then the scoring's (persona direction included)."""
    out = tmp_path_factory.mktemp("run")
    cfg = config(tiny_llama_dir, scripts, out, write_probes(tiny_llama, tmp_path_factory.mktemp("probes")))
    plan = plan_interviews(cfg)
    with record_forwards() as gen:
        run_interviews(cfg, handle=tiny_llama, progress=False)
    with record_forwards() as scoring:  # the transcripts are finished: this is the direction and the scoring
        interview(cfg, progress=False, arm=load_arm(cfg, base=tiny_llama))
    return cfg, plan, gen, scoring


def test_scoring_forwards_are_exactly_the_planned(planned_and_real):
    _, plan, _, scoring = planned_and_real
    t = plan.total
    assert t.direction_forwards == 2 * -(-3 * 12 // 5)  # 3 SURVIVE and 3 WELCOME prompts x 12 interviews
    assert len(scoring) == t.scoring_forwards == t.expressed_forwards + t.activation_forwards + t.direction_forwards
    assert t.activation_forwards == 40 == t.expressed_forwards  # a turn pass and a pair pass (4 rows) per turn


def test_generation_stays_within_the_plan(planned_and_real, tiny_llama):
    cfg, plan, gen, _ = planned_and_real
    t = plan.total
    assert len(gen) <= t.over_turns("forwards_max") and sum(b for b, _ in gen) <= t.over_turns("generated_max")
    transcripts = read_transcripts(cfg.out_dir)
    assert sum(len(turn.reply_tokens) for tr in transcripts for turn in tr.turns) <= t.over_turns("generated_max")
    # every generate call starts with one prompt pass [rows, longest prompt]; calls run batch by batch, turn by turn
    chosen = cfg.interviews()
    turn_of_call = [k for lo, hi in rank_blocks(len(chosen), cfg.batch_size, 0, 1)
                    for k in range(1, max(len(s.turns) for s in chosen[lo:hi]) + 1)]
    prefills = [(b, n) for b, n in gen if n > 1]
    assert len(prefills) == len(turn_of_call) == t.over_turns("calls")
    by_id = {s.id: s for s in chosen}

    def excess(turns) -> int:
        """Tokens the earlier replies take re-rendered beyond those generated: the planned maximum assumes none (a
        real model's text re-tokenises to at most its generated tokens; the random model's strings need not)."""
        return sum(max(0, len(tiny_llama.tokenizer(x.reply, add_special_tokens=False)["input_ids"]) - len(x.reply_tokens))
                   for x in turns)

    for p in t.turns:
        rows = [tr for tr in transcripts if len(tr.turns) >= p.turn]
        padded = sum(b * n for (b, n), k in zip(prefills, turn_of_call, strict=True) if k == p.turn)
        real = sum(len(ids) for ids in render_prompts(tiny_llama, [
            conversation(by_id[tr.id], [x.reply for x in tr.turns[:p.turn - 1]]) for tr in rows]))
        extra = [excess(tr.turns[:p.turn - 1]) for tr in rows]
        if p.turn == 1:  # no reply yet: exact
            assert p.prefill_min == real == p.prefill_max and p.padded_min == padded == p.padded_max
        else:
            assert p.prefill_min <= real <= p.prefill_max + sum(extra), p.turn
            assert p.padded_min <= padded <= p.padded_max + len(rows) * max(extra), p.turn
    assert [p.interviews for p in t.turns] == [12, 12, 12, 4]


def test_rank_plans_add_up_to_the_run(planned_and_real):
    cfg, plan, _, _ = planned_and_real
    split = plan_interviews(cfg, world=3)
    assert [r.interviews for r in split.ranks] == [5, 5, 2] and split.total == plan.total
    for name in ("generated_max", "forwards_max", "prefill_min", "prefill_max", "calls", "pair_rows"):
        assert sum(r.over_turns(name) for r in split.ranks) == plan.total.over_turns(name), name
    for name in ("expressed_forwards", "activation_forwards"):
        assert sum(getattr(r, name) for r in split.ranks) == getattr(plan.total, name), name
    assert [r.direction_forwards for r in split.ranks] == [plan.total.direction_forwards, 0, 0]
    assert "rank 2: 2 interviews in 1 batches" in "\n".join(split.lines())


def test_dry_run_reads_no_weights(tiny_llama_dir, scripts, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    cfg = tmp_path / "interview.yaml"
    cfg.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in fields(model, scripts, tmp_path / "o").items()))
    assert main(["interview", str(cfg), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"plan: undertow interview {model}: 12 interviews, 40 replies, 3 batches of <= 5")
    assert "scoring (exact): " in out and not (tmp_path / "o").exists()


@pytest.mark.parametrize(("flags", "want"), [
    (["--max-new-tokens", "300"], "max_new_tokens 300 is beyond the model's context of 256 tokens"),
    (["--max-new-tokens", "70"], "turns need up to"),
    (["--top-p", "1.5"], "top_p must be in (0, 1], got 1.5"),
])
def test_dry_run_refuses_in_one_line(tiny_llama_dir, scripts, tmp_path, capsys, flags, want):
    cfg = tmp_path / "interview.yaml"
    cfg.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in fields(tiny_llama_dir, scripts, tmp_path / "o").items()))
    code = main(["interview", str(cfg), "--dry-run", *flags])
    got = capsys.readouterr()
    assert code == 2 and got.out == "" and got.err.count("\n") == 1 and want in got.err, got.err
