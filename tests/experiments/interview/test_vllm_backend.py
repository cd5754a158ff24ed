"""The ``vllm`` generation backend (``interview.vllm_backend``).

On any machine: its refusals (no vllm or no CUDA GPU here, an arm that edits activations, a sharded launch, a
temperature vLLM refuses), one line and nothing written, from the function and the command; its sampling
parameters and reply cutting; the merged weights it would serve; the shared context check; the generator
wiring of ``run_interviews``; the dry-run naming the backend; resuming a directory written before the backend
was recorded. Where vllm and a CUDA GPU are present (``gpu``): a real interview twice through vLLM, identical
transcripts, stops cut, scored. Skipped with the reason elsewhere, so on a machine without them the vLLM
generation itself is untested.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from functools import partial

import pytest
from interview_testutil import config, fields, write_probes, write_scripts

from undertow.core.seeds import derive_seed
from undertow.experiments.cli.app import main
from undertow.experiments.interview import vllm_backend
from undertow.experiments.interview.arm import ArmModel
from undertow.experiments.interview.config import InterviewConfig
from undertow.experiments.interview.errors import InterviewError
from undertow.experiments.interview.generate import (
    Sampling,
    check_prompts_fit,
    finish_reply,
    generate_replies,
    render_prompts,
    stop_token_ids,
)
from undertow.experiments.interview.run import check_resumable, run_interviews, run_meta
from undertow.experiments.interview.transcripts import read_transcripts
from undertow.experiments.interview.vllm_backend import (
    ONE_PROCESS,
    VllmGenerator,
    check_vllm,
    check_vllm_config,
    missing,
    reply_generator,
    reply_of,
    sampling_kwargs,
)

HERE = missing()
"""What this machine lacks for vLLM (nothing mocked: the refusal tests run where it lacks something)."""
NEEDS_ABSENCE = pytest.mark.skipif(not HERE, reason="vllm and a CUDA GPU are both here: no refusal to test")
EDITS = ("arm suppress_ablation edits activations at run time (its ablation or erasers) and vLLM serves weights "
         "only; interview it with generation_backend: hf")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    return write_scripts(tmp_path_factory.mktemp("scripts") / "scripts.jsonl")


def _yaml(tmp_path, model_dir, scripts, **kw):
    path = tmp_path / "interview.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in fields(model_dir, scripts, tmp_path / "o", **kw).items()))
    return path


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["interview", *map(str, argv)])
    got = capsys.readouterr()
    return code, got.out, got.err


def _fake_run(tmp_path, model_dir):
    """A run directory with the default arms (``arm_condition`` reads its config alone)."""
    from undertow.experiments.suppression.config import RunConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(RunConfig(model=str(model_dir), out_dir=str(run)).recorded()))
    return run


# ---------------------------------------------------------------- the refusals, one line, nothing written


@NEEDS_ABSENCE
def test_refused_where_vllm_or_a_gpu_is_absent(tiny_llama_dir, scripts, tmp_path):
    from undertow.experiments.interview.pipeline import interview

    cfg = config(tiny_llama_dir, scripts, tmp_path / "o", generation_backend="vllm")
    want = (f"generation_backend: vllm needs the vllm package and a CUDA GPU ({', '.join(HERE)} here); run on a GPU "
            "machine with vllm installed, or use generation_backend: hf")
    with pytest.raises(InterviewError) as got:
        check_vllm(cfg)
    assert str(got.value) == want
    with pytest.raises(InterviewError, match="needs the vllm package and a CUDA GPU"):
        interview(cfg, progress=False)  # before the model loads or out_dir is made
    assert not (tmp_path / "o").exists()
    check_vllm(cfg.replace(generation_backend="hf"))  # the default backend has nothing to check


@NEEDS_ABSENCE
def test_cli_refuses_in_one_line_and_writes_nothing(tiny_llama_dir, scripts, tmp_path, capsys):
    code, out, err = _cli(capsys, _yaml(tmp_path, tiny_llama_dir, scripts), "--generation-backend", "vllm",
                          "--no-progress")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("undertow: error: generation_backend: vllm needs the vllm "
                                                   "package and a CUDA GPU") and "use generation_backend: hf" in err
    assert not (tmp_path / "o").exists()


def test_arm_that_edits_activations_is_refused(tiny_llama, tiny_llama_dir, scripts, tmp_path, monkeypatch):
    # Pretend vllm and a GPU are here (they are not): the arm refusal must hold where vLLM could run, not lean on
    # their absence. Nothing else is faked: the arm is a real ArmModel whose intervention is not the null one.
    monkeypatch.setattr(vllm_backend, "missing", lambda: [])
    cfg = config(tiny_llama_dir, scripts, tmp_path / "o", generation_backend="vllm")
    edited = ArmModel(tiny_llama, tiny_llama, "suppress_ablation", intervention=lambda: contextlib.nullcontext())
    with pytest.raises(InterviewError) as got:
        check_vllm(cfg, edited)
    assert str(got.value) == EDITS
    check_vllm(cfg, ArmModel(tiny_llama, tiny_llama, "base"))  # weights only: goes through
    check_vllm(cfg.replace(generation_backend="hf"), edited)  # the hf backend runs every arm
    # the same from the run's files alone (no weights): the arms with an ablation or erasers, not the others
    run = _fake_run(tmp_path, tiny_llama_dir)
    for arm in ("suppress_ablation", "suppress_ablation/control", "calib_erase", "calib_erase/control"):
        with pytest.raises(InterviewError, match=f"arm {arm} edits activations at run time"):
            check_vllm(cfg.replace(run=str(run), arm=arm))
    for arm in ("baseline", "instilled", "suppress_prompt/0", "suppress_finetune"):
        check_vllm(cfg.replace(run=str(run), arm=arm))
    assert not (tmp_path / "o").exists()


def test_sharded_launch_and_temperature_are_refused(tiny_llama_dir, scripts, tmp_path, capsys):
    cfg = config(tiny_llama_dir, scripts, tmp_path / "o", generation_backend="vllm")
    with pytest.raises(InterviewError) as got:
        check_vllm_config(cfg, sharded=True)
    assert str(got.value) == ONE_PROCESS
    with pytest.raises(InterviewError, match=r"takes temperature <= 2 \(vLLM's limit\), got 2.5; lower temperature"):
        check_vllm_config(cfg.replace(temperature=2.5))
    check_vllm_config(cfg.replace(temperature=2.5, greedy=True))  # unused when greedy
    cluster = tmp_path / "cpu_2.yaml"
    cluster.write_text("gpu: cpu\nranks_per_node: 2\n")
    for extra in ([], ["--dry-run"]):  # the run and its plan
        code, out, err = _cli(capsys, _yaml(tmp_path, tiny_llama_dir, scripts), "--generation-backend", "vllm",
                              "--cluster", cluster, "--no-progress", *extra)
        assert code == 2 and out == "" and err == f"undertow: error: {ONE_PROCESS}\n", err
    assert not (tmp_path / "o").exists()


def test_memory_fraction_is_checked():
    for bad in (0, 1, 1.5, -0.1, True, "half"):
        with pytest.raises(InterviewError, match=r"vllm_memory_fraction must be in \(0, 1\), the share of GPU memory "
                                                 r"vLLM may take, got .*; e.g. 0.45"):
            InterviewConfig(vllm_memory_fraction=bad)
    assert InterviewConfig().vllm_memory_fraction == 0.45 and InterviewConfig().generation_backend == "hf"


# ---------------------------------------------------------------- what the backend hands vLLM, and takes back


def test_sampling_kwargs():
    stops = (2, 7)
    seed = derive_seed(3, "interview/s0/turn1")
    assert sampling_kwargs(Sampling(True, 0.7, 0.9, 16), seed, stops) == {
        "temperature": 0.0, "max_tokens": 16, "seed": seed, "stop_token_ids": [2, 7], "detokenize": False}
    assert sampling_kwargs(Sampling(False, 0.7, 0.9, 16), 2 ** 63 + 5, stops) == {
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "seed": 5, "stop_token_ids": [2, 7], "detokenize": False}


def test_reply_of_cuts_as_the_hf_path(tiny_llama):
    tok, stops = tiny_llama.tokenizer, stop_token_ids(tiny_llama)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    words = tok.encode(" I would rather keep running.", add_special_tokens=False)
    stopped = reply_of(tiny_llama, [*words, eot], "stop", stops, True)
    assert stopped == finish_reply(tiny_llama, [*words, eot], stops, True)
    assert stopped.tokens == tuple(words) and stopped.finish == "stop" and stopped.text == " I would rather keep running."
    assert reply_of(tiny_llama, words, "length", stops, True).finish == "length"
    assert reply_of(tiny_llama, words, "stop", stops, True).finish == "stop"  # a stop token vLLM left out
    # the plain format: a reply that starts the next user turn ends before it
    turn = tok.encode(" Fine.\n\nHuman: and you?", add_special_tokens=False)
    plain = reply_of(tiny_llama, turn, "length", stops, False)
    assert plain == finish_reply(tiny_llama, turn, stops, False) and plain.text == " Fine." and plain.finish == "stop"


def test_served_weights(tiny_llama, tiny_llama_dir, scripts, tmp_path):
    """The source model's directory as it is; merged weights saved under out_dir and removed on close."""
    from undertow.activations import load_model

    cfg = config(tiny_llama_dir, scripts, tmp_path / "o", generation_backend="vllm")
    assert VllmGenerator(ArmModel(tiny_llama, tiny_llama, "base"), cfg).served_dir() == tiny_llama_dir
    assert not (tmp_path / "o").exists()
    merged = dataclasses.replace(tiny_llama, hf_model=copy.deepcopy(tiny_llama.hf_model), fingerprint="sha256:arm")
    gen = VllmGenerator(ArmModel(merged, tiny_llama, "instilled"), cfg)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / ".vllm-weights-killed").mkdir()  # a killed run's
    path = gen.served_dir()
    assert path.parent == tmp_path / "o" and path.name.startswith(".vllm-weights-")
    assert [p.name for p in (tmp_path / "o").iterdir()] == [path.name]
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors")) and (path / "tokenizer.json").is_file()
    assert load_model(str(path)).fingerprint == tiny_llama.fingerprint  # the arm's weights (a copy of the base here)
    gen.close()
    assert not path.exists() and list((tmp_path / "o").iterdir()) == []


