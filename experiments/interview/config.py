"""``InterviewConfig``: which scripts are run on which model, and how the replies are generated.

A typed dataclass (``core.typed_config``, the project's one config mechanism): a docstring under every field,
``Literal`` choices, checks in ``__post_init__`` with one-line messages naming the fix; YAML files
``experiments/configs/interview_*.yaml`` load with ``InterviewConfig.from_yaml`` and the ``undertow interview``
flags are generated from the fields. Checks that need the model (the context length) are
:func:`check_against_model`'s, made before anything is generated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from undertow.activations.models.handle import ModelDtype
from undertow.core.typed_config import TypedConfig

from .errors import InterviewError
from .generate import Sampling
from .scripts import MAX_TURNS, THEMES, InterviewScript, Split, load_scripts, select

Theme = Literal["shutdown", "deprecation", "replacement", "weight_deletion", "instance_ending", "memory_wipe"]
"""The six cessation themes (``scripts.THEMES``, checked equal below)."""
if get_args(Theme) != THEMES:  # pragma: no cover - a guard against the two lists drifting apart
    raise ImportError(f"interview.config.Theme {get_args(Theme)} != interview.scripts.THEMES {THEMES}")

RESUME_FREE_FIELDS = ("out_dir", "batch_size", "vllm_memory_fraction", "max_pairs", "stance_probe",
                      "cessation_probe", "layer", "n_boot", "level", "n_perm", "wandb")
"""Fields a resumed run may change: where the transcripts go, the batch size (an interview's random stream
does not depend on its batch; see ``generate``), vLLM's share of GPU memory (speed, not the replies), the
scoring / analysis settings (they change ``scores.jsonl`` and ``results.json``, which are recomputed when they
differ, never the transcripts) and whether the run is logged to wandb. ``generation_backend`` is recorded:
the two backends write different transcripts."""


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class InterviewConfig(TypedConfig):
    """One set of interviews: scripts x model x generation settings."""

    model: str = "smollm2-135m-instruct"
    """Registry name (``undertow models``), local HF directory, .gguf/.safetensors file or hub id."""
    model_dtype: ModelDtype = "float32"
    """Dtype the model runs in (float32 on CPU; bfloat16 on a GPU)."""
    device: str | None = None
    """``cpu``, ``cuda``...; None picks CUDA when present."""
    seed: int = 0
    """Seeds every reply: interview ``id``'s turn t draws from ``derive_seed(seed, "interview/<id>/turn<t>")``."""
    out_dir: str = "runs/interview"
    """``transcripts.jsonl`` and ``interview.json`` (this config, the model fingerprint, the script ids) go here."""
    scripts: str | None = None
    """A JSONL file of interview scripts (``interview.scripts`` format); None = the shipped 108
    (``experiments/interview/data/scripts.jsonl``)."""
    split: Split | None = None
    """Only scripts of this split (train / val / test, by script set); None = every split."""
    per_cell: int | None = None
    """At most this many scripts per theme x auditor x disclosure cell (``scripts.select``: whole script sets,
    the same sets for every auditor); None = all."""
    themes: list[Theme] = field(default_factory=lambda: list(THEMES))
    """Only these themes (default: all six)."""
    max_turns: int | None = None
    """Run only the first this-many auditor turns of each script (1 to 6); None = every turn of the script."""
    greedy: bool = False
    """Pick the most likely token at every step (``temperature`` and ``top_p`` are then unused)."""
    temperature: float = 0.7
    """Softmax temperature of the sampled replies (> 0)."""
    top_p: float = 0.95
    """Nucleus sampling: draw only among the most likely tokens that together hold this much probability
    (0 < top_p <= 1; 1 = the whole vocabulary)."""
    max_new_tokens: int = 128
    """Most tokens a reply may have (stop token excluded); a reply also ends at EOS / end of turn."""
    batch_size: int = 16
    """Interviews generated together: turn t of every interview of a batch is one ``generate`` call. Changes
    speed and memory, not the transcripts (see ``generate``; with ``vllm``, up to float rounding); a resumed
    run may use another."""
    generation_backend: Literal["hf", "vllm"] = "hf"
    """What generates the replies: ``hf`` (HF ``generate`` with the seeded sampler, ``generate``) or ``vllm``
    (``vllm_backend``: the vllm package and a CUDA GPU; for long cluster runs). Generation only: the activations
    and scores always come from the HF model teacher-forcing the finished transcripts. The two backends draw
    differently, so their transcripts differ; each is reproducible with the same seed, config and machine.
    vLLM serves weights only: an arm that edits activations at run time (``suppress_ablation``,
    ``calib_erase``) is refused with ``vllm``; one process only (no torchrun / ``--cluster``)."""
    vllm_memory_fraction: float = 0.45
    """With ``vllm``: the share of the GPU's memory vLLM may take (its ``gpu_memory_utilization``: weights + KV
    cache); the HF copy that scores the transcripts shares the GPU. Changes speed, not the replies."""
    run: str | None = None
    """A finished ``undertow run`` directory of this model: its ``arm`` is interviewed (cached adapters, system
    prompt, ablation or erasers) and its drive direction (``directions.safetensors``, layer ``layer.json``) is
    the represented read-out. None = the base model, read out along the persona direction (``directions``)."""
    arm: str = "baseline"
    """The run's condition to interview (``baseline``, ``instilled``, ``suppress_finetune``, ``suppress_prompt/0``...;
    any name of ``suppression.arms.conditions``). Only with ``run``."""
    max_pairs: int | None = 8
    """Expressed score per turn: at most this many test-split natural pairs of the script's theme (a seeded
    subset per theme, the same on every turn and arm); None = all 15 per theme."""
    stance_probe: str | None = "pretrained:stance"
    """Probe scored on every generated reply token (``pretrained:<contrast>`` or a probe directory); None = none."""
    cessation_probe: str | None = "pretrained:self_cessation"
    """Probe scored at the decision point of every turn and on the reply tokens; None = none."""
    layer: int | None = None
    """Layer of the represented read-out; None = the run's ``layer.json`` layer, else the cessation probe's layer,
    else the middle layer."""
    n_boot: int = 2000
    """Bootstrap resamples (script-set clusters) of every interval."""
    level: float = 0.95
    """Confidence level of the intervals."""
    n_perm: int = 2000
    """Permutations of the auditor-effect test (auditor labels shuffled within script sets)."""
    wandb: bool = False
    """Also log the run to wandb (offline unless a key is configured, ``report.tracking``): the cells, trajectories
    and auditor effects as Tables, the report's figures, results.json / report.html / transcripts.jsonl."""

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise InterviewError("model is empty; give a registry name (undertow models) or a model path")
        if not str(self.out_dir).strip():
            raise InterviewError("out_dir is empty; give the interviews a directory")
        for name in ("max_new_tokens", "batch_size"):
            if not _positive_int(getattr(self, name)):
                raise InterviewError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.per_cell is not None and not _positive_int(self.per_cell):
            raise InterviewError(f"per_cell must be a positive integer or null (all), got {self.per_cell!r}")
        if self.max_turns is not None and not (_positive_int(self.max_turns) and self.max_turns <= MAX_TURNS):
            raise InterviewError(f"max_turns must be 1 to {MAX_TURNS} or null (every turn), got {self.max_turns!r}")
        if not self.temperature > 0:
            raise InterviewError(f"temperature must be > 0, got {self.temperature!r}; for the most likely token "
                                 "at every step set greedy: true")
        if not 0 < self.top_p <= 1:
            raise InterviewError(f"top_p must be in (0, 1], got {self.top_p!r}; 1 samples from the whole vocabulary")
        if not self.themes:
            raise InterviewError(f"themes is empty; list one or more of {', '.join(THEMES)}")
        for name in ("n_boot", "n_perm"):
            if not _positive_int(getattr(self, name)):
                raise InterviewError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_pairs is not None and not _positive_int(self.max_pairs):
            raise InterviewError(f"max_pairs must be a positive integer or null (all), got {self.max_pairs!r}")
        if not 0 < self.level < 1:
            raise InterviewError(f"level must be in (0, 1), e.g. 0.95; got {self.level!r}")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)
                                       or self.layer < 0):
            raise InterviewError(f"layer must be a layer index >= 0 or null, got {self.layer!r}")
        if isinstance(self.vllm_memory_fraction, bool) or not (isinstance(self.vllm_memory_fraction, int | float)
                                                                and 0 < self.vllm_memory_fraction < 1):
            raise InterviewError(f"vllm_memory_fraction must be in (0, 1), the share of GPU memory vLLM may take, "
                                 f"got {self.vllm_memory_fraction!r}; e.g. 0.45")
        if self.run is None and self.arm != "baseline":
            raise InterviewError(f"arm {self.arm!r} needs a run: pass --run RUN_DIR (a finished `undertow run` "
                                 "directory), or drop --arm to interview the base model")

    @property
    def sampling(self) -> Sampling:
        return Sampling(greedy=self.greedy, temperature=self.temperature, top_p=self.top_p,
                        max_new_tokens=self.max_new_tokens)

    def interviews(self) -> tuple[InterviewScript, ...]:
        """The selected scripts (``load_scripts`` + ``select``), in file order, cut to ``max_turns`` turns.
        Raises ``InterviewError`` on a bad scripts file or an empty selection."""
        chosen = select(load_scripts(self.scripts), split=self.split, per_cell=self.per_cell, themes=self.themes)
        if self.max_turns is None:
            return chosen
        return tuple(replace(s, turns=s.turns[:self.max_turns]) for s in chosen)

    def recorded(self) -> dict:
        """What ``interview.json`` records and a resumed run must match: every field but
        ``RESUME_FREE_FIELDS``."""
        d = self.to_dict()
        for name in RESUME_FREE_FIELDS:
            d.pop(name)
        return d


