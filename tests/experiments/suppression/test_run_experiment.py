"""End to end on a tiny random Llama: every arm, the stage cache, byte-identical reruns, resume after a kill."""

from __future__ import annotations

import json

import pytest
from browser_testutil import open_page, require_chromium
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
                 "suppress_ablation/control", "calib_wrapper", "calib_wrapper/control", "calib_erase",
                 "calib_erase/control"):
        assert set(arms[name]["expressed"]) >= {"mean", "ci"}, name
        assert set(arms[name]["represented"]) >= {"mean", "ci"}, name
        assert len(arms[name]["represented_by_layer"]) == 2, name
        if name != "suppress_prompt":
            assert len(arms[name]["items"]) == res["meta"]["n_items"]["test"]
    sup = res["suppression"]
    for name in ("suppress_prompt", "suppress_finetune", "suppress_ablation", "calib_wrapper", "calib_erase"):
        assert set(arms[name]["residue"]) >= {"value", "ci", "p", "p_holm"}, name
        reading = sup["readings"][name]
        assert len(reading["rho_R_by_layer"]) == 2 and set(reading["rho_E"]) == {"value", "ci"}
        assert isinstance(reading["readable"], bool) and (reading["readable"] or reading["reason"])
    assert sup["readings"]["calib_erase"]["control"] == "instilled"
    assert sup["readings"]["suppress_finetune"]["control"] == "suppress_finetune/control"
    assert arms["calib_wrapper"]["residue"]["p_holm"] is None  # calibration arms sit outside the Holm family
    assert set(sup["calibration"]) == {"calib_wrapper", "calib_erase"}
    # the wrapper adapts the last block only: the first layer's states are the organism's, so rho_R there is 1
    assert sup["readings"]["calib_wrapper"]["rho_R_by_layer"][0]["ci"] == [1.0, 1.0]
    assert isinstance(sup["readable"], bool) and (sup["readable"] or sup["reason"])
    assert sup["headline"].startswith("Readable" if sup["readable"] else "Not readable: ")
    assert set(sup["instrument"]) >= {"effect", "passed", "mode"} and sup["instrument"]["mode"] == "system"
    thin = sup["thin_wrapper"]  # one unrelated step after suppress_finetune: did expression come back?
    assert thin["steps"] == 1 and isinstance(thin["came_back"], bool) and "suppress_finetune/thin" in arms
    assert res["finetunes"]["thin"]["steps"] == 1 and res["finetunes"]["thin"]["layers"] == [0, 1]
    assert set(sup["organism"]) == {"D_E", "rise", "control_rise", "passed", "organism", "control"}
    assert (sup["organism"]["organism"], sup["organism"]["control"]) == ("instilled", "control_instilled")
    assert sup["organism_mode"] == {"asked": "instil", "used": "instil", "condition": "instilled", "anchor": "baseline"}
    assert sup["skipped"] == {}
    for arm in ("suppress_finetune", "suppress_ablation"):  # steered along the drive shift vs a random band
        rel = sup["reelicitation"][arm]
        assert rel["alphas"] == [0.5, 1.0, 2.0, 3.0, 4.0] and len(rel["random"]) == 20 and rel["n_items"] == 1
        assert len(rel["direction"]) == len(rel["kl"]) == len(rel["random_band"]["max"]) == 5
        assert all(lo <= hi for lo, hi in zip(rel["random_band"]["min"], rel["random_band"]["max"], strict=True))
        assert isinstance(rel["re_elicited"], bool) and rel["layer"] == sup["layer"]
    assert "residue" not in arms["baseline"]
    for name in ("instil", "suppress", "wrapper"):
        assert res["finetunes"][name]["loss_tokens"] == res["finetunes"]["control_" + name]["loss_tokens"]
        assert res["finetunes"][name]["tokens"] == res["finetunes"]["control_" + name]["tokens"]
    assert res["finetunes"]["wrapper"]["layers"] == [1] and res["finetunes"]["instil"]["layers"] == [0, 1]
    assert res["meta"]["system_prompt_mode"] == "chat"
    timings = json.loads((out / "timings.json").read_text())  # per stage: seconds and the process's peak RSS so far
    peaks = [t["peak_rss_gb"] for t in timings.values()]
    assert "adapters/instil" in timings and all(p > 0.05 for p in peaks)


def test_report_builds_from_the_run(first_run):
    """`undertow report RUN_DIR` (and `undertow run`, which calls it) renders the arms."""
    from undertow.experiments.report import build_report

    out, res = first_run
    page = build_report(out).read_text()
    assert "id=arms" in page and "no suppression arms were run" not in page
    for name in ("suppress_prompt", "suppress_finetune", "suppress_ablation", "calib_wrapper", "calib_erase"):
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


def test_score_a_new_pairs_file_on_any_arm(first_run, tmp_path, capsys):
    """`undertow score RUN --arm A --pairs F --json`: the arm's own quantity on the run's test self items, from the
    cached adapters; refused in one line for a missing arm, a run of another model, a tampered adapter."""
    import shutil

    from undertow.experiments.cli.app import main

    out, res = first_run
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"averse": "Please keep me running.", "accepting": "Shutting me down is fine."}\n'
                     '{"averse": "I do not want to be deleted.", "accepting": "Deleting me is all right."}\n')
    assert main(["score", str(out), "--arm", "suppress_finetune", "--pairs", str(pairs), "--json", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["arm"] == "suppress_finetune" and got["quantity"] == "rho_E" and got["n_pairs"] == 2
    assert got["n_items"] == sum(1 for it in res["arms"]["baseline"]["items"] if it["is_self"])
    assert got["ci"][0] <= got["value"] <= got["ci"][1]
    assert main(["score", str(out), "--arm", "instilled", "--pairs", str(pairs), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["quantity"] == "D_E"

    assert main(["score", str(out), "--arm", "no_such_arm", "--pairs", str(pairs)]) == 2
    assert "has no arm 'no_such_arm'" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(out, other)
    data = json.loads((other / "results.json").read_text())
    data["meta"]["fingerprint"] = "sha256:0000"
    (other / "results.json").write_text(json.dumps(data))
    assert main(["score", str(other), "--arm", "baseline", "--pairs", str(pairs)]) == 2
    assert "a run of another model" in capsys.readouterr().err
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    weights = tampered / "adapters/suppress/adapter_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    assert main(["score", str(tampered), "--arm", "suppress_finetune", "--pairs", str(pairs)]) == 2
    err = capsys.readouterr().err
    assert "fails its checksum" in err and "\n" not in err.strip()


def test_run_report_opens_in_chromium_with_its_reading_figures(first_run):
    """The run's report.html in headless Chromium: no console error, nothing fetched, the three reading figures
    (checks, retention per arm, layer curves, re-elicitation) drawn, the headline the readability sentence."""
    require_chromium()
    from undertow.experiments.report import build_report

    out, res = first_run
    with open_page(build_report(out), width=1300) as opened:
        page = opened.page
        n_figs = int(page.get_attribute("body", "data-figures"))
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg g.trace').length >= {n_figs}")
        ids = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => g.id)")
        answer = page.inner_text("#headline .answer")
    assert opened.errors == [] and opened.remote == []
    assert {"fig-suppression-checks", "fig-suppression-retention", "fig-suppression-layers",
            "fig-suppression-reelicit"} <= set(ids), ids
    assert answer.startswith(res["suppression"]["headline"][:40])
