"""A compiled model body (``ExtractConfig.compile``): decoder layers through ``torch.compile``, fixed shapes.

Regional compilation: each decoder layer up to the deepest hooked one has its ``forward`` replaced by a
``torch.compile`` of it while a batch runs, and put back after. The layers share one code object, so one
compiled graph serves every layer of a kind (Gemma 3: two, sliding and full attention). The hooks stay on
the real HF modules, outside the compiled region: ``resid_pre``/``resid_post`` (and the early stop) hook the
layer's ``__call__``, which stays eager. A layer holding an ``attn_out``/``mlp_out`` hook runs eager: its
hook would sit inside the graph, and re-registering it per batch would recompile per batch.

Shapes are fixed so that it compiles once per bucket, never per batch: a batch's length is padded up to
``bucket_length`` (``LENGTH_BUCKETS``: 16, 24, 32, 48, 64, 96, ... 2^k and 1.5 x 2^k, so at most a third of
a batch is bucket padding, ~1/6 on average), its rows up to ``bucket_rows`` (what the token budget allows at
the bucket of its longest row) with one-token dummy rows, whose outputs are cut off before pooling. Batches
are cut longest first by bucket length without breaking at bucket edges, so only a shard's last batch is
short: row padding costs at most one batch per shard, and each bucket is one shape (one graph per layer
kind; fewer compiles than row buckets, and static for CUDA graphs). Right padding keeps every real token's
values (causal attention; ``batching.py``). Dynamo's recompile limit (8 per code object) is raised to
``RECOMPILE_LIMIT`` while the body runs.

Measured (``scripts/bench_compile.py``, record ``scripts/results/bench_compile.json``): Gemma-3-270M fp32 on
CPU, 1 thread of a shared 2-core box (load ~4.5), 128 stance rows (14,358 real tokens), every layer's
resid_post x (last_prompt_token, mean_response), batch 16, 2,048-token budget, no shared prompts: eager 222
tok/s, compiled 196 tok/s (0.88x; first run 108 s, 3 graphs). Slower on CPU: the bucketed batches compute
17,664 padded tokens against eager's 14,787 (1.19x), and per computed token the compiled layers are only
~1.05x faster (CPU time is in the GEMMs, which inductor leaves to the same BLAS). The compiled body is the GPU
path, where the eager engine is launch-bound (H100: 0.60x of bare, 29k launches per run); no GPU was lent
to measure it (``scripts/bench_gpu.py`` reports engine_compile / engine_cuda_graphs where one is).

``cuda_graphs`` compiles with ``mode="reduce-overhead"``: each layer's graph is recorded once per shape and
replayed as a CUDA graph (the launch-bound case of the engine doc: 29k launches per run on an H100). CUDA
only: on any other device it is refused in one line.

Not compiled: the embedding, rotary and mask code before the layers (once per batch), backends other than
``hf``, a model split by a device map (accelerate wraps each layer's forward), and shared-prompt batches
(``shared_prompts.py``: their KV cache and left-padded prompt pass run eager).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, get_args

import torch

from undertow.core.errors import ConfigError

from .batching import bucket_batches, pad_right

CompileMode = Literal["none", "compile", "cuda_graphs"]
"""``ExtractConfig.compile``: the config field type."""
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
RECOMPILE_LIMIT = 128
"""Graphs per layer code object: buckets x layer kinds x (attention mask or none) stay far below it."""


def _next_bucket(b: int) -> int:
    return b * 3 // 2 if b & (b - 1) == 0 else b // 3 * 4  # 16 -> 24 -> 32 -> 48 -> 64 ...


def bucket_length(n: int) -> int:
    """The smallest of 16, 24, 32, 48, 64, 96, ... (2^k and 1.5 x 2^k) that holds ``n`` tokens."""
    b = 16
    while b < n:
        b = _next_bucket(b)
    return b


def _buckets_up_to(limit: int) -> tuple[int, ...]:
    out = [16]
    while out[-1] < limit:
        out.append(_next_bucket(out[-1]))
    return tuple(out)


LENGTH_BUCKETS = _buckets_up_to(8192)
"""16, 24, 32, 48, ... 6,144, 8,192 (``bucket_length`` continues the series past it)."""


def bucket_rows(length: int, batch_size: int, token_budget: int) -> int:
    """Rows of every batch at bucket ``length``: as many as the budget allows (at least one)."""
    return min(batch_size, max(1, token_budget // length))


def batch_shapes(lengths: Sequence[int], batch_size: int, token_budget: int,
                 bucketed: bool) -> list[tuple[list[int], int, int]]:
    """(row indices, rows computed, length computed) of each plain batch, as the engine cuts and pads them:
    eager to the batch's longest row, ``bucketed`` (a compiled body) to (``bucket_rows``, ``bucket_length``)."""
    size = bucket_length if bucketed else int
    out = []
    for batch in bucket_batches([size(n) for n in lengths], batch_size, token_budget):
        length = max(size(lengths[i]) for i in batch)
        rows = max(len(batch), bucket_rows(length, batch_size, token_budget)) if bucketed else len(batch)
        out.append((batch, rows, length))
    return out


