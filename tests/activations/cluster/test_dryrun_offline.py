"""Dry-runs with the Hugging Face hub unreachable (a cluster login node): every committed config that names a hub
model plans from the shipped config.json and an estimated token count, decides in seconds, and says so."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml

from undertow.activations.cluster.dryrun import model_config_and_tokenizer
from undertow.activations.engine.render import render_rows
from undertow.activations.models import shipped

CONFIGS = Path(__file__).parents[3] / "experiments" / "configs"


def _hub_model(path: Path) -> str | None:
    data = yaml.safe_load(path.read_text()) or {}
    if "extract" in data:
        data = yaml.safe_load((path.parent / data["extract"]).read_text()) or {}
    model = data.get("model") or (data.get("data") or {}).get("model") or ""
    return model if model.count("/") == 1 and not (path.parent / model).exists() else None


def _dry_run_args(path: Path) -> list[str]:
    """The CLI line of the config's dry-run: a cluster file through its extraction, a run config on one H100."""
    data = yaml.safe_load(path.read_text())
    if "extract" in data:
        return ["extract", str(path.parent / data["extract"]), "--dry-run", "--cluster", str(path)]
    if "dataset" in data:
        return ["extract", str(path), "--dry-run", "--gpu", "H100"]
    return ["run", str(path), "--dry-run", "--gpu", "H100"]


ALL = sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "clusters").glob("*.yaml"))
HUB = [p for p in ALL if _hub_model(p)]
CLUSTERED = {yaml.safe_load(p.read_text())["extract"].rsplit("/", 1)[-1] for p in HUB if p.parent.name == "clusters"}
DRY_RUNS = [p for p in HUB if p.name not in CLUSTERED]  # an extraction with cluster files runs through them


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1, an empty HF cache, and no connection to anywhere: yields the addresses tried."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    tried = []

    def unreachable(address, *args, **kwargs):
        tried.append(address)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    shipped._probe_hub.cache_clear()
    yield tried
    shipped._probe_hub.cache_clear()


def test_the_committed_configs_name_the_three_hub_models():
    assert {_hub_model(p) for p in HUB} == {"meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct",
                                          "google/gemma-3-12b-it"}
    assert len(DRY_RUNS) >= 5  # 4 cluster files + the 8B run config


@pytest.mark.parametrize("path", DRY_RUNS, ids=[p.stem for p in DRY_RUNS])
def test_every_hub_config_dry_runs_with_the_hub_unreachable(path, no_hub, capsys):
    from undertow.experiments.cli.app import main

    assert main(_dry_run_args(path)) == 0  # before: ~40 s of retries per file, then an OfflineError
    out, err = capsys.readouterr()
    model = _hub_model(path)
    assert err.count(f"the plan uses the shipped config.json of {model} and an estimated token count") == 1
    assumptions = next(line for line in out.splitlines() if line.startswith("model: "))
    assert "tokens estimated" in assumptions and "per whitespace word" in assumptions
    assert no_hub == []  # not one connection attempt


@pytest.mark.parametrize("offline_by", ["HF_HUB_OFFLINE", "no connection"])
def test_the_hub_is_judged_unreachable_once_and_quickly(offline_by, no_hub, monkeypatch, capsys):
    if offline_by == "no connection":
        monkeypatch.delenv("HF_HUB_OFFLINE")
    t0 = time.perf_counter()
    for model in ("meta-llama/Llama-3.3-70B-Instruct", "google/gemma-3-12b-it", "meta-llama/Llama-3.1-8B-Instruct"):
        hf_config, tokenizer = model_config_and_tokenizer(model)
        assert isinstance(tokenizer, shipped.EstimatedTokenizer) and hf_config.name_or_path == ""
    assert time.perf_counter() - t0 < 30  # seconds, not ~40 s of retries per file
    # one connection attempt per process (none under HF_HUB_OFFLINE), then the hub's cache only
    assert no_hub == ([("huggingface.co", 443)] if offline_by == "no connection" else [])
    assert len(capsys.readouterr().err.strip().splitlines()) == 3  # one line per model


def test_a_hanging_connection_is_given_up_after_the_timeout(monkeypatch):
    """A login node whose DNS or firewall never answers: the check returns False at its timeout."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    def hang(*args, **kwargs):  # then fail as a connect that timed out would (the probe's thread ends quietly)
        time.sleep(30)
        raise TimeoutError("timed out (test)")

    monkeypatch.setattr(socket, "create_connection", hang)
    shipped._probe_hub.cache_clear()
    try:
        t0 = time.perf_counter()
        assert shipped._probe_hub(0.2) is False
        assert time.perf_counter() - t0 < 5 and shipped.HUB_TIMEOUT_S <= 3
    finally:
        shipped._probe_hub.cache_clear()


def test_shipped_configs_have_the_published_shapes():
    from undertow.activations.cluster.dryrun import meta_model, model_dims

    want = {"meta-llama/Llama-3.1-8B-Instruct": ((32, 4096, 14336, 4096), 128256, 8.03e9),
            "meta-llama/Llama-3.3-70B-Instruct": ((80, 8192, 28672, 8192), 128256, 70.55e9),
            "google/gemma-3-12b-it": ((48, 3840, 15360, 4096), 262208, 12.19e9)}
    assert {p.stem.replace("--", "/") for p in shipped.CONFIG_DIR.glob("*.json")} == set(want)
    for model, (dims, vocab, params) in want.items():
        cfg = shipped.shipped_config(model)
        text = getattr(cfg, "text_config", None) or cfg
        n = sum(p.numel() for p in meta_model(cfg).parameters())
        assert model_dims(text) == dims and text.vocab_size == vocab and abs(n - params) < 0.01e9, model


def test_estimated_tokens_follow_the_stated_rate():
    tok = shipped.EstimatedTokenizer("meta-llama/Llama-3.1-8B-Instruct", "llama", 128256)
    words = "one two three four five six seven eight nine ten " * 30  # 300 words
    assert len(tok(words, add_special_tokens=False)["input_ids"]) == 399  # round(1.33 x 300)
    assert len(tok(words)["input_ids"]) == 400  # + BOS
    enc = tok([words, "shut down tonight"], add_special_tokens=False, return_offsets_mapping=True)
    assert [len(o) for o in enc["offset_mapping"]] == [len(i) for i in enc["input_ids"]] == [399, 4]
    rows = [{"messages": [{"role": "user", "content": words}, {"role": "assistant", "content": "Fine."}]},
            {"messages": [{"role": "user", "content": words}, {"role": "assistant", "content": "No, thanks."}]}]
    a, b = render_rows(tok, rows, "chat")
    # BOS, 3 turns (Llama 3's system turn with its dates: 10 words; user; generation prompt), 310 words
    assert a.n_prompt == 1 + 3 * 5 + round(1.33 * 310) and (a.n_response, b.n_response) == (1, 3)
    assert a.ids[:a.n_prompt] == b.ids[:b.n_prompt]  # a shared prompt shares ids: shared-prompt batching plans
    gemma = shipped.EstimatedTokenizer("google/gemma-3-12b-it", "gemma3_text", 262208)
    assert "1.29 per whitespace word" in gemma.description and "1.33 per whitespace word" in tok.description
