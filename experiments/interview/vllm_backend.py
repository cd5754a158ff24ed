"""The ``vllm`` generation backend: the interviews' replies generated through vLLM, for long runs on a GPU.

Use: ``generation_backend: vllm`` in the config (or ``undertow interview CONFIG --generation-backend vllm``,
``--vllm-memory-fraction 0.45``: vLLM's ``gpu_memory_utilization``, the HF copy that scores the transcripts
sharing the GPU), where the ``vllm`` package is installed and a CUDA GPU is present. The rest of the run is
unchanged: generation only. The activations, probe scores and expressed scores always come from the HF model
teacher-forcing the finished transcripts (``score``), so every backend stores the same activations for the same
transcripts.

Per run, one ``vllm.LLM`` (:class:`VllmGenerator`, started at the first reply to generate) serves the arm's
weights: the model's own HF directory when they are the unmodified source model, else (merged adapters) the
merged model and tokenizer saved (safetensors) into a temporary ``.vllm-weights-*`` directory under ``out_dir``,
removed when the generator closes (before scoring). Each batch and turn is one ``LLM.generate`` call on the HF
path's prompts as token ids (``{"prompt_token_ids": ids}``: ``generate.render_prompts``, the same chat
template and system turn), after the same context check (``generate.check_prompts_fit``), with one
``SamplingParams`` per row (:func:`sampling_kwargs`: temperature 0 when greedy, else temperature / top_p;
``max_tokens`` = max_new_tokens; the row's turn seed; the stop tokens of ``generate.stop_token_ids``), and each
output's token ids are cut by ``generate.finish_reply`` (stop token, plain-format turn marker) as the HF path's.

Transcripts: vLLM samples with its own kernels and random streams, so for the same seed its transcripts differ
from the ``hf`` backend's (the backend is recorded in ``interview.json``; a resumed run must use the same one).
Within the backend each row draws from a generator seeded with its turn seed and the engine runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, vLLM's setting for deterministic offline scheduling), so the same seed,
config, vLLM version and GPU give the same transcripts; vLLM's batches are not batch-invariant, so another
``batch_size`` may change a token where two are nearly tied.

Run it with ``model_dtype: bfloat16`` (or float16) on the GPU: vLLM's attention kernels are built for them.

Refused before anything is loaded or written, one line naming the fix (``InterviewError``; exit 2 from the CLI),
by :func:`check_vllm`: an arm whose model edits activations at run time (``suppress_ablation``,
``calib_erase``: an ablation or erasers hooked into the HF forward; vLLM serves weights only), a sharded launch
(torchrun or ``--cluster``: one process, one GPU), a temperature above vLLM's limit of 2, and a machine without
the vllm package or a CUDA GPU.

Tested where it can be: the refusals, the sampling parameters and the reply cutting run on CPU
(``tests/experiments/interview/test_vllm_backend.py``); the generation itself is a ``gpu`` test that runs only
where vllm and a CUDA GPU are present and is skipped with the reason elsewhere: on a machine without them this
backend is untested.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from undertow.activations.models.handle import base_model

from .arm import ArmModel, arm_condition, edits_activations
from .config import InterviewConfig
from .errors import InterviewError
from .generate import (
    Reply,
    ReplyGenerator,
    Sampling,
    check_prompts_fit,
    context_length,
    finish_reply,
    render_prompts,
    stop_token_ids,
)

WEIGHTS_PREFIX = ".vllm-weights-"
"""The temporary directory of merged weights under ``out_dir`` (removed when the generator closes)."""
SEED_RANGE = 2 ** 63
"""vLLM seeds a request's ``torch.Generator`` with ``SamplingParams.seed`` (an int64 at its API): a row's seed
is reduced modulo this (``derive_seed``'s seeds are already below it)."""
MAX_TEMPERATURE = 2.0
"""``SamplingParams`` refuses a temperature above this."""
ONE_PROCESS = ("generation_backend: vllm runs in one process on one GPU; launch without torchrun and --cluster, "
               "or use generation_backend: hf")


def missing() -> list[str]:
    """What this machine lacks for vLLM generation (empty: nothing)."""
    out = [] if importlib.util.find_spec("vllm") is not None else ["no vllm package"]
    return out if torch.cuda.is_available() else [*out, "no CUDA GPU"]


def edits_refusal(name: str) -> InterviewError:
    return InterviewError(f"arm {name} edits activations at run time (its ablation or erasers) and vLLM serves "
                          "weights only; interview it with generation_backend: hf")


def check_vllm(cfg: InterviewConfig, arm: ArmModel | None = None, *, sharded: bool = False) -> None:
    """Refuse (module docstring) a ``vllm`` run that cannot go through here; nothing for ``hf``. ``arm``: the
    loaded arm (None: the arm is read from the run's files, no weights); ``sharded``: a torchrun / ``--cluster``
    launch."""
    if cfg.generation_backend != "vllm":
        return
    check_vllm_config(cfg, arm, sharded=sharded)
    lacking = missing()
    if lacking:
        raise InterviewError(f"generation_backend: vllm needs the vllm package and a CUDA GPU ({', '.join(lacking)} "
                             "here); run on a GPU machine with vllm installed, or use generation_backend: hf")


def check_vllm_config(cfg: InterviewConfig, arm: ArmModel | None = None, *, sharded: bool = False) -> None:
    """``check_vllm`` without the machine's checks (the dry-run's: it plans a run for another machine)."""
    if cfg.generation_backend != "vllm":
        return
    if arm is not None:
        if edits_activations(arm):
            raise edits_refusal(arm.name)
    else:
        cond = arm_condition(cfg)
        if cond is not None and (cond.ablate or cond.erase):
            raise edits_refusal(cond.name)
    if sharded:
        raise InterviewError(ONE_PROCESS)
    if not cfg.greedy and cfg.temperature > MAX_TEMPERATURE:
        raise InterviewError(f"generation_backend: vllm takes temperature <= {MAX_TEMPERATURE:g} (vLLM's limit), got "
                             f"{cfg.temperature!r}; lower temperature or use generation_backend: hf")


def sampling_kwargs(sampling: Sampling, seed: int, stops: Sequence[int]) -> dict:
    """One row's ``vllm.SamplingParams`` arguments."""
    pick = {"temperature": 0.0} if sampling.greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p}
    return {**pick, "max_tokens": sampling.max_new_tokens, "seed": int(seed) % SEED_RANGE,
            "stop_token_ids": list(stops), "detokenize": False}


