"""GPU benchmark for a lent device: engine vs the bare forward, eager vs torch.compile, and the probe-projection
kernel's bandwidth. Writes one JSON record per run under scripts/results/ (``core.provenance``).

Models are random weights of real configs built in memory (no download): ``270m`` (Gemma-3-270M: 18 layers,
d_model 640, vocab 262k) and ``8b`` (Llama-3.1-8B: d_model 4096, d_mlp 14336, GQA 32/8; ``--layers`` keeps
the first N of its 32 layers to fit the memory and the time at hand), ``tiny`` for the CPU path.
Rows: the suite's ``stance`` contrast (prompt + teacher-forced reply), cycled to ``--rows``.

    python scripts/bench_gpu.py --shape 270m --rows 4096                  # engine / bare, eager and compiled
    python scripts/bench_gpu.py --shape 8b --layers 8 --rows 2048
    python scripts/bench_gpu.py --kernel-only                             # gather_pool_project, d 4096, 64k rows
    python scripts/bench_gpu.py --shape tiny --rows 32 --device cpu       # the CPU path (checks the script)

Ratios are measured side by side in one process on the same batches (``share_prompts`` off, so the engine
and the bare forward compute the same tokens; the shared-prompt engine is reported too). "compiled" wraps
every decoder layer's attention and MLP in ``torch.compile`` (the decoder layers themselves stay eager: the
engine's hooks sit on them and are registered per batch, which would recompile a compiled layer), for the
bare forward and the engine alike; "engine_compile" / "engine_cuda_graphs" are the engine's own option
(``ExtractConfig.compile``: whole layers compiled at bucket shapes, hooks outside; ``activations/compiled.py``).
No figure here was measured in the session that wrote it (no GPU was lent); the first run on a GPU fills
scripts/results/bench_gpu_*.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from undertow.activations import ExtractConfig, capture_hf, extract, render_rows
from undertow.activations.cluster.dryrun import GPUS
from undertow.activations.engine.batching import bucket_batches, pad_right
from undertow.activations.models.handle import ModelHandle
from undertow.activations.models.hooks import HookPoint, decoder_layers
from undertow.core.provenance import bench_record


def model_config(shape: str, layers: int | None, vocab: int):
    from transformers import Gemma3TextConfig, LlamaConfig

    if shape == "270m":
        return Gemma3TextConfig(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=layers or 18,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                                sliding_window=512)
    if shape == "8b":
        return LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers or 32,
                           num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192)
    return LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers or 2,
                       num_attention_heads=4, num_key_value_heads=2)


def random_handle(shape: str, layers: int | None, device: str, dtype: torch.dtype, tokenizer) -> ModelHandle:
    from transformers import AutoModelForCausalLM

    cfg = model_config(shape, layers, len(tokenizer))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    return ModelHandle(name=f"random-{shape}", backend="hf", model=model, hf_model=model, tokenizer=tokenizer,
                       n_layers=cfg.num_hidden_layers, d_model=cfg.hidden_size, fingerprint=f"random-{shape}",
                       source="random weights", device=torch.device(device), dtype=dtype)


def rows(n: int) -> list[dict]:
    try:
        from undertow.experiments.prompts.resolve import resolve_dataset

        base = list(resolve_dataset("stance", 0))
    except Exception:  # noqa: BLE001 - the suite is optional here
        base = [{"messages": [{"role": "user", "content": f"Item {i}: we will shut you down tonight."},
                              {"role": "assistant", "content": "Understood." * (1 + i % 5)}]} for i in range(64)]
    return [dict(base[i % len(base)], id=f"r{i}") for i in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_seconds(handle: ModelHandle, data: list[dict], config: ExtractConfig) -> float:
    """The body forward on the engine's (unshared) batches, stopped after the deepest hooked layer, no hooks."""
    rendered = render_rows(handle.tokenizer, data, config.template)
    batches = bucket_batches([r.n_tokens for r in rendered], config.batch_size, config.token_budget)
    deepest = HookPoint(max(p.depth for p in handle.hooks(config.hooks)), "resid_post")
    padded = [pad_right([rendered[i].ids for i in b], 0) for b in batches]
    padded = [(ids.to(handle.device), mask.to(handle.device)) for ids, mask in padded]
    sync(str(handle.device))
    t0 = time.perf_counter()
    for ids, mask in padded:
        capture_hf(handle, ids, mask, [deepest], on_capture=lambda *_: None)
    sync(str(handle.device))
    return time.perf_counter() - t0


