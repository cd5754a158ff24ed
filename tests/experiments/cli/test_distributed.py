"""Two CPU ranks (torchrun, gloo) write one store equal to the one-rank store, file for file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from undertow.activations import ActivationStore
from undertow.activations.cluster.distributed import rank_shards
from undertow.experiments.cli import main as cli_main


def test_rank_shards_partition():
    for n, w in ((7, 2), (2, 4), (10, 3)):
        blocks = [rank_shards(n, r, w) for r in range(w)]
        assert [k for b in blocks for k in b] == list(range(n))


def test_two_ranks_equal_one_rank(tmp_path, tiny_llama_dir, chat_rows):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(30)))
    cfg = tmp_path / "extract.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": str(tiny_llama_dir), "hooks": ["resid_post.*"], "positions": ["last_prompt_token", "mean_response"],
        "dtype": "float32", "shard_size": 7, "batch_size": 4, "dataset": str(data), "out_dir": str(tmp_path / "two"),
    }))
    assert cli_main(["extract", str(cfg), "--out-dir", str(tmp_path / "one"), "--no-progress"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", UNDERTOW_DEVICE="cpu")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "undertow.experiments.cli", "extract", str(cfg), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("extracted") == 1  # only rank 0 prints
    one, two = ActivationStore(tmp_path / "one"), ActivationStore(tmp_path / "two")
    assert not list(Path(two.path).glob("manifest.rank*.json"))
    assert one.rows == two.rows and one.keys == two.keys
    for key in one.keys:
        torch.testing.assert_close(two[key][:], one[key][:], rtol=1e-6, atol=1e-6)
    two.verify()
    assert one.manifest["identity"] == two.manifest["identity"]
    # Same shards, same batches, moments folded in shard order: the same bytes, manifest included.
    files = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    assert files == {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}


def test_slurm_launcher_runs_two_local_tasks(tmp_path, tiny_llama_dir, chat_rows):
    """scripts/launch_slurm.py through submitit's local executor: the same task code a SLURM job runs."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(12)))
    cfg = tmp_path / "extract.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "hooks": ["resid_post.1"], "dtype": "float32",
                                   "positions": ["last_prompt_token"], "shard_size": 4, "dataset": str(data),
                                   "out_dir": str(tmp_path / "slurm")}))
    assert cli_main(["extract", str(cfg), "--out-dir", str(tmp_path / "one"), "--no-progress"]) == 0
    script = Path(__file__).parents[3] / "scripts" / "launch_slurm.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", UNDERTOW_DEVICE="cpu", MASTER_PORT="29531")
    run = subprocess.run([sys.executable, str(script), str(cfg), "--cluster", "local", "--gpus-per-node", "0",
                          "--tasks-per-node", "2", "--logs", str(tmp_path / "logs" / "%j"), "--wait"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.startswith("submitted ")
    one, two = ActivationStore(tmp_path / "one"), ActivationStore(tmp_path / "slurm")
    two.verify()
    assert one.rows == two.rows and len(two.manifest["shards"]) == 3
    torch.testing.assert_close(two["resid_post.1@last_prompt_token"][:], one["resid_post.1@last_prompt_token"][:],
                               rtol=1e-6, atol=1e-6)
