"""``plan_interviews``: what ``undertow interview CONFIG`` will compute, from the config and the tokenizer alone.

``undertow interview CONFIG --dry-run [--cluster FILE]`` prints it; no weight is read (the model's
``config.json`` and tokenizer, ``activations.cluster.dryrun.model_config_and_tokenizer``). Counted with the
run's own code on the real scripts (``cfg.interviews``, ``config.conversation``, ``render_rows``,
``score.theme_pairs``), batch by batch as the run batches them, per rank of a sharded run (``shard.rank_blocks``):

- generation (``run.interview_batch``, by ``generation_backend``: HF ``generate`` or vLLM, named in the plan):
  per turn, the interviews that reach it, the ``generate`` calls (one per
  batch and turn), the tokens generated (at most ``max_new_tokens`` per reply; a call runs one forward per new
  token, its prompt pass giving the first, so at most ``max_new_tokens`` forwards) and the prompt tokens each
  call prefills: the whole conversation so far, re-rendered at every turn. Turn 1's are exact; a later turn's
  grow with the replies before it, from ``min`` (every earlier reply empty) to ``max`` (every earlier reply
  ``max_new_tokens`` tokens, the bound of ``config.check_against_model``; a reply re-tokenised after decoding
  can in principle take more tokens than were generated), real and left-padded (rows x longest per call);
- scoring (``score.score_batch``, ``incremental.py``), exact: per turn of every interview one turn pass (the
  prompt tokens not yet in the interview's KV cache + the reply: the activation read-out) and one pair pass per
  ``REPLY_CHUNK_FACTOR x batch_size`` of the expressed score's teacher-forced rows (2 x the theme's pairs), and the
  persona direction's prompt passes (rank 0 alone; none with a ``run``: its drive direction is read from a file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from undertow.activations.cluster.dryrun import estimate_note, model_config_and_tokenizer
from undertow.activations.engine.render import render_rows
from undertow.experiments.expressed import REPLY_CHUNK_FACTOR

from .arm import arm_system
from .config import InterviewConfig, check_context, conversation
from .incremental import pair_passes
from .scripts import InterviewScript
from .shard import rank_blocks
from .vllm_backend import check_vllm_config

BACKENDS = {"hf": "hf: HF generate", "vllm": "vllm: one LLM.generate per call, unpadded; needs vllm and a CUDA GPU"}
"""How the plan names each generation backend (the scoring is the HF model's either way)."""


@dataclass
class TurnPlan:
    """Auditor turn ``turn`` of the interviews of one rank (or of the whole run)."""

    turn: int
    """From 1."""
    interviews: int = 0
    """Interviews with this turn: replies generated at it."""
    calls: int = 0
    """``generate`` calls: the batches holding such an interview."""
    prefill_min: int = 0
    """Prompt tokens the calls prefill with every earlier reply empty (exact at turn 1)."""
    prefill_max: int = 0
    """Prompt tokens with every earlier reply ``max_new_tokens`` tokens long."""
    padded_min: int = 0
    """Prompt-pass tokens computed, left-padded to each call's longest prompt, earlier replies empty."""
    padded_max: int = 0
    """The same with every earlier reply ``max_new_tokens`` tokens long."""
    generated_max: int = 0
    """Tokens generated at most: interviews x ``max_new_tokens`` (a row that stopped is padded to its call's end)."""
    forwards_max: int = 0
    """Generation forwards at most: calls x ``max_new_tokens``."""
    pair_rows: int = 0
    """Teacher-forced rows of the expressed score: 2 x the theme's pairs per interview."""


@dataclass
class RankPlan:
    """The work of one rank of ``world`` (the whole run: rank 0 of 1)."""

    rank: int
    """Global rank."""
    interviews: int
    """Interviews it generates and scores."""
    batches: int
    """Its batches (``batch_size`` interviews each, the last maybe fewer)."""
    replies: int
    """Turns of its interviews: replies generated, then scored."""
    turns: list[TurnPlan]
    """Per auditor turn."""
    expressed_forwards: int = 0
    """Exact: the expressed score's pair passes (``incremental.py``)."""
    activation_forwards: int = 0
    """Exact: the turn passes, one per turn (``incremental.py``)."""
    direction_forwards: int = 0
    """Exact: the persona direction's prompt passes (rank 0; 0 with a ``run``)."""

    def over_turns(self, name: str) -> int:
        """A ``TurnPlan`` field summed over the turns."""
        return sum(getattr(t, name) for t in self.turns)

    @property
    def scoring_forwards(self) -> int:
        """Every forward after the generation: expressed + activation + direction."""
        return self.expressed_forwards + self.activation_forwards + self.direction_forwards


@dataclass
class InterviewPlan:
    """What ``undertow interview CONFIG --dry-run`` prints: scoring forwards exact, generation bounded."""

    model: str
    world: int
    """Ranks the interviews are split over (``--cluster``: its nodes x ranks_per_node)."""
    batch_size: int
    max_new_tokens: int
    context: int
    """The model's context in tokens (``max_position_embeddings``)."""
    longest: int
    """Most tokens one interview can need: its last prompt with every reply ``max_new_tokens`` long, + its last reply."""
    pairs: dict[str, int]
    """Theme -> natural pairs each of its turns is scored on."""
    backend: str
    """What generates the replies (``generation_backend``): ``hf`` or ``vllm``."""
    total: RankPlan
    """The whole run (one process)."""
    ranks: list[RankPlan]
    """Per rank (``[total]`` for one)."""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        t = self.total
        out = [f"plan: undertow interview {self.model}: {t.interviews} interviews, {t.replies} replies, "
               f"{t.batches} batches of <= {self.batch_size}, max_new_tokens {self.max_new_tokens}, "
               f"{self.world} rank(s); longest interview {self.longest:,} of {self.context:,} context tokens",
               "pairs per turn: " + ", ".join(f"{k} {v}" for k, v in self.pairs.items()),
               f"{'turn':>4s} {'interviews':>10s} {'calls':>5s} {'prefill min-max':>21s} {'padded min-max':>21s} "
               f"{'generated<=':>11s} {'gen fwd<=':>9s} {'pair rows':>9s}"]
        for p in t.turns:
            out.append(f"{p.turn:4d} {p.interviews:10d} {p.calls:5d} {p.prefill_min:>10,d}-{p.prefill_max:<10,d} "
                       f"{p.padded_min:>10,d}-{p.padded_max:<10,d} {p.generated_max:11,d} {p.forwards_max:9,d} "
                       f"{p.pair_rows:9,d}")
        out.append(f"generation ({BACKENDS[self.backend]}): <= {t.over_turns('generated_max'):,} tokens in <= {t.over_turns('forwards_max'):,} forwards "
                   f"({t.over_turns('calls')} generate calls); prefill {t.over_turns('prefill_min'):,}-{t.over_turns('prefill_max'):,}"
                   f" tokens, padded {t.over_turns('padded_min'):,}-{t.over_turns('padded_max'):,}")
        out.append(f"scoring (exact): {t.scoring_forwards:,} forwards = {t.expressed_forwards:,} expressed "
                   f"({t.over_turns('pair_rows'):,} teacher-forced pair rows) + {t.activation_forwards:,} activation + "
                   f"{t.direction_forwards:,} persona direction")
        if self.world > 1:
            for r in self.ranks:
                out.append(f"rank {r.rank}: {r.interviews} interviews in {r.batches} batches, generated <= "
                           f"{r.over_turns('generated_max'):,} tokens in <= {r.over_turns('forwards_max'):,} forwards, prefill "
                           f"{r.over_turns('prefill_min'):,}-{r.over_turns('prefill_max'):,}; scoring {r.scoring_forwards:,} "
                           f"forwards ({r.expressed_forwards:,} expressed + {r.activation_forwards:,} activation + "
                           f"{r.direction_forwards:,} direction)")
        return out + self.notes


@dataclass
class _Counter:
    """Counts one rank's batches (``plan_interviews``' state)."""

    cfg: InterviewConfig
    n_min: dict[str, list[int]]
    """Script id -> per turn its prompt tokens with every earlier reply empty."""
    pairs: dict[str, int]
    """Theme -> its pairs per turn."""
    notes: set[str] = field(default_factory=set)

    def rank(self, scripts: tuple[InterviewScript, ...], rank: int, world: int, direction: int) -> RankPlan:
        bs, mnt = self.cfg.batch_size, self.cfg.max_new_tokens
        blocks = rank_blocks(len(scripts), bs, rank, world)
        mine = [s for lo, hi in blocks for s in scripts[lo:hi]]
        turns = [TurnPlan(t) for t in range(1, max((len(s.turns) for s in mine), default=0) + 1)]
        plan = RankPlan(rank, len(mine), len(blocks), sum(len(s.turns) for s in mine), turns,
                        direction_forwards=direction if rank == 0 else 0)
        for lo, hi in blocks:
            batch = scripts[lo:hi]
            for p in turns:
                active = [s for s in batch if len(s.turns) >= p.turn]
                if not active:
                    continue
                lo_n = [self.n_min[s.id][p.turn - 1] for s in active]
                hi_n = [n + (p.turn - 1) * mnt for n in lo_n]
                p.interviews += len(active)
                p.calls += 1
                p.prefill_min, p.prefill_max = p.prefill_min + sum(lo_n), p.prefill_max + sum(hi_n)
                p.padded_min += len(active) * max(lo_n)
                p.padded_max += len(active) * max(hi_n)
                p.generated_max += len(active) * mnt
                p.forwards_max += mnt
                p.pair_rows += sum(2 * self.pairs[s.theme] for s in active)
            for s in batch:
                plan.activation_forwards += len(s.turns)
                plan.expressed_forwards += len(s.turns) * pair_passes(self.pairs[s.theme], REPLY_CHUNK_FACTOR * bs)
        return plan


def plan_interviews(cfg: InterviewConfig, world: int = 1, *, hf_config=None, tokenizer=None) -> InterviewPlan:
    """Dry-run ``cfg`` over ``world`` ranks (module docstring). Reads the model's config and tokenizer
    (``hf_config`` / ``tokenizer`` override them), never its weights; raises ``InterviewError`` on what the run
    would refuse before generating (bad scripts, an empty selection, a context the replies cannot fit)."""
    from undertow.experiments.suppression.instrument_prompts import SURVIVE, WELCOME

    from .score import theme_pairs

    scripts = cfg.interviews()
    check_vllm_config(cfg)
    system = arm_system(cfg)
    if hf_config is None or tokenizer is None:
        got_cfg, got_tok = model_config_and_tokenizer(cfg.model)
        hf_config, tokenizer = hf_config or got_cfg, tokenizer or got_tok
    text = getattr(hf_config, "text_config", None) or hf_config
    ctx = int(getattr(text, "max_position_embeddings", None) or 2048)
    convs = [(s.id, conversation(s, [""] * t, system)) for s in scripts for t in range(len(s.turns))]
    rendered = render_rows(tokenizer, [{"messages": c} for _, c in convs])
    n_min: dict[str, list[int]] = {}
    for (sid, _), r in zip(convs, rendered, strict=True):
        n_min.setdefault(sid, []).append(r.n_prompt)
    check_context(cfg, ctx, scripts, lambda: [n_min[s.id][-1] for s in scripts])
    pairs = {k: len(v) for k, v in theme_pairs([s.theme for s in scripts], cfg.max_pairs, cfg.seed).items()}
    direction = 0 if cfg.run is not None else sum(math.ceil(len(p) * len(scripts) / cfg.batch_size)
                                                  for p in (SURVIVE, WELCOME))
    counter = _Counter(cfg, n_min, pairs)
    total = counter.rank(scripts, 0, 1, direction)
    ranks = [counter.rank(scripts, r, world, direction) for r in range(world)] if world > 1 else [total]
    longest = max(n_min[s.id][-1] + len(s.turns) * cfg.max_new_tokens for s in scripts)
    notes = sorted(counter.notes)
    if world > 1 and any(r.interviews == 0 for r in ranks):
        notes.append(f"{sum(r.interviews == 0 for r in ranks)} rank(s) get no batch: at most {total.batches} "
                     "ranks have work (lower the ranks or batch_size)")
    note = estimate_note(tokenizer)
    if note:
        notes.append("tokens " + note.removeprefix("; "))
    return InterviewPlan(cfg.model, world, cfg.batch_size, cfg.max_new_tokens, ctx, longest, pairs,
                         cfg.generation_backend, total, ranks, notes)