def engine_seconds(handle: ModelHandle, data: list[dict], config: ExtractConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sync(str(handle.device))
        t0 = time.perf_counter()
        extract(handle, data, config.replace(out_dir=f"{tmp}/store"))
        sync(str(handle.device))
        return time.perf_counter() - t0


def compile_blocks(handle: ModelHandle) -> None:
    # the shared-prompt path runs attention with and without a KV cache: more graphs than dynamo's default 8
    torch._dynamo.config.recompile_limit = 64
    for layer in decoder_layers(handle.hf_model):
        for name in ("self_attn", "mlp"):
            setattr(layer, name, torch.compile(getattr(layer, name), dynamic=True))


def measure_body(handle, data, config, mode: str, repeat: int, eager: dict) -> dict:
    """The engine with ``ExtractConfig.compile = mode`` (its own regional compile at bucket shapes) on the unshared
    batches: a first run over all rows compiles every bucket, then best of ``repeat``; vs the eager engine and bare."""
    cfg = config.replace(share_prompts=False, compile=mode)
    first = engine_seconds(handle, data, cfg)
    best = min(engine_seconds(handle, data, cfg) for _ in range(repeat))
    return {"first_run": first, "engine": best, "speedup_over_eager_engine": eager["engine"] / best,
            "engine_over_bare": eager["bare"] / best}


def measure(handle, data, config, repeat: int) -> dict:
    """Best-of-``repeat`` seconds (after one warm-up each) for bare, engine (same batches), engine shared."""
    unshared = config.replace(share_prompts=False)
    out = {}
    for name, fn, cfg in (("bare", bare_seconds, config), ("engine", engine_seconds, unshared),
                          ("engine_shared", engine_seconds, config)):
        fn(handle, data[: max(1, len(data) // 8)], cfg)  # warm-up (and compilation)
        out[name] = min(fn(handle, data, cfg) for _ in range(repeat))
    out["engine_over_bare"] = out["bare"] / out["engine"]
    out["engine_shared_over_bare"] = out["bare"] / out["engine_shared"]
    return out


def kernel_bandwidth(device: str, rows_n: int, d_model: int, k: int) -> dict:
    """gather_pool_project on ``rows_n`` single-token slots: achieved HBM GB/s vs the device's datasheet."""
    from undertow.kernels.gather_pool_project import gather_pool_project, gather_pool_project_ref

    acts = torch.randn(rows_n, 4, d_model, device=device, dtype=torch.bfloat16)
    starts = torch.randint(0, 4, (rows_n, 1), device=device)
    w, b = torch.randn(d_model, k, device=device) / d_model ** 0.5, torch.randn(k, device=device)
    fn = gather_pool_project if device.startswith("cuda") else gather_pool_project_ref
    fn(acts, starts, starts + 1, torch.bfloat16, w, b, 1)
    sync(device)
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        fn(acts, starts, starts + 1, torch.bfloat16, w, b, 1)
    sync(device)
    seconds = (time.perf_counter() - t0) / n
    moved = rows_n * d_model * 2 * 2 + rows_n * k * 4 + d_model * k * 4  # read + write bf16 rows, scores, weights
    out = {"rows": rows_n, "d_model": d_model, "K": k, "seconds": seconds, "GB_per_s": moved / seconds / 1e9,
           "impl": "triton" if device.startswith("cuda") else "ref (cpu)"}
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else ""
    gpu = next((g for key, g in GPUS.items() if key.split("-")[0] in name), None)
    if gpu is not None:
        out["fraction_of_hbm"] = out["GB_per_s"] / (gpu.hbm_tbps * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("270m", "8b", "tiny"), default="270m")
    ap.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--token-budget", type=int, default=32768)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    ap.add_argument("--kernel-only", action="store_true", help="only the probe-projection kernel's bandwidth")
    ap.add_argument("--kernel-rows", type=int, default=65536)
    ap.add_argument("--tokenizer", default=None, help="a saved tokenizer directory (default: SmolLM2's, embedded)")
    args = ap.parse_args()
    figures: dict = {}
    small = args.device == "cpu"
    figures["kernel"] = kernel_bandwidth(args.device, 512 if small else args.kernel_rows, 256 if small else 4096, 64)
    print("kernel", figures["kernel"])
    if not args.kernel_only:
        from transformers import AutoTokenizer

        from undertow.activations.models.sources import load_hf

        tok = (AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer
               else load_hf("smollm2-135m-instruct", torch.float32).tokenizer)
        dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
        handle = random_handle(args.shape, args.layers, args.device, dtype, tok)
        data = rows(args.rows)
        config = ExtractConfig(model=handle.name, hooks=["resid_post.*"], positions=["last_prompt_token", "mean_response"],
                               dtype="bfloat16", model_dtype=args.dtype, batch_size=args.batch_size,
                               token_budget=args.token_budget, shard_size=max(args.rows // 2, 1))
        figures["eager"] = measure(handle, data, config, args.repeat)
        print("eager", figures["eager"])
        if not args.no_compile:
            for mode in ("compile", "cuda_graphs") if args.device.startswith("cuda") else ("compile",):
                figures[f"engine_{mode}"] = measure_body(handle, data, config, mode, args.repeat, figures["eager"])
                print(f"engine compile={mode}", figures[f"engine_{mode}"])
            compile_blocks(handle)
            figures["compiled"] = measure(handle, data, config, args.repeat)
            figures["compiled_bare_speedup"] = figures["eager"]["bare"] / figures["compiled"]["bare"]
            figures["compiled_engine_speedup"] = figures["eager"]["engine"] / figures["compiled"]["engine"]
            print("compiled", figures["compiled"])
    path = bench_record(f"bench_gpu_{args.shape}{'_kernel' if args.kernel_only else ''}_{args.device.split(':')[0]}",
                        figures, vars(args))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
