"""Activation batches for sae-lens' ``SAETrainer`` (its ``DataProvider``: an iterator of ``[batch, d_in]``).

Two sources, both shuffled token-wise by sae-lens' own ``mixing_buffer``:

- :func:`store_provider`: an undertow ``ActivationStore`` key at the ``all_tokens`` position. Contiguous
  chunks of ``chunk_tokens`` vectors are read as memory-mapped slices in a seeded random order (a new
  order every epoch). Each chunk opens the key afresh (``store[key]``) and drops it after the read, so
  the shard mappings never accumulate (a ``LazyActs`` keeps its ``safe_open`` mmaps for its lifetime,
  and touched file pages count as resident): memory is bounded by the mixing buffer, not the store.
  Measured (``scripts/bench_sae.py rss``, gemma-3-270m resid_post.9, bf16, TopK 2048, 20,480 tokens
  trained): peak RSS 1,266 MB from a 15,665-token store vs 1,218 MB from a 119,858-token one (0.96x).
- :func:`model_provider`: on the fly, through the extraction engine's capture (``capture_hf`` stops
  after the hooked layer, no lm_head), for corpora too large to keep. One forward pass per chunk.

Both validate before yielding anything: the store's model fingerprint, its d_model against the SAE's
``d_in``, the position (``all_tokens``), and non-finite values (listed in the manifest, and checked per
chunk), each failing with one ``SAEError`` line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from sae_lens.training.mixing_buffer import mixing_buffer
from torch import Tensor

from undertow.activations.store.reader import ActivationStore

from .errors import SAEError

TOKEN_POSITION = "all_tokens"


@dataclass
class StoreTokens:
    """One ``all_tokens`` key of a store, split by rows into training and held-out token ranges."""

    store: ActivationStore
    """The store (opened by path; read through its public API only)."""
    key: str
    """Full ``hook@all_tokens`` key."""
    train_tokens: tuple[int, int]
    """Token range ``[lo, hi)`` used for training."""
    heldout_tokens: tuple[int, int]
    """Token range of the last ``heldout_rows`` rows, kept for evaluation."""
    d_model: int
    """Width of the stored vectors."""

    def read(self, lo: int, hi: int) -> Tensor:
        """Tokens ``[lo, hi)`` as float32 ``[n, D]``; a fresh mapping per call, released on return."""
        acts = self.store[self.key][lo:hi].float()
        if not torch.isfinite(acts).all():
            bad = int((~torch.isfinite(acts)).any(-1).nonzero()[0, 0]) + lo
            raise SAEError(f"{self.store.path}: non-finite activations at token {bad} of {self.key}; "
                           "re-extract in float32 or drop those rows before training an SAE")
        return acts

    def heldout(self, max_tokens: int | None = None) -> Tensor:
        lo, hi = self.heldout_tokens
        return self.read(lo, hi if max_tokens is None else min(hi, lo + max_tokens))


def open_store_tokens(store: ActivationStore | str, hook: str, *, d_in: int | None = None,
                      expected_fingerprint: str | None = None, heldout_rows: int = 0) -> StoreTokens:
    """Validate ``store`` for SAE training on ``hook`` and split it into train / held-out token ranges."""
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    key = f"{hook}@{TOKEN_POSITION}" if "@" not in hook else hook
    if key not in store.manifest["keys"]:
        have = ", ".join(store.keys[:6])
        raise SAEError(f"{store.path} has no {key!r} (keys: {have}); extract with positions: [all_tokens] "
                       f"and hooks: [{hook.split('@')[0]}]")
    if expected_fingerprint is not None and store.model_fingerprint != expected_fingerprint:
        raise SAEError(f"{store.path} was extracted from model {store.model_fingerprint}, not {expected_fingerprint}; "
                       "train on a store of this model (or start a new SAE for that model)")
    d_model = int(store.manifest["keys"][key]["shape"][-1])
    if d_in is not None and d_model != d_in:
        raise SAEError(f"{store.path} stores d_model={d_model} at {key} but the SAE has d_in={d_in}; "
                       "use a store of the SAE's model and hook, or a new SAE")
    nonfinite = store.nonfinite.get(key)
    if nonfinite:
        raise SAEError(f"{store.path}: {nonfinite['values']} non-finite values at {key} (rows "
                       f"{nonfinite['rows'][:5]}); re-extract in float32 or drop those rows before training")
    off = store.token_offsets(key)
    n_rows = len(off) - 1
    if heldout_rows >= n_rows:
        raise SAEError(f"heldout_rows={heldout_rows} leaves no training rows in a {n_rows}-row store; lower it")
    cut = int(off[n_rows - heldout_rows])
    return StoreTokens(store, key, (0, cut), (cut, int(off[-1])), d_model)


def store_chunks(tokens: StoreTokens, chunk_tokens: int, seed: int, epochs: int | None = None,
                 start_epoch: int = 0) -> Iterator[Tensor]:
    """Contiguous ``[<=chunk_tokens, D]`` training chunks in a seeded random order, epoch after epoch
    (forever when ``epochs`` is None)."""
    lo, hi = tokens.train_tokens
    starts = torch.arange(lo, hi, chunk_tokens)
    epoch = start_epoch
    while epochs is None or epoch < start_epoch + epochs:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        for s in starts[torch.randperm(len(starts), generator=g)].tolist():
            yield tokens.read(s, min(s + chunk_tokens, hi))
        epoch += 1


def store_provider(tokens: StoreTokens, batch_size: int, *, chunk_tokens: int = 2048, buffer_tokens: int = 32768,
                   mix_fraction: float = 0.5, seed: int = 0, start_epoch: int = 0) -> Iterator[Tensor]:
    """sae-lens ``DataProvider`` over a store: chunks -> ``mixing_buffer`` -> ``[batch_size, D]`` float32."""
    if buffer_tokens < batch_size:
        raise SAEError(f"buffer_tokens={buffer_tokens} is below batch_size={batch_size}; raise buffer_tokens")
    torch.manual_seed(seed + start_epoch)  # mixing_buffer draws from the global generator
    return mixing_buffer(buffer_tokens, batch_size, store_chunks(tokens, chunk_tokens, seed, None, start_epoch),
                         mix_fraction)


def model_chunks(handle, rows: Sequence[dict], hook: str, *, batch_rows: int = 16, template: str = "auto",
                 seed: int = 0, epochs: int | None = None) -> Iterator[Tensor]:
    """``[n_real_tokens, D]`` float32 per forward batch of ``rows``, on the fly (no store), rows in a seeded
    order per epoch. Uses the engine's rendering, right padding and capture (stops after the hooked layer)."""
    from undertow.activations.engine.batching import pad_right
    from undertow.activations.engine.capture import capture, capture_hf
    from undertow.activations.engine.render import render_rows

    points = handle.hooks([hook])
    if len(points) != 1:
        raise SAEError(f"hook {hook!r} names {len(points)} points; an SAE reads exactly one hook")
    rows = list(rows)
    if not rows:
        raise SAEError("model_provider got no rows; pass a non-empty dataset")
    epoch = 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
        for b in range(0, len(order), batch_rows):
            batch = [rows[i] for i in order[b:b + batch_rows]]
            rendered = render_rows(handle.tokenizer, batch, template)
            ids_BT, mask_BT = pad_right([r.ids for r in rendered], 0)  # right padding: pads never reach real tokens
            ids_BT, mask_BT = ids_BT.to(handle.device), mask_BT.to(handle.device)
            run = capture_hf if handle.backend == "hf" else capture
            acts_BTD = run(handle, ids_BT, mask_BT, points)[points[0].name]
            yield acts_BTD[mask_BT.bool()].float().cpu()
        epoch += 1


def model_provider(handle, rows: Sequence[dict], hook: str, batch_size: int, *, buffer_tokens: int = 32768,
                   mix_fraction: float = 0.5, batch_rows: int = 16, template: str = "auto",
                   seed: int = 0) -> Iterator[Tensor]:
    """sae-lens ``DataProvider`` computed on the fly: :func:`model_chunks` -> ``mixing_buffer``."""
    if buffer_tokens < batch_size:
        raise SAEError(f"buffer_tokens={buffer_tokens} is below batch_size={batch_size}; raise buffer_tokens")
    torch.manual_seed(seed)
    return mixing_buffer(buffer_tokens, batch_size,
                         model_chunks(handle, rows, hook, batch_rows=batch_rows, template=template, seed=seed),
                         mix_fraction)