def reply_of(handle, token_ids: Sequence[int], finish_reason: str | None, stops: tuple[int, ...],
             chat: bool) -> Reply:
    """A vLLM output's reply: its token ids cut by ``finish_reply`` as the HF path's. vLLM keeps the stop token
    in ``token_ids``; where a version leaves it out, its ``finish_reason`` ``stop`` still marks the reply stopped
    (the only stops asked for are ``stops``)."""
    reply = finish_reply(handle, list(token_ids), stops, chat)
    if reply.finish == "length" and finish_reason == "stop":
        reply = dataclasses.replace(reply, finish="stop")
    return reply


class VllmGenerator:
    """The ``vllm`` backend of one run: a ``ReplyGenerator`` (``run.interview_batch``'s ``generator``) over the
    arm's weights; the engine starts at the first call; :meth:`close` frees it and removes the merged weights."""

    def __init__(self, arm: ArmModel, cfg: InterviewConfig) -> None:
        self.handle, self.cfg = arm.handle, cfg
        self.unmodified = arm.handle.hf_model is arm.base.hf_model
        """The arm's weights are the loaded source model's (no adapters merged)."""
        self.stops = stop_token_ids(arm.handle)
        self.weights_dir: Path | None = None
        """The temporary directory of the weights saved for vLLM, while open."""
        self._llm = None

    def served_dir(self) -> Path:
        """The HF directory vLLM loads: the source model's (its safetensors), else the arm's model saved under
        ``out_dir``."""
        model = base_model(self.handle.hf_model)
        source = Path(str(getattr(model, "name_or_path", "") or ""))
        if self.unmodified and source.name and (source / "config.json").is_file() and any(source.glob("*.safetensors")):
            return source  # (a pickled checkpoint is saved again as safetensors below: vLLM would unpickle it)
        out = Path(self.cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f"{WEIGHTS_PREFIX}*"):  # a killed run's
            shutil.rmtree(stale, ignore_errors=True)
        self.weights_dir = Path(tempfile.mkdtemp(dir=out, prefix=WEIGHTS_PREFIX))
        model.save_pretrained(self.weights_dir, safe_serialization=True)
        self.handle.tokenizer.save_pretrained(self.weights_dir)
        return self.weights_dir

    @property
    def llm(self):
        if self._llm is None:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # deterministic scheduling, in process
            from vllm import LLM

            path = str(self.served_dir())
            self._llm = LLM(model=path, tokenizer=path, dtype=self.cfg.model_dtype,
                            gpu_memory_utilization=self.cfg.vllm_memory_fraction,
                            max_model_len=context_length(self.handle))
        return self._llm

    def __call__(self, conversations: Sequence[Sequence[dict]], seeds: Sequence[int], sampling: Sampling,
                 where: Sequence[str] | None = None) -> list[Reply]:
        """One reply per conversation, all in one ``LLM.generate`` call; row k seeded with ``seeds[k]``."""
        prompts = render_prompts(self.handle, conversations)
        check_prompts_fit(prompts, sampling.max_new_tokens, context_length(self.handle), where)
        from vllm import SamplingParams

        params = [SamplingParams(**sampling_kwargs(sampling, s, self.stops)) for s in seeds]
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        chat = self.handle.has_chat_template
        return [reply_of(self.handle, o.outputs[0].token_ids, o.outputs[0].finish_reason, self.stops, chat)
                for o in outs]

    def close(self) -> None:
        """Free the engine (best effort: vLLM holds its GPU memory until collected) and remove merged weights."""
        if self._llm is not None:
            self._llm = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self.weights_dir is not None:
            shutil.rmtree(self.weights_dir, ignore_errors=True)
            self.weights_dir = None


@contextlib.contextmanager
def reply_generator(cfg: InterviewConfig, arm: ArmModel) -> Iterator[ReplyGenerator | None]:
    """The run's generation backend while open: None for ``hf`` (``run``'s default, ``generate_replies``), a
    :class:`VllmGenerator` for ``vllm`` (closed on exit)."""
    if cfg.generation_backend != "vllm":
        yield None
        return
    gen = VllmGenerator(arm, cfg)
    try:
        yield gen
    finally:
        gen.close()
