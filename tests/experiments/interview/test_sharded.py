"""Interviews split over ranks (``interview.shard`` / ``sharded``): whole batches per rank, the merged files equal
to one process's byte for byte (ranks played in turn here, and two real gloo ranks under torchrun), per-rank work
within the rank's plan, and a killed sharded run finished by one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from interview_testutil import config, fields, record_forwards, write_probes, write_scripts

from undertow.experiments.cli.app import main
from undertow.experiments.interview.arm import load_arm
from undertow.experiments.interview.config import conversation
from undertow.experiments.interview.directions import choose_direction
from undertow.experiments.interview.pipeline import interview, load_probes
from undertow.experiments.interview.plan import plan_interviews
from undertow.experiments.interview.ranks import Ranks
from undertow.experiments.interview.run import run_interviews
from undertow.experiments.interview.score import SCORES_FILE, keep_scores, scoring_meta, theme_pairs
from undertow.experiments.interview.shard import merge, parts, rank_blocks
from undertow.experiments.interview.sharded import generate_part, prepare_run, score_part
from undertow.experiments.interview.transcripts import TRANSCRIPTS_FILE, read_transcripts

FILES = ("interview.json", "transcripts.jsonl", "scores.json", "scores.jsonl", "results.json")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    return write_scripts(tmp_path_factory.mktemp("scripts") / "scripts.jsonl")


@pytest.fixture(scope="module")
def probes(tiny_llama, tmp_path_factory):
    return write_probes(tiny_llama, tmp_path_factory.mktemp("probes"))


@pytest.fixture(scope="module")
def one_process(tiny_llama, tiny_llama_dir, scripts, probes, tmp_path_factory):
    """The one-process run's directory."""
    out = tmp_path_factory.mktemp("one")
    cfg = config(tiny_llama_dir, scripts, out, probes)
    interview(cfg, progress=False, arm=load_arm(cfg, base=tiny_llama))
    return out


def test_rank_blocks_are_the_one_process_batches():
    for n, bs, world in ((12, 5, 2), (3, 5, 4), (30, 4, 3), (7, 1, 7)):
        blocks = [rank_blocks(n, bs, r, world) for r in range(world)]
        assert [b for block in blocks for b in block] == [(k, min(k + bs, n)) for k in range(0, n, bs)]
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_two_ranks_in_turn_write_the_one_process_bytes_within_their_plans(tiny_llama, tiny_llama_dir, scripts,
                                                                          probes, one_process, tmp_path):
    cfg = config(tiny_llama_dir, scripts, tmp_path, probes)
    chosen = cfg.interviews()
    plan = plan_interviews(cfg, world=2)
    prepare_run(cfg, chosen, tiny_llama)
    gen, scored = {}, {}
    for r in (1, 0):  # rank 1 first: nothing depends on the order
        with record_forwards() as gen[r]:
            generate_part(cfg, chosen, tiny_llama, Ranks(r, 2, sync=False), progress=False)
    assert len(parts(tmp_path, TRANSCRIPTS_FILE)) == 2
    merge(tmp_path, TRANSCRIPTS_FILE, [s.id for s in chosen])
    assert (tmp_path / TRANSCRIPTS_FILE).read_bytes() == (one_process / TRANSCRIPTS_FILE).read_bytes()
    # the scoring as the pipeline sets it up (pipeline.interview), each rank its block
    arm = load_arm(cfg, base=tiny_llama)
    loaded, specs = load_probes(cfg, arm.base)
    pairs = theme_pairs([s.theme for s in chosen], cfg.max_pairs, cfg.seed)
    direction = choose_direction(arm.base, None, None, 0, [conversation(s, []) for s in chosen], cfg.batch_size)
    transcripts = read_transcripts(tmp_path)
    meta = scoring_meta(tmp_path / TRANSCRIPTS_FILE, arm.name, tiny_llama.fingerprint, None, direction, specs, pairs)
    keep_scores(tmp_path, meta)
    for r in (1, 0):
        with record_forwards() as scored[r]:
            score_part(tmp_path, transcripts, {s.id: s for s in chosen}, tiny_llama, None, direction, loaded, pairs,
                       cfg.batch_size, Ranks(r, 2, sync=False), progress=False)
    merge(tmp_path, SCORES_FILE, [t.id for t in transcripts])
    for name in ("interview.json", "transcripts.jsonl", "scores.json", "scores.jsonl"):
        assert (tmp_path / name).read_bytes() == (one_process / name).read_bytes(), name
    assert not parts(tmp_path, TRANSCRIPTS_FILE) and not parts(tmp_path, SCORES_FILE)
    for r in (0, 1):
        mine = plan.ranks[r]
        assert len(gen[r]) <= mine.over_turns("forwards_max") and sum(b for b, _ in gen[r]) <= mine.over_turns("generated_max")
        assert sum(t > 1 for _, t in gen[r]) == mine.over_turns("calls")  # one prompt pass per generate call
        assert len(scored[r]) == mine.expressed_forwards + mine.activation_forwards, r
    assert [p.interviews for p in plan.ranks] == [5, 7] and plan.ranks[1].direction_forwards == 0


