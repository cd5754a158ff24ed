"""undertow.activations.store: the on-disk activation store.

Sharded safetensors per hook written atomically (``writer``), the ``manifest.json`` that lists every
file with its checksum (``manifest``, ``manifest_schema``), who may overwrite what (``ownership``),
disk-space and target checks before a run (``preflight``), running moments (``stats``), verified
memory-mapped reads (``reader``, ``lazy``, ``verify``; one file against its listing: ``filecheck``).
Knows nothing of models or hooks' modules.
"""

from .lazy import LazyActs
from .manifest import FORMAT, MANIFEST, completed_shards, finalize
from .preflight import check_free_space, check_store_target, check_writable, store_bytes_estimate
from .reader import ActivationStore, StoreView
from .stats import Moments
from .verify import verify_store
from .writer import ShardWriter, prepare_store

__all__ = [
    "FORMAT", "MANIFEST", "ActivationStore", "LazyActs", "Moments", "ShardWriter", "StoreView",
    "check_free_space", "check_store_target", "check_writable", "completed_shards", "finalize",
    "prepare_store", "store_bytes_estimate", "verify_store",
]
