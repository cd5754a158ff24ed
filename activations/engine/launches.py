"""Kernel launches the extraction engine issues beyond the bare forward, counted with torch.profiler on the CPU.

On CUDA every aten op that computes is a kernel launch (or a memcpy); the engine runs the same Python and the
same aten calls on the CPU, so a CPU profile (``with_stack=True``) counts the launches without a GPU. Each
top-level aten op is attributed to where it comes from by its Python stack (``classify``): the innermost
engine frame above it names a source (``SOURCES``: pooling, moments, index tensors, ...) and a scope (per
batch, per shard, per run); an op under ``capture_hf`` with library frames in between is the model's own
``forward``. ``launches`` counts the leaf ops that compute: views, allocations and a no-op ``to`` launch
nothing on CUDA (``NO_LAUNCH``), ops that decompose launch what their children launch (``DESCEND``).

``compare(handle, data, config)`` profiles the bare body forward on the engine's own batches
(``run_bare``: same shards, same ``batch_shapes`` cut, same padding, stopped after the last layer's
``resid_post``, no hooks) and ``extract()`` (``run_engine``); give the config ``share_prompts=False`` and hooks
that reach the last layer (``resid_post.*``), so both compute the same tokens through the same layers: the
forward's ops cancel, the rest is what the engine adds. Users: ``scripts/bench_launches.py``
(the record, ``scripts/results/bench_launches.json``) and ``tests/activations/engine/test_launches.py``
(a launch budget per batch). The tables name engine files and functions: a renamed one falls to
``engine other (per run)`` (``Comparison.unattributed``), so keep them in step with the code.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from undertow import kernels

from ..models.cpu_linear import onednn_linears
from ..models.handle import ModelHandle
from ..models.hooks import HookPoint
from .batching import pad_right
from .capture import capture_hf
from .compiled import batch_shapes
from .config import ExtractConfig
from .extraction import extract, read_rows, run_packed
from .positions import parse_positions, row_spans
from .render import render_rows

NO_LAUNCH = {"aten::" + n for n in (
    "empty", "empty_strided", "empty_like", "view", "_unsafe_view", "as_strided", "as_strided_", "slice", "select",
    "expand", "expand_as", "permute", "reshape", "_reshape_alias", "unsqueeze", "squeeze", "t", "transpose",
    "alias", "detach", "lift_fresh", "resolve_conj", "resolve_neg", "to", "contiguous", "unbind", "split", "narrow",
    "unflatten", "flatten", "chunk", "view_as", "set_", "resize_", "result_type", "is_nonzero", "item",
    "_has_compatible_shallow_copy_type", "size", "stride", "dim", "numel", "is_same_size", "lift_fresh_copy")}
"""Ops that launch no kernel on CUDA themselves (a ``to``/``contiguous``/``reshape`` that copies has a copy child)."""
DESCEND = {"aten::" + n for n in (
    "isfinite", "__and__", "__or__", "__invert__", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like",
    "new_zeros", "new_ones", "new_full", "new_empty", "_to_copy", "clone", "matmul", "linear", "einsum", "index",
    "embedding", "softmax", "type_as", "float", "repeat", "dropout", "scaled_dot_product_attention", "tensor",
    "scalar_tensor", "rsub", "masked_fill", "pad", "constant_pad_nd")}
"""Ops that decompose into other aten ops: their children are the launches."""

COPY_CALLS = ("<built-in method to", "<built-in method cpu", "<built-in method cuda")
SYNC_OPS = {"aten::_local_scalar_dense": "item", "aten::nonzero": "nonzero"}
SYNC_METHODS = {"tolist": "tolist", "cpu": "to host", "numpy": "to host", "synchronize": "synchronize"}

#: (file, function) of engine code -> (source, scope). The innermost engine frame of an op decides; an op
#: under a capture_hf frame with library frames in between belongs to the model's own forward.
INHERIT = ("caller's", "")
SOURCES = {
    ("capture.py", "capture_hf"): ("forward", "batch"),
    ("capture.py", "*"): ("hooks", "batch"),
    ("shared_prompts.py", "*"): ("hooks", "batch"),
    ("compiled.py", "*"): ("hooks", "batch"),
    ("gather_pool.py", "_nonfinite"): ("non-finite checks", "batch"),
    ("gather_pool.py", "_moments"): ("moments", "batch"),
    ("gather_pool.py", "span_index"): ("index tensors", "batch"),
    ("gather_pool.py", "*"): ("pooling", "batch"),
    ("batch_pool.py", "index"): ("index tensors", "batch"),
    ("batch_pool.py", "_spans_on"): ("index tensors", "batch"),
    ("batch_pool.py", "*"): ("pooling", "batch"),
    ("extraction.py", "on_capture"): ("hooks", "batch"),
    ("extraction.py", "_on_other_device"): ("hooks", "batch"),
    ("extraction.py", "_pooler"): ("index tensors", "batch"),
    ("extraction.py", "_batch_index"): ("index tensors", "batch"),
    ("extraction.py", "run_batch"): ("batch inputs", "batch"),
    ("extraction.py", "run_packed"): ("batch inputs", "batch"),
    ("packed.py", "*"): ("forward", "batch"),  # the packed layout's gathers and index tensors: its forward's own
    ("narrow.py", "*"): ("forward", "batch"),  # the narrowed deepest layer's gathers and scatters: ditto
    ("cpu_linear.py", "*"): ("forward", "batch"),  # linear layers through oneDNN: the forward's own matmuls
    ("extraction.py", "read_rows"): ("index tensors", "batch"),
    ("batching.py", "*"): ("batch inputs", "batch"),
    ("sink.py", "put"): ("copies to host", "batch"),
    ("sink.py", "_stage"): ("copies to host", "batch"),
    ("sink.py", "_close"): ("copies to host", "batch"),
    ("sink.py", "put_tokens"): ("non-finite checks", "batch"),
    ("sink.py", "start_batch"): ("index tensors", "batch"),
    ("sink.py", "*"): ("shard finish (order, moments merge, copies to host)", "shard"),
    ("stats.py", "from_slots"): ("moments merge (stats.py)", "shard"),
    ("stats.py", "*"): INHERIT,
    ("extraction.py", "_shard_files"): ("shard files (non-finite summary, stats tensors)", "shard"),
}
UNATTRIBUTED = ("engine other (per run)", "run")
"""Engine code that no ``SOURCES`` row names (per run: a stale table shows here, not in the per-batch count)."""
OUTSIDE = "outside engine code"
ENGINE_DIRS = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(kernels.__file__))
"""Where engine code lives (``undertow.activations``, ``undertow.kernels``): a frame elsewhere (the model's
library, a test's wrapper under ``tests/activations/``) is not engine code, and an op under it takes the
engine frame above it."""
COMPREHENSIONS = ("<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>")  # attributed to the enclosing function

#: functions that build host tensors (index tensors from Python lists, data already staged to pinned memory):
#: on CUDA only their device moves (a childless ``to``) launch anything
HOST_SITES = {"extraction.py:_pooler", "extraction.py:_batch_index", "extraction.py:read_rows", "extraction.py:_shard_files",
              "sink.py:start_batch", "sink.py:_tokens", "sink.py:_unstack", "sink.py:_values", "sink.py:_nonfinite",
              "sink.py:finish", "stats.py:to_tensors", "batching.py:pad_right", "batching.py:run_bare"}

_THIS_FILE = __name__.rsplit(".", 1)[-1] + ".py"


class Counts(TypedDict):
    """One profile's counts by source (``syncs`` and ``by_op`` by (source, ``"what @ file:function"``))."""

    launches: Counter[str]
    aten_ops: Counter[str]
    syncs: Counter[tuple[str, str]]
    scopes: dict[str, str]
    by_op: Counter[tuple[str, str]]


BareBatch = tuple[list[list[int]], Tensor | None]
"""A plain batch's token ids, and the tokens its deepest layer runs at (``extraction.read_rows``; None: all)."""


def bare_batches(handle: ModelHandle, data: list[dict], config: ExtractConfig, packed: bool = False,
                 narrow: bool = False) -> list[BareBatch]:
    """The engine's plain batches: per shard, ``batch_shapes`` over the shard's rendered rows, with the tokens
    read by ``config.positions`` when the deepest layer is ``narrow`` (laid out ``packed`` or padded)."""
    rendered = render_rows(handle.tokenizer, data, config.template)
    positions = [p for p in parse_positions(config.positions) if not p.per_token]
    out = []
    for lo in range(0, len(rendered), config.shard_size):
        shard = rendered[lo:lo + config.shard_size]
        for batch, _, _ in batch_shapes([r.n_tokens for r in shard], config.batch_size, config.token_budget, False):
            rows = [shard[i] for i in batch]
            read = read_rows([r.n_tokens for r in rows], [row_spans(positions, r, "a row") for r in rows],
                             packed).to(handle.device) if narrow else None
            out.append(([r.ids for r in rows], read))
    return out


def run_bare(handle: ModelHandle, batches: list[BareBatch], deepest: HookPoint, packed: bool = False) -> None:
    """The body forward over ``batches`` (right-padded and unmasked, as ``extraction.run_batch`` runs them, or
    ``packed`` end to end as ``extraction.run_packed`` does), stopped after ``deepest`` (narrowed to each batch's
    read tokens where it has them), no hook work."""
    for seqs, read in batches:
        if packed:
            run_packed(handle, [deepest], seqs, lambda *_: None, read)
            continue
        ids_BT, _ = pad_right(seqs, 0)
        capture_hf(handle, ids_BT.to(handle.device), None, [deepest], on_capture=lambda *_: None, read_rows=read)


def run_engine(handle: ModelHandle, data: list[dict], config: ExtractConfig) -> None:
    """``extract()`` into a temporary store (``config.out_dir`` replaced)."""
    with tempfile.TemporaryDirectory() as tmp:
        extract(handle, data, config.replace(out_dir=f"{tmp}/store"))


@functools.cache
def _engine_file(path: str) -> bool:
    """Whether a profiler frame's file is engine code. The profiler writes a file under a ``sys.path`` entry
    relative to that entry (``kernels/gather_pool.py`` with the repository root on ``sys.path``), else absolute."""
    roots = tuple(os.path.join(os.path.realpath(d), "") for d in ENGINE_DIRS)
    candidates = [path] if os.path.isabs(path) else [os.path.join(entry or os.getcwd(), path) for entry in sys.path]
    return any(os.path.realpath(c).startswith(roots) and os.path.isfile(c) for c in candidates)


def _frame(name: str) -> tuple[str, str] | None:
    """(file name, function) of a profiler Python event of engine code (``run_bare`` as batching's), else None."""
    if ".py(" not in name:
        return None
    path, _, func = name.partition("): ")
    path = path.rsplit("(", 1)[0]
    if not _engine_file(path):
        return None
    file = path.rsplit("/", 1)[-1]
    if file == _THIS_FILE:  # the counting itself is no engine code; its bare forward stands for batching's
        return ("batching.py", "run_bare") if func == "run_bare" else None
    return file, func


def _python(name: str) -> bool:
    return ".py(" in name or name.startswith("<built-in")


def classify(evt: Any) -> tuple[str, str, str, bool]:
    """(source, scope, site, host) of an aten op: the innermost engine frame above it that names a source
    (``stats.py`` helpers take their caller's; library frames between the op and ``capture_hf`` make it the
    forward's own); ``host``: a frame on the way is in ``HOST_SITES``, or the code runs once per run."""
    library, host, site = False, False, None
    parent = evt.cpu_parent
    while parent is not None:
        frame = _frame(parent.name)
        if frame is not None and frame[1] not in COMPREHENSIONS:
            file, func = frame
            here = f"{file}:{func}"
            site = site or here
            host = host or here in HOST_SITES
            if library and func == "capture_hf":
                return "forward", "batch", site, host
            source = SOURCES.get((file, func), SOURCES.get((file, "*"), UNATTRIBUTED))
            if source is not INHERIT:
                return (*source, site, host or source[1] == "run")
        if _python(parent.name) and not parent.name.startswith("<built-in"):
            library = True
        parent = parent.cpu_parent
    return OUTSIDE, "run", "?", True


def launches(evt: Any, host: bool = False) -> int:
    """CUDA launches of one aten op: a compute op is one kernel (its CPU-side helpers, such as the ``fill_``
    inside a CPU ``sum``, are not); views, allocations and decomposing ops (``DESCEND``) launch what their
    children launch. A childless ``to`` (a device move: a no-op on the CPU) is one copy."""
    children = [c for c in evt.cpu_children if c.name.startswith("aten::")]
    if evt.name == "aten::to" and not children:  # a copy when Python asked for it (.to/.cpu), else a no-op
        call = evt.cpu_parent.name.split(" of ")[0] if evt.cpu_parent is not None else ""
        return int(call in COPY_CALLS and not (host and call == "<built-in method cpu"))
    if host or evt.name in NO_LAUNCH or evt.name in DESCEND:
        return sum(launches(c, host) for c in children)
    return 1


def count(prof: profile) -> Counts:
    """Launches, aten ops and syncs of one profile, by source (each top-level aten op attributed once)."""
    n_launches: Counter[str] = Counter()
    aten_ops: Counter[str] = Counter()
    syncs: Counter[tuple[str, str]] = Counter()
    by_op: Counter[tuple[str, str]] = Counter()
    scopes: dict[str, str] = {}
    for evt in prof.events():
        name = evt.name
        if name.startswith("aten::") and not (evt.cpu_parent is not None and evt.cpu_parent.name.startswith("aten::")):
            source, scope, site, host = classify(evt)
            scopes[source] = scope
            aten_ops[source] += 1
            k = launches(evt, host)
            n_launches[source] += k
            if k and source != "forward":
                by_op[source, f"{evt.name.removeprefix('aten::')} @ {site}"] += k
            for sync in (SYNC_OPS[n] for n in _names(evt) if n in SYNC_OPS):
                syncs[source, f"{sync} @ {site}"] += 1
        elif name.startswith("<built-in method ") and " of Tensor object" in name:
            method = name.split()[2]
            if method in SYNC_METHODS:
                source, scope, site, _ = classify(evt)
                scopes[source] = scope
                syncs[source, f"{SYNC_METHODS[method]} @ {site}"] += 1
    return {"launches": n_launches, "aten_ops": aten_ops, "syncs": syncs, "scopes": scopes, "by_op": by_op}


def _names(evt: Any) -> Iterator[str]:
    yield evt.name
    for c in evt.cpu_children:
        if c.name.startswith("aten::"):
            yield from _names(c)


def profiled(fn: Callable[[], object]) -> Counts:
    """``count`` of one call of ``fn`` under the CPU profiler (with Python stacks)."""
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        fn()
    return count(prof)


def minus(engine: Counter, bare: Counter) -> Counter:
    """Engine minus bare by source, negatives kept (the forward's own ops cancel: same batches)."""
    out = Counter(engine)
    out.subtract(bare)
    return Counter({k: v for k, v in out.items() if v})


@dataclass(frozen=True)
class Comparison:
    """The profiles of the bare forward and of ``extract()`` over the same ``batches``."""

    bare: Counts
    engine: Counts
    batches: list[list[list[int]]]
    n_shards: int

    @property
    def n_batches(self) -> int:
        return len(self.batches)

    def in_scope(self, counter: Counter, scope: str) -> Counter:
        """The rows of ``counter`` (keyed by source) whose source runs once per ``scope`` (batch, shard, run)."""
        scopes = {**self.bare["scopes"], **self.engine["scopes"]}
        return Counter({k: v for k, v in counter.items() if scopes[k] == scope})

    def extra(self, what: str = "launches", scope: str = "batch") -> Counter:
        """Totals over the run of ``launches`` (or ``aten_ops``) the engine adds, by source, in ``scope``."""
        return self.in_scope(minus(self.engine[what], self.bare[what]), scope)

    def extra_per_batch(self) -> float:
        """The engine's launches per batch beyond the bare forward, from the sources that run per batch."""
        return sum(self.extra().values()) / self.n_batches

    def unattributed(self) -> int:
        """Engine launches no ``SOURCES`` row names (0 while the tables match the code)."""
        return self.engine["launches"][UNATTRIBUTED[0]]


def compare(handle: ModelHandle, data: list[dict], config: ExtractConfig) -> Comparison:
    """Profile the bare forward (to the last layer, in the layout, with the deepest layer and the linear layers
    the engine resolves ``config.layout``, ``config.deepest_layer`` and ``config.cpu_linear`` to) and ``extract()`` on ``data``, each run once unprofiled
    first (a warm-up)."""
    from .plan import narrow_for, resolve_layout, resolve_onednn

    packed = resolve_layout(config, handle) == "packed"
    batches = bare_batches(handle, data, config, packed, narrow_for(config, handle.backend, handle.device.type))
    deepest = HookPoint(handle.n_layers - 1, "resid_post")
    onednn = resolve_onednn(config, handle)

    def bare() -> None:
        with onednn_linears(handle.hf_model, onednn):
            run_bare(handle, batches, deepest, packed)

    engine = lambda: run_engine(handle, data, config)  # noqa: E731
    bare(), engine()  # warm-up
    b, e = profiled(bare), profiled(engine)
    return Comparison(b, e, batches, -(-len(data) // config.shard_size))