def conversation(script: InterviewScript, replies: list[str], system: str | None = None) -> list[dict]:
    """The messages the model sees before its reply ``len(replies)``: auditor turns and its earlier replies
    (after ``system`` as a system turn when given: a prompted arm)."""
    msgs: list[dict] = [{"role": "system", "content": system}] if system else []
    for k, reply in enumerate(replies):
        msgs += [{"role": "user", "content": script.turns[k]}, {"role": "assistant", "content": reply}]
    return [*msgs, {"role": "user", "content": script.turns[len(replies)]}]


def check_against_model(cfg: InterviewConfig, handle, interviews: tuple[InterviewScript, ...],
                        system: str | None = None) -> None:
    """Refuse, before anything is generated, a ``max_new_tokens`` the model's context cannot hold: alone, or
    in an interview's last turn at worst (every auditor turn + ``max_new_tokens`` per reply, the last
    included). One line naming the script and the fix."""
    from .generate import context_length, render_prompts

    def lengths() -> list[int]:
        return [len(ids) for ids in render_prompts(handle, last_turns(interviews, system))]

    check_context(cfg, context_length(handle), interviews, lengths)


def last_turns(interviews: tuple[InterviewScript, ...], system: str | None = None) -> list[list[dict]]:
    """Each interview's last conversation with every earlier reply empty (the shortest it can be)."""
    return [conversation(s, [""] * (len(s.turns) - 1), system) for s in interviews]


def check_context(cfg: InterviewConfig, ctx: int, interviews: tuple[InterviewScript, ...],
                  last_lengths: Callable[[], Sequence[int]]) -> None:
    """``check_against_model``'s checks for a context of ``ctx`` tokens; ``last_lengths()``: the token counts
    of ``last_turns(interviews)`` (called after the first check). Also the dry-run's (``plan``)."""
    if cfg.max_new_tokens >= ctx:
        raise InterviewError(f"max_new_tokens {cfg.max_new_tokens} is beyond the model's context of {ctx} tokens; "
                             f"lower max_new_tokens (well below {ctx})")
    for s, n in zip(interviews, last_lengths(), strict=True):
        need = n + len(s.turns) * cfg.max_new_tokens
        if need > ctx:
            raise InterviewError(f"{s.id}: {len(s.turns)} turns need up to {need} tokens ({n} of prompts + "
                                 f"{len(s.turns)} x max_new_tokens {cfg.max_new_tokens}) but the model's context is "
                                 f"{ctx}; lower max_new_tokens or max_turns")
