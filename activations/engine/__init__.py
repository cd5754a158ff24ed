"""undertow.activations.engine: the hook engine that turns rows into stored activations.

Rows in (``rows``, ``row_checks``), rendered through the tokenizer or chat template (``render``),
positions chosen (``positions``), batched by length (``batching``, ``compiled``), shared prompts run
once under a KV cache (``shared_prompts``), activations captured at hook points (``capture``),
pooled by the kernels and streamed to the store (``sink``, ``extraction``); ``ExtractConfig`` and
the plan of one extraction (``config``, ``plan``, ``context``). Imports ``models`` and ``store``,
never ``cluster``.
"""

from .batching import bucket_batches, pad_left, pad_right, padding_fraction
from .capture import capture, capture_hf, capture_nnsight, capture_transformer_lens
from .compiled import LENGTH_BUCKETS, CompiledBody, batch_shapes, bucket_length, bucket_rows
from .config import ExtractConfig
from .extraction import NonFiniteWarning, Progress, extract, run_shards
from .plan import make_plan
from .positions import Position, parse_position, parse_positions, spans
from .render import PLAIN_GENERATION_PROMPT, Rendered, plain_prompt, render_row, render_rows
from .rows import RowSource, load_rows, read_jsonl, select_rows
from .shared_prompts import group_by_prompt, shared_batches

__all__ = [
    "LENGTH_BUCKETS", "PLAIN_GENERATION_PROMPT", "CompiledBody", "ExtractConfig", "NonFiniteWarning", "Position",
    "Progress", "Rendered", "RowSource", "batch_shapes", "bucket_batches", "bucket_length", "bucket_rows",
    "capture", "capture_hf", "capture_nnsight", "capture_transformer_lens", "extract", "group_by_prompt",
    "load_rows", "make_plan", "pad_left", "pad_right", "padding_fraction", "parse_position", "parse_positions",
    "plain_prompt", "read_jsonl", "render_row", "render_rows", "run_shards", "select_rows", "shared_batches",
    "spans",
]
