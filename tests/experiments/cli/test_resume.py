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


def _kill_at_write(cfg: Path, n: int, marker: Path) -> None:
    """Run ``extract cfg`` in a subprocess and SIGKILL it half way through its ``n``-th atomic write."""
    env = dict(os.environ, UNDERTOW_PAUSE_MID_WRITE=f"{n}:{marker}")
    cmd = [sys.executable, "-m", "undertow.experiments.cli", "extract", str(cfg), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the extract subprocess never reached the pause point"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_redoes_kept_shards_that_fail_their_size_or_sha256(setup, caplog, capsys, monkeypatch):
    """Issue 25: shards damaged after they were listed are redone, one line each naming the file and why; a
    damage of the same size (only the sha256 tells) even after a read memoised the shard's digest."""
    tmp, cfg = setup
    monkeypatch.setenv("UNDERTOW_CACHE", str(tmp / "cache"))
    assert cli_main(["extract", str(cfg), "--out-dir", str(tmp / "reference"), "--no-progress"]) == 0
    _kill_at_write(cfg, 14, tmp / "paused")  # writes: 1 manifest, then 4 per shard; 14 = shard 3's first file
    killed = tmp / "killed"
    assert [s["index"] for s in json.loads((killed / "manifest.json").read_text())["shards"]] == [0, 1, 2]
    ActivationStore(killed, allow_incomplete=True)["resid_post.1@mean_response"][:]  # memoises the digests
    f = killed / "resid_post.1" / "00001.safetensors"
    with f.open("r+b") as h:  # 4 bytes inside the tensor data: same size, intact header
        h.seek(f.stat().st_size - 600)
        h.write(b"\x7f\x7f\x7f\x7f")
    rows0 = killed / "rows" / "00000.jsonl"
    listed = rows0.stat().st_size
    rows0.write_bytes(rows0.read_bytes()[:-5])
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert cli_main(["extract", str(cfg), "--resume", "--no-progress"]) == 0
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("redoing")] == [
        f"redoing shard 0 (rows 0-8) of {killed}: rows/00000.jsonl has {listed - 5:,} bytes, the manifest "
        f"lists {listed:,} (truncated or replaced)",
        f"redoing shard 1 (rows 8-16) of {killed}: resid_post.1/00001.safetensors does not match its sha256 "
        "in the manifest (modified or corrupted)",
    ]
    assert f"resuming {killed}: 1/5 shards complete, 28 rows to go" in capsys.readouterr().err
    assert tree_bytes(killed) == tree_bytes(tmp / "reference")