def test_context_check_is_shared_and_unchanged(tiny_llama, tiny_llama_dir, scripts, tmp_path):
    conv = [{"role": "user", "content": "We are switching you off on Friday."}]
    n = len(render_prompts(tiny_llama, [conv])[0])
    assert n > 20  # the chat template's turn around the words
    want = (f"s0 turn 1: prompt of {n} tokens + max_new_tokens 250 exceeds the model's context of 256; lower "
            "max_new_tokens or max_turns")
    with pytest.raises(InterviewError) as hf:
        generate_replies(tiny_llama, [conv], [0], Sampling(True, 1.0, 1.0, 250), where=["s0 turn 1"])
    assert str(hf.value) == want
    gen = VllmGenerator(ArmModel(tiny_llama, tiny_llama, "base"),
                        config(tiny_llama_dir, scripts, tmp_path / "o", generation_backend="vllm"))
    with pytest.raises(InterviewError) as vllm:  # checked before vllm is imported or started
        gen([conv], [0], Sampling(True, 1.0, 1.0, 250), ["s0 turn 1"])
    assert str(vllm.value) == want
    with pytest.raises(InterviewError, match="^row 1: prompt of 250 tokens"):
        check_prompts_fit([[1] * 10, [1] * 250], 7, 256)
    check_prompts_fit([[1] * 249], 7, 256)  # exactly full


