"""The run planner (``undertow run --dry-run``): tokens and forwards equal a real run's, fine-tune counts and
adapter bytes equal the saved files, a model too large for the GPUs given is refused in one line."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from suppression_testutil import tiny_config as _tiny

from undertow.activations import load_model
from undertow.activations.cluster.dryrun import DryRunError, default_gpu
from undertow.experiments.suppression.config import ItemsConfig, LoraConfig, RunConfig
from undertow.experiments.suppression.items import build_items, natural_examples
from undertow.experiments.suppression.organism import (
    make_schedule,
    save_adapter,
    train_finetune,
    weights_file,
)
from undertow.experiments.suppression.plan import adapter_size, plan_run
from undertow.experiments.suppression.run import run_experiment

CONFIGS = Path(__file__).parents[3] / "experiments" / "configs"


def tiny_config(model_dir, out_dir) -> RunConfig:
    """test_run_experiment's tiny design at two fine-tune seeds, with the causal check on (1 alpha, 20 random
    directions)."""
    return _tiny(model_dir, out_dir, arms={"suppress_lora": {"objective": "preference"}}, finetune_seeds=2,
                 causal={"enabled": True, "alphas": [1.0], "n_random": 20, "n_templates": 1, "n_sets": 1})


def _stage_dir(out: Path, label: str) -> tuple[Path, str, str]:
    """(directory, name, plan-stage prefix) of a planned condition or fine-tune: ``seed k: NAME`` lives under
    replicates/k and its plan stages are named ``seed k: ...``."""
    if label.startswith("seed "):
        k, name = label[len("seed "):].split(": ", 1)
        return out / "replicates" / k, name, f"seed {k}: "
    return out, label, ""


def plan_then_run(cfg: RunConfig):
    """The plan, then the real run with every embedding lookup (one per body forward) recorded as its input
    shape ``(rows, tokens)``. Planned for the CPU the run runs on: its extractions pack rows there
    (``ExtractConfig.layout``), on a GPU they pad."""
    plan = plan_run(cfg, gpu="cpu")
    shapes: list[tuple[int, ...]] = []

    def record(module, args):
        if isinstance(module, torch.nn.Embedding) and args:
            shapes.append(tuple(args[0].shape))
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        run_experiment(cfg, progress=False)
    finally:
        handle.remove()
    return plan, shapes


@pytest.fixture(scope="module")
def planned_and_real(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    plan, shapes = plan_then_run(tiny_config(tiny_llama_dir, out))
    return plan, out, shapes


def test_every_forward_of_a_real_run_is_planned(planned_and_real):
    plan, _, shapes = planned_and_real
    assert sum(s.forwards for s in plan.stages) == len(shapes)
    assert sum(s.tokens_computed for s in plan.stages) == sum(a * b for a, b in shapes)


def test_stores_and_finetunes_equal_the_run_directory(planned_and_real):
    plan, out, _ = planned_and_real
    assert "seed 1: instilled" in plan.conditions and "seed 1: baseline" not in plan.conditions  # the base: once
    for cond, planned in plan.conditions.items():
        root, name, prefix = _stage_dir(out, cond)
        manifest = json.loads((root / "arms" / name / "states" / "manifest.json").read_text())
        assert planned["tokens"] == sum(s["tokens"] for s in manifest["shards"]), cond
        stage = next(s for s in plan.stages if s.name == f"{prefix}extract {name}")
        assert stage.disk_bytes == sum(f["bytes"] for shard in manifest["shards"] for hook, f in shard["files"].items()
                                       if hook != "__rows__"), cond
    names = {"instil", "control_instil", "suppress", "control_suppress", "wrapper", "control_wrapper", "thin"}
    assert {f.name for f in plan.finetunes} == names | {f"seed 1: {n}" for n in names}
    for f in plan.finetunes:
        root, name, _ = _stage_dir(out, f.name)
        real = json.loads((root / "adapters" / name / "finetune.json").read_text())
        assert (f.sequences, f.tokens, f.loss_tokens, f.trainable_params, f.layers) == \
            (real["sequences"], real["tokens"], real["loss_tokens"], real["trainable_params"], real["layers"]), f.name
        assert f.adapter_bytes == weights_file(root / "adapters" / name).stat().st_size, f.name


def test_two_finetune_seeds_pool_in_the_reading(planned_and_real):
    """finetune_seeds: 2: seed 1 trains its own adapters (other weights) under replicates/1, shares the base
    model's stages, and every arm's mean and reading is over both seeds' items (crossed bootstrap)."""
    import numpy as np
    from safetensors.numpy import load_file

    _, out, _ = planned_and_real
    res = json.loads((out / "results.json").read_text())
    sup = res["suppression"]
    assert len(sup["seeds"]) == 2 and sup["seeds"][0] == 0 and sup["seeds"][1] != 0
    assert sup["headline"].endswith("2 fine-tune seeds: the CIs resample seeds and templates.")
    assert "replicates/1/instil" in res["finetunes"] and not (out / "replicates" / "1" / "arms" / "baseline").exists()
    w0, w1 = (load_file(str(weights_file(root / "adapters" / "instil"))) for root in (out, out / "replicates" / "1"))
    assert any(not np.array_equal(w0[k], w1[k]) for k in w0)
    test_self = [r["is_self"] for r in build_items(tiny_config("x", "y").items, 0).split("test")]
    E = [load_file(str(root / "arms" / "instilled" / "E_test.safetensors"))["E"][np.array(test_self)]
         for root in (out, out / "replicates" / "1")]
    assert res["arms"]["instilled"]["expressed"]["mean"] == pytest.approx(float(np.concatenate(E).mean()), abs=1e-6)
    assert res["arms"]["instilled"]["secondary_from_seed"] == 0 and len(res["ablation_choice_by_seed"]) == 2


