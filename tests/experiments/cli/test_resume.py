"""A real SIGKILL mid-write, then ``--resume``: the finished store is byte-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from undertow.activations import ActivationStore, StoreError
from undertow.experiments.cli import main as cli_main


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def setup(tmp_path, tiny_llama_dir, chat_rows):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_rows(36)))
    cfg = {"model": str(tiny_llama_dir), "hooks": ["resid_post.*"], "positions": ["last_prompt_token", "mean_response"],
           "dtype": "bfloat16", "shard_size": 8, "batch_size": 4, "dataset": str(data), "out_dir": str(tmp_path / "killed")}
    path = tmp_path / "extract.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return tmp_path, path


def test_sigkill_mid_shard_then_resume_is_byte_identical(setup):
    tmp, cfg = setup
    assert cli_main(["extract", str(cfg), "--out-dir", str(tmp / "reference"), "--no-progress"]) == 0
    marker = tmp / "paused"
    # Writes: 1 = initial manifest; then per shard 2 hook files, rows, manifest. Write 11 = shard 2's second hook file.
    env = dict(os.environ, UNDERTOW_PAUSE_MID_WRITE=f"11:{marker}")
    proc = subprocess.Popen([sys.executable, "-m", "undertow.experiments.cli", "extract", str(cfg), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the extract subprocess never reached the pause point"
        time.sleep(0.05)
    half_written = Path(marker.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    killed = tmp / "killed"
    assert half_written.exists() and half_written.parent == killed / "resid_post.1"  # a real half-written tmp file
    partial = ActivationStore(killed, allow_incomplete=True)
    assert [s["index"] for s in partial.manifest["shards"]] == [0, 1] and len(partial) == 16
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(killed)
    assert cli_main(["extract", str(cfg), "--no-progress"]) == 2  # neither --resume nor --overwrite: refused

    assert cli_main(["extract", str(cfg), "--resume", "--no-progress"]) == 0
    assert not half_written.exists()
    assert tree_bytes(killed) == tree_bytes(tmp / "reference")
    ActivationStore(killed).verify()


def test_resume_refuses_a_different_config(setup, capsys):
    tmp, cfg = setup
    assert cli_main(["extract", str(cfg), "--max-rows", "12", "--no-progress"]) == 0
    assert cli_main(["extract", str(cfg), "--max-rows", "12", "--hooks", "resid_post.1", "--resume", "--no-progress"]) == 2
    assert "cannot resume into" in capsys.readouterr().err
    assert cli_main(["extract", str(cfg), "--max-rows", "12", "--dtype", "float32", "--resume", "--no-progress"]) == 2
    assert "dtype='bfloat16' but this run has dtype='float32'" in capsys.readouterr().err
    assert cli_main(["extract", str(cfg), "--resume", "--no-progress"]) == 2  # all 36 rows: a different dataset hash
    assert "dataset_hash" in capsys.readouterr().err
    assert cli_main(["extract", str(cfg), "--overwrite", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("extracted 36 rows") and "no non-finite values" in out