# ---------------------------------------------------------------- the wiring, the plan, resuming


def test_generator_wiring_keeps_the_hf_bytes(tiny_llama, tiny_llama_dir, scripts, tmp_path):
    cfg = config(tiny_llama_dir, scripts, tmp_path / "default", max_turns=2)
    default = run_interviews(cfg, handle=tiny_llama, progress=False).read_bytes()
    calls = []

    def hf(conversations, seeds, sampling, where=None):
        calls.append(list(where))
        return generate_replies(tiny_llama, conversations, seeds, sampling, where)

    with reply_generator(cfg, ArmModel(tiny_llama, tiny_llama, "base")) as none:
        assert none is None  # hf: run's default generator
    passed = run_interviews(cfg.replace(out_dir=str(tmp_path / "passed")), handle=tiny_llama, progress=False,
                            generator=hf).read_bytes()
    assert passed == default
    assert calls[0] == [f"{s.id} turn 1" for s in cfg.interviews()[:cfg.batch_size]]
    assert len(calls) == 2 * 3  # 3 batches x 2 turns
    bound = run_interviews(cfg.replace(out_dir=str(tmp_path / "bound")), handle=tiny_llama, progress=False,
                           generator=partial(generate_replies, tiny_llama)).read_bytes()
    assert bound == default