def check_mode(mode: str, handle) -> None:
    """One line when ``mode`` cannot run on this handle (checked when the plan is made, before any shard)."""
    if mode == "none":
        return
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile {mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if handle.backend != "hf":
        raise ConfigError(f"compile: {mode} runs on backend 'hf' only (got {handle.backend!r}): use compile: none")
    if handle.extra.get("device_map"):
        raise ConfigError(f"compile: {mode} with a device map is not supported (accelerate wraps each layer's "
                          "forward): use compile: none")
    if mode == "cuda_graphs" and handle.device.type != "cuda":
        raise ConfigError(f"compile: cuda_graphs needs a CUDA device but the model is on {handle.device}: use "
                          "compile: compile (torch.compile without graphs) or none")


class CompiledBody:
    """The compiled layers of one handle for one set of hook points; ``active()`` swaps them in."""

    def __init__(self, handle, mode: str, points: Sequence) -> None:
        check_mode(mode, handle)
        self.mode = mode
        deepest = max(p.depth for p in points)
        inner = {p.layer for p in points if p.site not in ("resid_pre", "resid_post", "embed")}
        self.layers = [layer for i, layer in enumerate(handle.layers) if i <= deepest and i not in inner]
        kw = {"mode": "reduce-overhead"} if mode == "cuda_graphs" else {}
        self.compiled = [torch.compile(layer.forward, dynamic=False, **kw) for layer in self.layers]

    def pad(self, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int, token_budget: int,
            pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``pad_right`` to (``bucket_rows``, ``bucket_length``); dummy rows hold one pad token (no row is all
        mask, so attention stays finite)."""
        length = bucket_length(max(len(s) for s in seqs))
        rows = max(len(seqs), bucket_rows(length, batch_size, token_budget))
        full = [*seqs, *([pad_id],) * (rows - len(seqs))]
        ids_BT, mask_BT = pad_right(full, pad_id, pin=pin)
        grow = length - ids_BT.shape[1]
        if grow:
            ids_BT = torch.nn.functional.pad(ids_BT, (0, grow), value=pad_id)
            mask_BT = torch.nn.functional.pad(mask_BT, (0, grow), value=0)
        return ids_BT, mask_BT

    @contextmanager
    def active(self) -> Iterator[None]:
        """The compiled forwards in place of the layers' own for one batch; put back after, even on error."""
        saved = [layer.__dict__.get("forward") for layer in self.layers]
        if self.mode == "cuda_graphs":
            torch.compiler.cudagraph_mark_step_begin()  # the previous batch's graph outputs may be overwritten
        try:
            for layer, fn in zip(self.layers, self.compiled, strict=True):
                layer.forward = fn
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                yield
        finally:
            for layer, old in zip(self.layers, saved, strict=True):
                if old is None:
                    layer.__dict__.pop("forward", None)
                else:
                    layer.forward = old


def rows_only(n_rows: int, on_capture: Callable[[str, torch.Tensor], None]) -> Callable[[str, torch.Tensor], None]:
    """``on_capture`` seeing only the first ``n_rows`` rows (the dummy rows of ``CompiledBody.pad`` cut off)."""
    return lambda name, acts_BTD: on_capture(name, acts_BTD[:n_rows])
