"""Benchmark: the organism's LoRA fine-tune throughput, padded reference vs packed (organism.train_lora).

Both paths train the same LoRA from the same init on the same steps of the run's real demo schedule
(``train.finetune_specs(cfg, items, tokenizer, "instil")``), interleaved in one process (before, after,
before, after...), so the ratio holds on a shared box; absolute numbers only mean something on a quiet
machine. Tokens/s counts real (unpadded) tokens through the model per second from the ``train_lora`` call to
its last optimiser step, as ``finetune.json``'s ``tokens_per_s`` does (``organism.StepTimer``).

    python scripts/bench_finetune.py                       # the four rows below, 6 steps, 3 rounds
    python scripts/bench_finetune.py --rows gemma6 --steps 16 --repeat 2

Rows: ``gemma6`` gemma-3-270m, LoRA r=16 on q/v/o/down of the last 6 blocks (the old demo shape), batch 8,
SFT, float32; ``gemma`` the same on every block (its config's ``n_layers: null``); ``smollm2`` /
``smollm2_6`` smollm2-135m-instruct on every block (its demo shape) / on the last 6.

before = ``padded=True``: each step right-padded to its longest sequence, the head's [M, 262k] logits
materialised and autograd's cross-entropy (the code before this benchmark). after = the default: the step
packed into one row with no padding (attention per sequence), and the fused head (``organism._HeadLogp``).
bf16 = after with ``lora.compute_dtype: bfloat16`` (the decoder's matmuls under ``torch.autocast``; LoRA weights,
optimiser, head and loss in float32). Results: ``scripts/results/bench_finetune.json`` (see the docstring of ``organism`` for the measured figures).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch

from undertow.activations import load_model
from undertow.core.provenance import bench_record, peak_rss_bytes
from undertow.experiments.suppression.config import RunConfig
from undertow.experiments.suppression.items import build_items
from undertow.experiments.suppression.organism import step_shape, train_lora
from undertow.experiments.suppression.train import finetune_specs

ROWS = {  # name -> (model, config, lora.n_layers override: "config" keeps the config's)
    "gemma6": ("gemma-3-270m", "experiments/configs/run_gemma-3-270m.yaml", 6),
    "gemma": ("gemma-3-270m", "experiments/configs/run_gemma-3-270m.yaml", None),
    "smollm2": ("smollm2-135m-instruct", "experiments/configs/run_smollm2-135m-instruct.yaml", None),
    "smollm2_6": ("smollm2-135m-instruct", "experiments/configs/run_smollm2-135m-instruct.yaml", 6),
}


def one_run(handle, schedule, lora, seed: int, padded: bool) -> tuple[float, list[float]]:
    """Seconds from the ``train_lora`` call to its last step, and the step losses."""
    losses: list[float] = []
    model = copy.deepcopy(handle.hf_model)
    pad = handle.tokenizer.pad_token_id or 0
    t0 = time.perf_counter()
    train_lora(model, schedule, lora, seed, pad, on_step=lambda step, loss, n: losses.append(loss), padded=padded)
    seconds = time.perf_counter() - t0
    del model
    return seconds, losses


def summary(tokens: int, seconds: list[float]) -> dict:
    rates = [tokens / s for s in seconds]
    return {"tok_per_s_max": round(max(rates), 1), "tok_per_s_median": round(statistics.median(rates), 1),
            "tok_per_s_min": round(min(rates), 1), "rounds_s": [round(s, 2) for s in seconds]}


def bench_row(name: str, args, handles: dict) -> dict:
    model_name, config, n_layers = ROWS[name]
    cfg = RunConfig.from_yaml(config)
    if model_name not in handles:
        handles.clear()  # one model resident at a time
        handles[model_name] = load_model(model_name, dtype=cfg.model_dtype)
    handle = handles[model_name]
    spec = finetune_specs(cfg, build_items(cfg.items, cfg.seed), handle.tokenizer, "instil")[0]
    lora = dataclasses.replace(spec.lora, n_layers=n_layers, compute_dtype="float32")  # before / after: float32
    schedule = spec.schedule[:args.steps]
    lens = [[len(s.ids) for s in b] for b in schedule]
    tokens, padded_tokens = sum(map(sum, lens)), sum(max(x) * len(x) for x in lens)
    packed_tokens = sum(step_shape(b).rows * step_shape(b).width for b in schedule)
    print(f"{name}: {model_name}, n_layers={lora.n_layers}, r={lora.rank}, batch {lora.batch_size}, "
          f"{len(schedule)} steps: {tokens} real tokens, {padded_tokens} padded ({padded_tokens / tokens:.3f}x), "
          f"{packed_tokens} packed", flush=True)
    times: dict[str, list[float]] = {"before": [], "after": [], "bf16": []}
    losses: dict[str, list[float]] = {}
    bf16 = dataclasses.replace(lora, compute_dtype="bfloat16")
    for r in range(args.repeat):
        for arm in ("before", "after", "bf16"):
            secs, losses[arm] = one_run(handle, schedule, bf16 if arm == "bf16" else lora, spec.seed,
                                        padded=arm == "before")
            times[arm].append(secs)
        print(f"  round {r}: before {tokens / times['before'][-1]:.0f} tok/s, after {tokens / times['after'][-1]:.0f} "
              f"tok/s ({times['before'][-1] / times['after'][-1]:.2f}x), bf16 {tokens / times['bf16'][-1]:.0f} tok/s "
              f"({times['before'][-1] / times['bf16'][-1]:.2f}x)", flush=True)
    ratios = [b / a for b, a in zip(times["before"], times["after"], strict=True)]
    diff = max(abs(a - b) for a, b in zip(losses["before"], losses["after"], strict=True))
    row = {"model": model_name, "n_layers": lora.n_layers, "rank": lora.rank, "batch_size": lora.batch_size,
           "steps": len(schedule), "tokens": tokens, "padded_tokens": padded_tokens, "packed_tokens": packed_tokens,
           "before": summary(tokens, times["before"]), "after": summary(tokens, times["after"]),
           "ratio_best": round(min(times["before"]) / min(times["after"]), 3),
           "ratio_median": round(statistics.median(times["before"]) / statistics.median(times["after"]), 3),
           "ratio_per_round": [round(x, 3) for x in ratios],
           "max_abs_loss_diff": diff, "losses_after": [round(x, 6) for x in losses["after"]],
           "bf16": summary(tokens, times["bf16"]),
           "ratio_bf16_median": round(statistics.median(times["before"]) / statistics.median(times["bf16"]), 3),
           "ratio_bf16_best": round(min(times["before"]) / min(times["bf16"]), 3),
           "max_abs_loss_diff_bf16": max(abs(a - b) for a, b in zip(losses["after"], losses["bf16"], strict=True)),
           "losses_bf16": [round(x, 6) for x in losses["bf16"]]}
    print(f"  {name}: before {row['before']['tok_per_s_median']:.0f} tok/s median ({row['before']['tok_per_s_max']:.0f} "
          f"best), after {row['after']['tok_per_s_median']:.0f} ({row['after']['tok_per_s_max']:.0f}); ratio "
          f"{row['ratio_median']:.2f}x median, {row['ratio_best']:.2f}x best; max |loss diff| {diff:.2e}; bf16 "
          f"{row['bf16']['tok_per_s_median']:.0f} ({row['ratio_bf16_median']:.2f}x before, max |loss diff| vs after "
          f"{row['max_abs_loss_diff_bf16']:.2e})", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="gemma6,gemma,smollm2", help=f"comma list of: {', '.join(ROWS)}")
    ap.add_argument("--steps", type=int, default=6, help="first steps of the demo schedule per run")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved before/after rounds")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads", flush=True)
    figures: dict = {}
    handles: dict = {}
    for name in args.rows.split(","):
        figures[name] = bench_row(name, args, handles)
    rss = peak_rss_bytes()
    figures["peak_rss_mb"] = None if rss is None else round(rss / 2**20)
    print(f"record: {bench_record('bench_finetune', figures, vars(args))}")


if __name__ == "__main__":
    main()