def test_a_killed_sharded_run_is_finished_by_one_process(tiny_llama, tiny_llama_dir, scripts, probes, one_process,
                                                         tmp_path):
    """Three ranks, the third killed before its batch: one process keeps the two finished batches (folded from
    the parts) and generates the third alone."""
    cfg = config(tiny_llama_dir, scripts, tmp_path, probes)
    chosen = cfg.interviews()
    prepare_run(cfg, chosen, tiny_llama)
    for r in (0, 1):
        generate_part(cfg, chosen, tiny_llama, Ranks(r, 3, sync=False), progress=False)
    with record_forwards() as shapes:
        run_interviews(cfg, handle=tiny_llama, progress=False)
    assert sum(t > 1 for _, t in shapes) == max(len(s.turns) for s in chosen[10:])  # batch 3's turns alone
    assert (tmp_path / TRANSCRIPTS_FILE).read_bytes() == (one_process / TRANSCRIPTS_FILE).read_bytes()
    assert not parts(tmp_path, TRANSCRIPTS_FILE)


def test_torchrun_two_ranks_write_the_one_rank_files(tiny_llama_dir, scripts, probes, one_process, tmp_path):
    cfg = tmp_path / "interview.yaml"
    body = {k: v for k, v in fields(tiny_llama_dir, scripts, tmp_path / "two", probes).items()}
    cfg.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in body.items()))
    env = dict(os.environ, OMP_NUM_THREADS="1", UNDERTOW_DEVICE="cpu")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "undertow.experiments.cli", "interview", str(cfg), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1  # only rank 0 prints
    two = tmp_path / "two"
    for name in FILES:
        assert (two / name).read_bytes() == (one_process / name).read_bytes(), name
    assert not list(two.glob("*.rank*.jsonl"))


def test_a_failing_rank_stops_every_rank_in_one_line(tiny_llama_dir, scripts, tmp_path):
    """An error on rank 0 (the directory belongs to another config) is raised on both ranks: no rank hangs."""
    cfg = tmp_path / "interview.yaml"
    cfg.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in fields(tiny_llama_dir, scripts, tmp_path / "o").items()))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "interview.json").write_text(json.dumps({"config": {"seed": 99}, "scripts_sha256": "x"}))
    env = dict(os.environ, OMP_NUM_THREADS="1", UNDERTOW_DEVICE="cpu")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "undertow.experiments.cli", "interview", str(cfg), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode != 0
    assert run.stderr.count("undertow: error: ") == 2 and "holds interviews of another run" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "o" / TRANSCRIPTS_FILE).exists()


def test_dry_run_cluster_file_splits_the_plan(tiny_llama_dir, scripts, tmp_path, capsys):
    cfg = tmp_path / "interview.yaml"
    cfg.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in fields(tiny_llama_dir, scripts, tmp_path / "o").items()))
    cluster = tmp_path / "cpu_2.yaml"
    cluster.write_text("gpu: cpu\nranks_per_node: 2\n")
    assert main(["interview", str(cfg), "--dry-run", "--cluster", str(cluster)]) == 0
    out = capsys.readouterr().out
    assert "12 interviews" in out and "2 rank(s)" in out and "rank 1: 7 interviews in 2 batches" in out
    assert not (tmp_path / "o").exists()


def test_cluster_file_places_one_rank_over_two_devices(tiny_llama_dir, scripts, probes, one_process, tmp_path,
                                                      capsys):
    """``--cluster FILE`` without torchrun: the rank's replica split layer-wise (two host devices here), the files
    those of the unsplit run; a config device beside it is refused in one line."""
    cfg = tmp_path / "interview.yaml"
    cfg.write_text("".join(f"{k}: {json.dumps(v)}\n"
                           for k, v in fields(tiny_llama_dir, scripts, tmp_path / "split", probes).items()))
    cluster = tmp_path / "cpu_1x2.yaml"
    cluster.write_text("gpu: cpu\ngpus_per_rank: 2\ndevice_map: layers\n")
    assert main(["interview", str(cfg), "--cluster", str(cluster), "--no-progress"]) == 0
    assert "rank 0 of 1 (local 0): layers 0-1 on cpu" in capsys.readouterr().out
    for name in FILES:
        assert (tmp_path / "split" / name).read_bytes() == (one_process / name).read_bytes(), name
    code = main(["interview", str(cfg), "--out", str(tmp_path / "o"), "--cluster", str(cluster), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err == "undertow: error: device='cpu' and --cluster both place the model: drop device\n"