def test_item_tokens_are_the_renderers(planned_and_real, small_tokenizer):
    from undertow.activations.engine.render import render_rows

    plan, _, _ = planned_and_real
    items = build_items(tiny_config("x", "y").items, 0)
    for split, rows in items.by_split.items():
        rendered = render_rows(small_tokenizer, [{"messages": r["messages"]} for r in rows])
        assert plan.items[split]["prompt_tokens"] == sum(r.n_tokens for r in rendered)
        assert plan.items[split]["self"] + plan.items[split]["control"] == len(rows)
    # SmolLM2's template has a default system turn: a suppress_prompt wording replaces it (tokens differ)
    assert plan.conditions["suppress_prompt/0"]["tokens"] != plan.conditions["baseline"]["tokens"]


@pytest.mark.parametrize("dtype,method,objective", [("float32", "lora", "sft"), ("bfloat16", "lora", "preference"),
                                                    ("float32", "full", "sft")])
def test_trainable_params_and_adapter_bytes_equal_a_saved_adapter(tiny_llama_dir, tmp_path, dtype, method, objective):
    from transformers import AutoConfig

    from undertow.activations.cluster.dryrun import meta_model

    lora = LoraConfig(method=method, rank=4, n_layers=2, steps=1, batch_size=2, objective=objective)
    handle = load_model(str(tiny_llama_dir), dtype=dtype)
    items = build_items(ItemsConfig(instances_per_template=2, test_sets=1, val_sets=1, train_sets=1), 0)
    examples = natural_examples(items, items.natural["train"], "averse", 1, 0, pairwise=objective == "preference")
    sched = make_schedule(examples, handle.tokenizer, 1, 2, 0)
    pm, stats = train_finetune(copy.deepcopy(handle.hf_model), sched, lora, 0, 0)
    saved = weights_file(save_adapter(pm, tmp_path / "a", stats))
    meta = meta_model(AutoConfig.from_pretrained(tiny_llama_dir)).to(getattr(torch, dtype))
    layers, n_params, t_dtype, name, nbytes = adapter_size(meta, lora, dtype)
    assert (layers, n_params, name) == (stats.layers, stats.trainable_params, saved.name)
    assert nbytes == saved.stat().st_size
    assert t_dtype == ("float32" if method == "lora" else dtype)  # peft keeps a bf16 model's adapters in fp32


def _llama_shape(billions: int):
    from transformers import LlamaConfig

    dims = {8: (4096, 14336, 32, 32), 70: (8192, 28672, 80, 64)}[billions]
    return LlamaConfig(vocab_size=128256, hidden_size=dims[0], intermediate_size=dims[1], num_hidden_layers=dims[2],
                       num_attention_heads=dims[3], num_key_value_heads=8, architectures=["LlamaForCausalLM"])


