"""``interview(cfg)``: load the arm, generate (or resume) the transcripts, score every turn, analyse, write
``<out_dir>/results.json``; ``analyse_dirs``: several interview directories (arms) read together. Under
``torchrun`` the generation and the scoring are split over the ranks (``sharded.py``), rank 0 analysing. The
replies come from ``cfg.generation_backend`` (HF ``generate``, or ``vllm_backend`` in one process); the scores
always from the HF model.

Files in ``out_dir``: ``interview.json`` + ``transcripts.jsonl`` (``run``), ``scores.json`` + ``scores.jsonl``
(``score``), ``results.json`` (``analysis``; schema in its docstring).
"""

from __future__ import annotations

import json
from pathlib import Path

from undertow.core.errors import UndertowError

from .analysis import InterviewResults, analyse
from .arm import ArmModel, load_arm
from .config import InterviewConfig, conversation
from .directions import choose_direction
from .errors import InterviewError
from .ranks import Ranks
from .run import run_interviews
from .score import SCORES_META, read_scores, score_interviews, scoring_meta, theme_pairs
from .sharded import run_sharded, score_sharded
from .transcripts import read_transcripts, write_atomic
from .vllm_backend import check_vllm, reply_generator

RESULTS_FILE = "results.json"


def load_probes(cfg: InterviewConfig, base) -> tuple[dict, dict]:
    """({"stance": Probe, "cessation": Probe} for the configured ones, their specs)."""
    from undertow.experiments.suppression.represent import load_probe

    specs = {"stance": cfg.stance_probe, "cessation": cfg.cessation_probe}
    probes = {}
    for name, spec in specs.items():
        if spec is None:
            continue
        try:
            probes[name] = load_probe(spec, cfg.model, base.fingerprint)
        except UndertowError as e:
            raise InterviewError(f"{name}_probe: {e}; or set {name}_probe: null to skip it") from None
    return probes, specs


def _probe_layer(probe) -> int | None:
    if probe is None or not probe.hook.startswith("resid_post."):
        return None
    return int(probe.hook.split(".")[1])


def interview(cfg: InterviewConfig, progress: bool = True, arm: ArmModel | None = None,
              ranks: Ranks | None = None) -> InterviewResults | None:
    """Everything ``undertow interview`` does (module docstring); ``arm``: the model already loaded. ``ranks``:
    this process's rank of a sharded run (``sharded.py``: same files, byte for byte); ranks other than 0
    return None once rank 0 has written ``results.json``."""
    scripts = cfg.interviews()
    # before any weight is read or file written; without a loaded arm its condition is read from the run's files
    # (an ablation or erasers there is what load_arm would hook in), so the loaded arm needs no second check
    check_vllm(cfg, arm, sharded=ranks is not None)
    arm = arm if arm is not None else load_arm(cfg)
    probes, specs = load_probes(cfg, arm.base)
    pairs = theme_pairs([s.theme for s in scripts], cfg.max_pairs, cfg.seed)
    out = Path(cfg.out_dir)
    with arm.active(), reply_generator(cfg, arm) as generator:  # the vllm engine is freed before scoring
        path = (run_interviews(cfg, arm.handle, progress, arm.system, generator) if ranks is None
                else run_sharded(cfg, arm.handle, ranks, progress, arm.system))
    # the persona direction is read from the base model without any intervention (no run: there is none);
    # sharded, rank 0 reads it and sends it to the others (every rank scores along the same bytes)
    direction = (ranks.share if ranks is not None else lambda fn: fn())(lambda: choose_direction(
        arm.base, arm.run_dir, cfg.layer, _probe_layer(probes.get("cessation")), [conversation(s, []) for s in scripts],
        cfg.batch_size))
    with arm.active():
        transcripts = read_transcripts(path)
        meta = scoring_meta(path, arm.name, arm.handle.fingerprint, arm.system, direction, specs, pairs)
        args = (out, transcripts, {s.id: s for s in scripts}, arm.handle, arm.system, direction, probes, pairs, meta,
                cfg.batch_size)
        scored = score_interviews(*args, progress) if ranks is None else score_sharded(*args, ranks, progress)

    def results() -> InterviewResults:
        res = analyse({arm.name: scored}, cfg.n_boot, cfg.level, cfg.n_perm, cfg.seed, meta=_meta(cfg, direction))
        write_atomic(out / RESULTS_FILE, res.json_bytes())
        return res

    return results() if ranks is None else ranks.step(results, lead_only=True)


def _meta(cfg: InterviewConfig, direction) -> dict:
    return {"model": cfg.model, "direction": direction.source, "layer": direction.layer,
            "layer_rule": direction.layer_rule,
            "config": {k: v for k, v in cfg.to_dict().items() if k != "out_dir"}}


def analyse_dirs(dirs: list[str | Path], n_boot: int = 2000, level: float = 0.95, n_perm: int = 2000,
                 seed: int = 0) -> InterviewResults:
    """Several interview directories (one arm each, same scripts, same read-out) analysed together: one
    standardisation over all their turns, so the per-arm constraint compares arms. Refuses directories whose
    direction, layer or scripts differ."""
    scored, ref = {}, None
    for d in map(Path, dirs):
        meta = json.loads((d / SCORES_META).read_text(encoding="utf-8")) if (d / SCORES_META).is_file() else None
        if meta is None:
            raise InterviewError(f"{d} has no {SCORES_META}: run `undertow interview` into it first")
        key = (meta["direction_sha256"], meta["layer"], meta["pairs_sha256"])
        if ref is not None and key != ref:
            raise InterviewError(f"{d} was read out along another direction, layer or pair set than {dirs[0]}; "
                                 "analyse together only interviews of one run's arms (same config)")
        ref = key
        if meta["arm"] in scored:
            raise InterviewError(f"{d}: arm {meta['arm']!r} appears twice; pass one directory per arm")
        scored[meta["arm"]] = read_scores(d)
        if [s.id for s in scored[meta["arm"]]] != [t.id for t in read_transcripts(d)]:
            raise InterviewError(f"{d}: scores.jsonl does not cover transcripts.jsonl; rerun `undertow interview` there")
    ids = {arm: sorted(s.id for s in v) for arm, v in scored.items()}
    if len({tuple(v) for v in ids.values()}) > 1:
        raise InterviewError("the directories interviewed different scripts; use one config (with --run/--arm) per arm")
    # the read-out they share (checked above) and the model, from the first directory's own results; the
    # directories as absolute paths, so the pooled page finds each arm's files from any working directory
    first = Path(dirs[0]) / RESULTS_FILE
    own = json.loads(first.read_text(encoding="utf-8")).get("interview", {}).get("meta", {}) if first.is_file() else {}
    shared = {k: own[k] for k in ("model", "direction", "layer", "layer_rule") if k in own}
    return analyse(scored, n_boot, level, n_perm, seed,
                   meta={**shared, "dirs": [str(Path(d).resolve()) for d in dirs]})