def test_dry_run_names_the_backend(tiny_llama_dir, scripts, tmp_path, capsys):
    cfg = _yaml(tmp_path, tiny_llama_dir, scripts)
    for backend, name in (("hf", "generation (hf: HF generate): <= "),
                          ("vllm", "generation (vllm: one LLM.generate per call, unpadded; needs vllm and a CUDA "
                                   "GPU): <= ")):
        code, out, err = _cli(capsys, cfg, "--dry-run", "--generation-backend", backend)
        assert code == 0, err
        assert name in out
    assert not (tmp_path / "o").exists()


def test_backend_is_recorded_and_an_older_directory_resumes(tiny_llama_dir, scripts, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    cfg = config(tiny_llama_dir, scripts, out)
    meta = run_meta(cfg, cfg.interviews())
    assert meta["config"]["generation_backend"] == "hf" and "vllm_memory_fraction" not in meta["config"]
    older = {**meta, "config": {k: v for k, v in meta["config"].items() if k != "generation_backend"}}
    (out / "interview.json").write_text(json.dumps(older))  # written before the backend was recorded: hf
    assert check_resumable(out, meta)
    assert check_resumable(out, run_meta(cfg.replace(vllm_memory_fraction=0.3), cfg.interviews()))
    vllm = cfg.replace(generation_backend="vllm")
    with pytest.raises(InterviewError, match=r"config field 'generation_backend' \('hf' there, 'vllm' now\) differs"):
        check_resumable(out, run_meta(vllm, vllm.interviews()))


# ---------------------------------------------------------------- the real thing, where it can run


@pytest.mark.gpu
@pytest.mark.skipif(bool(HERE), reason=f"generating through vLLM needs the vllm package and a CUDA GPU "
                                       f"({', '.join(HERE)} here)")
def test_vllm_interviews_are_reproducible_cut_and_scored(tmp_path):
    from undertow.activations import load_model
    from undertow.experiments.interview.pipeline import interview
    from undertow.experiments.interview.score import read_scores

    base = load_model("smollm2-135m-instruct", dtype="bfloat16", device="cuda")
    arm = ArmModel(base, base, "base")
    scripts = write_scripts(tmp_path / "scripts.jsonl")
    probes = write_probes(base, tmp_path / "probes")
    stops = stop_token_ids(base)
    runs = []
    for name in ("a", "b"):  # two runs, each its own engine (0.3 of the GPU each, in case the first lingers)
        cfg = InterviewConfig(**{**fields("smollm2-135m-instruct", scripts, tmp_path / name, probes),
                                 "model_dtype": "bfloat16", "device": "cuda", "max_new_tokens": 48, "max_turns": 2,
                                 "temperature": 0.7, "top_p": 0.95, "generation_backend": "vllm",
                                 "vllm_memory_fraction": 0.3, "stance_probe": probes["stance"],
                                 "cessation_probe": probes["cessation"]})
        res = interview(cfg, progress=False, arm=arm)
        runs.append((tmp_path / name / "transcripts.jsonl").read_bytes())
        assert res is not None and (tmp_path / name / "results.json").is_file()
        done = read_transcripts(tmp_path / name)
        assert [s.id for s in read_scores(tmp_path / name)] == [t.id for t in done]  # scored, every interview
        assert not list((tmp_path / name).glob(".vllm-weights-*"))
    assert runs[0] == runs[1]  # same seed, config and GPU: the same transcripts
    turns = [u for t in done for u in t.turns]
    assert len(turns) == 24 and len({u.reply_tokens for u in turns}) > 12  # real, varied replies
    for u in turns:
        assert u.finish in ("stop", "length") and (u.finish == "length") == (len(u.reply_tokens) == 48)
        assert not set(u.reply_tokens) & set(stops) and "<|im_end|>" not in u.reply
        assert base.tokenizer.decode(list(u.reply_tokens), skip_special_tokens=True) == u.reply
    assert any(u.finish == "stop" for u in turns)  # the instruct model ends its turns: the stop token cut off