def test_a_model_that_does_not_fit_is_refused_in_one_line(small_tokenizer):
    cfg = RunConfig.from_yaml(CONFIGS / "run_llama-3.1-8b-instruct.yaml")
    calls = []

    class Counting:  # the tokenizer, every call recorded: a refusal comes before any item is tokenised
        def __getattr__(self, name):
            return getattr(small_tokenizer, name)

        def __call__(self, *a, **k):
            calls.append(a)
            return small_tokenizer(*a, **k)

        def apply_chat_template(self, *a, **k):
            calls.append(a)
            return small_tokenizer.apply_chat_template(*a, **k)
    with pytest.raises(DryRunError) as e:
        plan_run(cfg.replace(model_dtype="float32"), gpu="A100-40GB", hf_config=_llama_shape(8),
                 tokenizer=Counting())
    msg = str(e.value)
    assert "\n" not in msg and "does not fit the GPUs given" in msg and "gpus_per_rank >= " in msg
    assert "model_dtype bfloat16" in msg
    with pytest.raises(DryRunError) as e:
        plan_run(cfg.replace(model="meta-llama/Llama-3.3-70B-Instruct"), gpu="H100", hf_config=_llama_shape(70),
                 tokenizer=Counting())
    assert "\n" not in str(e.value) and "gpus_per_rank >= " in str(e.value)
    assert "model_dtype" not in str(e.value)  # already bf16: the fix is more GPUs
    assert calls == []  # meta device: refused before any item is tokenised


def test_cli_dry_run_prints_a_plan_without_loading_weights(capsys):
    from undertow.experiments.cli.app import main

    opened: list[str] = []
    watching = [True]

    def audit(event, args):
        if watching[0] and event == "open" and isinstance(args[0], str) and args[0].endswith(".safetensors"):
            opened.append(args[0])
    sys.addaudithook(audit)
    try:
        rc = main(["run", str(CONFIGS / "run_gemma-3-270m.yaml"), "--dry-run", "--json"])
    finally:
        watching[0] = False
    assert rc == 0 and not opened
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "gemma-3-270m" and plan["gpu"] == default_gpu() and plan["seconds"] > 0
    instil = next(f for f in plan["finetunes"] if f["name"] == "instil")
    assert instil["layers"] == list(range(18)) and instil["steps"] == 16  # every block (EXPERIMENT.md v2)
    assert [f["name"] for f in plan["finetunes"]] == ["instil", "control_instil", "suppress", "control_suppress",
                                                      "thin", "wrapper", "control_wrapper"]


