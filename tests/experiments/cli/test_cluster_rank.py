"""``undertow extract CONFIG --cluster FILE`` for real: each rank places its replica by the file (its devices,
a layer map over them, checked before any weight is read) and extracts its block of shards. On CPU the file
says ``gpu: cpu`` (every device of a rank is the host), so two gloo ranks, each split over ["cpu", "cpu"],
write the same bytes as one unsplit process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from undertow.activations.cluster.devicemap import ClusterConfig, rank_devices
from undertow.activations.cluster.rank import rank_placement
from undertow.activations.errors import DeviceError
from undertow.experiments.cli import main as cli_main


def _write(tmp_path, tiny_llama_dir, chat_rows, n_rows: int = 20) -> tuple:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(n_rows)))
    cfg = tmp_path / "extract.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": str(tiny_llama_dir), "hooks": ["embed", "resid_post.*", "mlp_out.1"],
        "positions": ["last_prompt_token", "mean_response"], "dtype": "float32", "shard_size": 6, "batch_size": 4,
        "dataset": str(data), "out_dir": str(tmp_path / "split"),
    }))
    return cfg


def _cluster(tmp_path, name: str, **fields) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"extract": "extract.yaml", **fields}))
    return str(path)


def _files(root) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_rank_devices_take_consecutive_gpus_and_cpu_ranks_take_the_host():
    two_by_two = ClusterConfig(gpus_per_rank=2, ranks_per_node=2, device_map="layers")
    assert rank_devices(two_by_two, 0) == ["cuda:0", "cuda:1"] and rank_devices(two_by_two, 1) == ["cuda:2", "cuda:3"]
    assert rank_devices(ClusterConfig(gpu="cpu", gpus_per_rank=2, device_map="layers"), 1) == ["cpu", "cpu"]


def test_two_gloo_ranks_each_split_over_two_cpus_write_the_unsplit_bytes(tmp_path, tiny_llama_dir, chat_rows):
    cfg = _write(tmp_path, tiny_llama_dir, chat_rows)
    cluster = _cluster(tmp_path, "cpu_2x2", gpu="cpu", gpus_per_rank=2, ranks_per_node=2, device_map="layers")
    assert cli_main(["extract", str(cfg), "--out-dir", str(tmp_path / "one"), "--no-progress"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("UNDERTOW_DEVICE", None)  # the cluster file alone says cpu
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "undertow.experiments.cli", "extract", str(cfg), "--cluster", cluster, "--no-progress"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0 of 2 (local 0): layers 0-1 on cpu" in run.stdout and run.stdout.count("extracted") == 1
    assert _files(tmp_path / "one") == _files(tmp_path / "split")  # rows in order, same shards: same bytes


def test_one_rank_split_without_torchrun_matches_and_records_its_map(tmp_path, tiny_llama_dir, chat_rows, capsys):
    from undertow.activations import ActivationStore

    cfg = _write(tmp_path, tiny_llama_dir, chat_rows, n_rows=9)
    cluster = _cluster(tmp_path, "cpu_1x2", gpu="cpu", gpus_per_rank=2, device_map="layers")
    placement = rank_placement(str(tiny_llama_dir), ClusterConfig(gpu="cpu", gpus_per_rank=2, device_map="layers"))
    assert placement.devices == ["cpu", "cpu"] and placement.device_map["model.layers.1"] == "cpu"
    assert placement.device_map["model.embed_tokens"] == "cpu" and placement.world_size == 1
    assert cli_main(["extract", str(cfg), "--out-dir", str(tmp_path / "one"), "--no-progress"]) == 0
    assert cli_main(["extract", str(cfg), "--cluster", cluster, "--no-progress"]) == 0
    assert "rank 0 of 1 (local 0): layers 0-1 on cpu" in capsys.readouterr().out
    one, split = ActivationStore(tmp_path / "one"), ActivationStore(tmp_path / "split")
    assert one.rows["id"] == split.rows["id"] == [f"row-{i}" for i in range(9)]
    for key in one.keys:
        torch.testing.assert_close(split[key][:], one[key][:], rtol=0, atol=0)


@pytest.fixture
def weightless_dir(tmp_path, tiny_llama_dir):
    """The tiny model's config and tokenizer without its weights: loading it would fail, planning must not."""
    out = tmp_path / "no-weights"
    shutil.copytree(tiny_llama_dir, out, ignore=shutil.ignore_patterns("*.safetensors"))
    return out


def test_a_missing_gpu_is_one_line_before_any_weight_is_read(tmp_path, weightless_dir, chat_rows, capsys):
    cfg = _write(tmp_path, weightless_dir, chat_rows, n_rows=3)
    missing = torch.cuda.device_count()  # cuda:0 .. cuda:missing: the last one is not here
    cluster = _cluster(tmp_path, "too_many", gpus_per_rank=missing + 1, device_map="layers")
    assert cli_main(["extract", str(cfg), "--cluster", cluster, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"on cuda:{missing}, but this machine has" in err and "CUDA_VISIBLE_DEVICES" in err
    assert re.search(r"device map puts (model\.\S+|lm_head) on", err)  # names the first module placed there
    one_gpu = _cluster(tmp_path, "one_gpu", gpus_per_rank=1)
    if missing == 0:
        assert cli_main(["extract", str(cfg), "--cluster", one_gpu, "--no-progress"]) == 2
        assert "the model on cuda:0, but this machine has no CUDA device visible" in capsys.readouterr().err


def test_a_launch_that_disagrees_with_the_cluster_file_is_refused(tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(DeviceError, match="= 2 ranks but WORLD_SIZE is 3: launch torchrun --nnodes 1 --nproc_per_node 2"):
        rank_placement(str(tiny_llama_dir), ClusterConfig(gpu="cpu", ranks_per_node=2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(DeviceError, match="LOCAL_RANK 2 but the cluster file has 2 rank"):
        rank_placement(str(tiny_llama_dir), ClusterConfig(gpu="cpu", ranks_per_node=2))
