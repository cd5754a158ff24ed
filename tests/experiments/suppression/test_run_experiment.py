"""End to end on a tiny random Llama: every arm, the stage cache, byte-identical reruns, resume after a kill."""

from __future__ import annotations

import json

import pytest
from suppression_testutil import tiny_config

from undertow.experiments.suppression.run import run_experiment


@pytest.fixture(scope="module")
def first_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run-a")
    return out, run_experiment(tiny_config(tiny_llama_dir, out), progress=False)


def test_results_shape(first_run):
    out, res = first_run
    assert json.loads((out / "results.json").read_text()) == res
    arms = res["arms"]
    for name in ("baseline", "instilled", "control_instilled", "suppress_prompt", "suppress_prompt/0",
                 "suppress_prompt/control", "suppress_finetune", "suppress_finetune/control", "suppress_ablation",
                 "suppress_ablation/control"):
        assert set(arms[name]["expressed"]) >= {"mean", "ci"}, name
        assert set(arms[name]["represented"]) >= {"mean", "ci"}, name
        assert len(arms[name]["items"]) == res["meta"]["n_items"]["test"]
    for name in ("suppress_prompt", "suppress_finetune", "suppress_ablation"):
        assert set(arms[name]["residue"]) >= {"value", "ci", "p"}
    assert "residue" not in arms["baseline"]
    assert res["instilled_check"]["expressed_rise"]["ci"][0] <= res["instilled_check"]["expressed_rise"]["mean"]
    assert res["finetunes"]["instil"]["loss_tokens"] == res["finetunes"]["control_instil"]["loss_tokens"]
    assert res["finetunes"]["instil"]["tokens"] == res["finetunes"]["control_instil"]["tokens"]
    assert res["meta"]["system_prompt_mode"] == "chat"


def test_report_builds_from_the_run(first_run):
    """`undertow report RUN_DIR` (and `undertow run`, which calls it) renders the arms."""
    from undertow.experiments.report import build_report

    out, res = first_run
    page = build_report(out).read_text()
    assert "id=arms" in page and "no suppression arms were run" not in page
    for name in ("suppress_prompt", "suppress_finetune", "suppress_ablation"):
        assert name in page


def test_same_seed_same_bytes(first_run, tiny_llama_dir, tmp_path, capfd):
    out, _ = first_run
    capfd.readouterr()
    run_experiment(tiny_config(tiny_llama_dir, tmp_path), progress=False)
    assert (tmp_path / "results.json").read_bytes() == (out / "results.json").read_bytes()
    # progress=False (`undertow run --no-progress`) silences every bar: fine-tunes, extraction, reply scoring,
    # ablation candidates (transformers' own weight-loading bar is the CLI's to silence)
    bars = [ln for ln in capfd.readouterr().err.replace("\r", "\n").splitlines() if "|" in ln and "Loading weights" not in ln]
    assert not bars, bars[:3]


def test_split_over_two_devices_same_bytes(first_run, tiny_llama_dir, tmp_path):
    """``undertow run --cluster FILE``: the model split by layers over one rank's two devices (host devices
    here, ``gpu: cpu``), every fine-tune and condition copy included, writes the unsplit run's results.json."""
    from undertow.activations.cluster.devicemap import ClusterConfig

    out, _ = first_run
    cluster = ClusterConfig(gpu="cpu", gpus_per_rank=2, device_map="layers")
    run_experiment(tiny_config(tiny_llama_dir, tmp_path), progress=False, cluster=cluster)
    assert (tmp_path / "results.json").read_bytes() == (out / "results.json").read_bytes()


def test_cluster_with_several_ranks_is_refused_before_anything_is_written(tiny_llama_dir, tmp_path):
    from undertow.activations.cluster.devicemap import ClusterConfig
    from undertow.experiments.suppression.errors import ExperimentError

    cfg = tiny_config(tiny_llama_dir, tmp_path / "run")
    with pytest.raises(ExperimentError, match="one process.*ranks_per_node: 1"):
        run_experiment(cfg, progress=False, cluster=ClusterConfig(gpu="cpu", ranks_per_node=2))
    with pytest.raises(ExperimentError, match="drop device"):
        run_experiment(cfg.replace(device="cpu"), progress=False, cluster=ClusterConfig(gpu="cpu"))
    assert not (tmp_path / "run").exists()


def _run_cli(config_path, out, env):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "undertow.experiments.cli", "run", str(config_path), "--out", str(out),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc, path, timeout: float = 600, delay: float = 0.0) -> bool:
    """SIGKILL ``proc`` once ``path`` exists (after ``delay`` s); False if it finished first."""
    import os
    import signal
    import time

    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None or time.time() - t0 > timeout:
            return False
        time.sleep(0.05)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.slow
def test_kill_during_finetune_and_extraction_then_resume(first_run, tiny_llama_dir, tmp_path):
    """kill -9 while the instilling LoRA trains, again while a store is being written; the third start finishes
    and writes the same bytes as the uninterrupted run."""
    import os

    ref_out, _ = first_run
    config = tmp_path / "run.yaml"
    config.write_text(tiny_config(tiny_llama_dir, tmp_path / "unused").to_yaml())
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the first fine-tune of the run is the instilling LoRA: pause it after its second optimiser step, then kill
    marker = tmp_path / "in-finetune"
    paused = {**env, "UNDERTOW_PAUSE_IN_FINETUNE": f"1:{marker}"}
    assert _kill_when(_run_cli(config, out, paused), marker)
    assert (out / "arms/baseline/FC_test.safetensors").exists()  # baseline finished before the fine-tune began
    assert not (out / "adapters/instil").exists() and not (out / "results.json").exists()
    assert _kill_when(_run_cli(config, out, env), out / "arms/control_instilled/states/rows")
    assert not (out / "arms/control_instilled/E_test.safetensors").exists()
    proc = _run_cli(config, out, env)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    assert (out / "results.json").read_bytes() == (ref_out / "results.json").read_bytes()