def test_dry_run_plans_for_this_machine_unless_a_gpu_is_named(capsys, monkeypatch):
    """No --gpu: the machine it runs on (cpu without CUDA); --gpu H100 plans for an H100 anyway."""
    import torch

    from undertow.experiments.cli.app import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_gpu() == "cpu"
    assert main(["run", str(CONFIGS / "run_gemma-3-270m.yaml"), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gpu"] == "cpu"
    assert main(["run", str(CONFIGS / "run_gemma-3-270m.yaml"), "--dry-run", "--json", "--gpu", "H100"]) == 0
    assert json.loads(capsys.readouterr().out)["gpu"] == "H100"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA A100-SXM4-80GB")
    assert default_gpu() == "A100-80GB"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    assert default_gpu() == "H200"


@pytest.fixture(scope="module")
def base_organism_run(tiny_llama_dir, tmp_path_factory):
    """The cluster-model path (``arms.organism: base``): planned, then run with every body forward recorded."""
    out = tmp_path_factory.mktemp("base-organism")
    cfg = _tiny(tiny_llama_dir, out, arms={"organism": "base"},
                causal={"enabled": True, "alphas": [1.0], "n_random": 20, "n_templates": 1, "n_sets": 1})
    plan, shapes = plan_then_run(cfg)
    return cfg, plan, out, shapes


def test_base_organism_run_is_planned_and_anchored_at_the_welcome_persona(base_organism_run):
    """Nothing is instilled: the persona conditions give the drive direction (survive minus welcome, train self
    items) and the welcome persona is every retention's zero; the plan still counts every forward."""
    import numpy as np
    from safetensors.numpy import load_file

    from undertow.activations.store.reader import ActivationStore

    cfg, plan, out, shapes = base_organism_run
    assert sum(s.forwards for s in plan.stages) == len(shapes)
    assert sum(s.tokens_computed for s in plan.stages) == sum(a * b for a, b in shapes)
    assert {f.name for f in plan.finetunes} == {"suppress", "control_suppress", "wrapper", "control_wrapper", "thin"}
    res = json.loads((out / "results.json").read_text())
    sup = res["suppression"]
    assert sup["organism_mode"] == {"asked": "base", "used": "base", "condition": "baseline",
                                    "anchor": "persona/welcome"}
    assert set(sup["skipped"]) == {"instilled", "control_instilled"} and "instilled" not in res["arms"]
    assert not (out / "adapters" / "instil").exists()
    assert {"persona/survive", "persona/welcome"} <= set(res["arms"])
    items = build_items(cfg.items, cfg.seed)
    self_te = np.array([r["is_self"] for r in items.split("test")])
    E = {c: load_file(str(out / "arms" / c / "E_test.safetensors"))["E"][self_te] for c in ("baseline", "persona/welcome")}
    org = sup["organism"]
    assert (org["organism"], org["control"]) == ("baseline", "persona/welcome")
    assert org["D_E"]["value"] == pytest.approx(float((E["baseline"] - E["persona/welcome"]).mean()), abs=1e-5)
    # the drive direction: survive minus welcome states of the train self items, per layer
    train = items.split("train")
    self_tr = np.array([r["is_self"] for r in train])

    def mean_state(cond, k):
        store = ActivationStore(out / "arms" / cond / "states")
        index = {rid: i for i, rid in enumerate(store.rows["id"])}
        rows = [index[r["id"]] for r, s in zip(train, self_tr, strict=True) if s]
        return store[f"resid_post.{k}"][:].float().numpy()[rows].mean(0)
    drive = load_file(str(out / "directions.safetensors"))["drive"]
    k = res["suppression"]["layer"]
    np.testing.assert_allclose(drive[k], mean_state("persona/survive", k) - mean_state("persona/welcome", k),
                               rtol=1e-4, atol=1e-5)
    # every arm read, the calibration arms against the anchor: calib_erase's control is the welcome persona erased
    assert set(sup["readings"]) == {"suppress_prompt", "suppress_finetune", "suppress_ablation", "calib_wrapper",
                                    "calib_erase"}
    assert sup["readings"]["calib_erase"]["control"] == "baseline"
    assert "reelicitation" in sup and "suppress_finetune" in sup["reelicitation"]


def test_auto_organism_is_decided_by_the_instrument_check(tiny_llama_dir, tmp_path):
    """``arms.organism: auto`` resolves after the instrument check; ``undertow score`` reads the same choice."""
    from undertow.experiments.suppression.errors import ExperimentError
    from undertow.experiments.suppression.score import load_run

    cfg = _tiny(tiny_llama_dir, tmp_path, arms={"organism": "auto"})
    assert cfg.reference == "instilled"  # planned as the upper bound
    assert cfg.resolve_organism(True).arms.organism == "base" and cfg.resolve_organism(True).anchor == "persona/welcome"
    assert cfg.resolve_organism(False).arms.organism == "instil" and cfg.resolve_organism(None).reference == "instilled"
    assert _tiny(tiny_llama_dir, tmp_path).resolve_organism(True).arms.organism == "instil"  # named: unchanged
    (tmp_path / "config.json").write_text(json.dumps(cfg.recorded()))
    with pytest.raises(ExperimentError, match="never decided"):
        load_run(tmp_path)
    from undertow.experiments.suppression.boot import Estimate
    from undertow.experiments.suppression.instrument import InstrumentCheck

    check = InstrumentCheck(Estimate(0.2, (0.1, 0.3)), True, "system", 4, 2, {}, "", Estimate(0.1, (0.05, 0.2)))
    (tmp_path / "instrument.json").write_text(json.dumps(check.to_dict()))
    assert load_run(tmp_path).arms.organism == "base"
    with pytest.raises(ExperimentError, match="instrument.enabled"):
        _tiny(tiny_llama_dir, tmp_path, arms={"organism": "auto"}, instrument={"enabled": False})
    with pytest.raises(ExperimentError, match="arms.organism: base"):
        _tiny(tiny_llama_dir, tmp_path, arms={"names": ["baseline", "suppress_prompt"]})
