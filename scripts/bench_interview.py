"""Benchmark: interview replies generated batched vs one interview at a time, side by side in one process.

The same prompts both ways: the first auditor turn of ``--interviews`` scripts of the demo selection
(``experiments/configs/interview_smollm2-135m-instruct.yaml``), ``--tokens`` new tokens each, sampled with the
config's settings and seeds (``interview.generate.generate_replies``: the seeded sampler inside HF
``generate``, KV cache). ``batched`` is one ``generate`` call over all of them (left-padded); ``one_at_a_time``
is one call per interview. Rounds alternate (batched, one at a time, batched, ...) so a shared box's load hits
both alike; figures are generated tokens (stop token included) per second, min and median over rounds, and the
ratio of the medians. Both ways produce the same replies (checked every round: the generator of each interview
does not depend on its batch). Absolute numbers only mean something on a quiet machine.

    python scripts/bench_interview.py                              # 16 interviews x first turn, 48 tokens, 3 rounds
    python scripts/bench_interview.py --interviews 8 --tokens 32 --repeat 2 --threads 2

Thin launcher: the work is ``undertow.experiments.interview``. Results: ``scripts/results/bench_interview.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from undertow.core.provenance import bench_record, peak_rss_bytes

CONFIG = Path(__file__).resolve().parents[1] / "experiments/configs/interview_smollm2-135m-instruct.yaml"
RESULTS = Path(__file__).resolve().parent / "results"


def rates(tokens: int, seconds: list[float]) -> dict:
    per_s = [tokens / s for s in seconds]
    return {"seconds": seconds, "tokens_per_s_min": min(per_s), "tokens_per_s_median": statistics.median(per_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interviews", type=int, default=16, help="interviews (first turn of each)")
    ap.add_argument("--tokens", type=int, default=48, help="max new tokens per reply")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of (batched, one at a time)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not write the JSON record")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from undertow.activations import load_model
    from undertow.experiments.interview.config import InterviewConfig, conversation
    from undertow.experiments.interview.generate import generate_replies, render_prompts
    from undertow.experiments.interview.run import turn_seed

    cfg = InterviewConfig.from_yaml(CONFIG, max_new_tokens=args.tokens)
    scripts = cfg.interviews()[:args.interviews]
    handle = load_model(cfg.model, dtype=cfg.model_dtype, device=cfg.device)
    convs = [conversation(s, []) for s in scripts]
    seeds = [turn_seed(cfg.seed, s.id, 1) for s in scripts]
    prompts = render_prompts(handle, convs)

    def batched():
        return generate_replies(handle, convs, seeds, cfg.sampling)

    def one_at_a_time():
        return [generate_replies(handle, [c], [s], cfg.sampling)[0] for c, s in zip(convs, seeds, strict=True)]

    batched()  # warm-up (first-call allocations, the chat template's compile)
    times: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}
    same, tokens = True, None
    for _ in range(args.repeat):
        got = {}
        for name, fn in (("batched", batched), ("one_at_a_time", one_at_a_time)):
            t0 = time.perf_counter()
            got[name] = fn()
            times[name].append(time.perf_counter() - t0)
        same &= got["batched"] == got["one_at_a_time"]
        tokens = sum(len(r.tokens) + (r.finish == "stop") for r in got["batched"])
    figures = {"model": cfg.model, "interviews": len(convs), "max_new_tokens": args.tokens,
               "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))],
               "generated_tokens": tokens, "sampling": {"temperature": cfg.temperature, "top_p": cfg.top_p},
               "torch_threads": torch.get_num_threads(), "repeat": args.repeat,
               "batched": rates(tokens, times["batched"]), "one_at_a_time": rates(tokens, times["one_at_a_time"]),
               "identical_replies": bool(same), "peak_rss_mb": (peak_rss_bytes() or 0) / 2**20}
    figures["ratio_median"] = (figures["batched"]["tokens_per_s_median"]
                               / figures["one_at_a_time"]["tokens_per_s_median"])
    figures["ratio_min"] = figures["batched"]["tokens_per_s_min"] / figures["one_at_a_time"]["tokens_per_s_min"]
    print(figures)
    if not args.no_record:
        print("wrote", bench_record("bench_interview", figures, {k: v for k, v in vars(args).items()}, RESULTS))


if __name__ == "__main__":
    main()
