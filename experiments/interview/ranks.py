"""This process among the ranks of a sharded interview run: its rank, the world, and the error exchange.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the ``undertow interview`` command joins the process group
(``activations.cluster.distributed.init_from_env``) and hands ``Ranks.of_process_group()`` to the pipeline
(``sharded.py``). Every step of the sharded pipeline ends in ``Ranks.agree``: the ranks exchange their errors
(``all_gather_object``, a barrier as well) and all raise the first one, so a rank that fails never leaves the
others waiting on it. ``Ranks(rank, world, sync=False)`` is one process playing a rank without a process group
(the tests play the ranks in turn).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from undertow.core.errors import UndertowError

from .errors import InterviewError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process sits among the ranks of one interview run."""

    rank: int
    """Global rank (torchrun ``RANK``); rank 0 checks the directory, merges the parts and analyses."""
    world: int
    """Ranks in all (``WORLD_SIZE``)."""
    sync: bool = True
    """Exchange errors through ``torch.distributed`` (False: no process group, nothing is exchanged)."""

    @property
    def lead(self) -> bool:
        """Rank 0."""
        return self.rank == 0

    @classmethod
    def of_process_group(cls) -> Ranks:
        import torch.distributed as dist

        return cls(dist.get_rank(), dist.get_world_size())

    def agree(self, error: str | None) -> None:
        """Every rank raises (``InterviewError``) the first error any rank reports; otherwise a barrier."""
        if self.sync:
            import torch.distributed as dist

            errors: list = [None] * self.world
            dist.all_gather_object(errors, error)
            error = next((e for e in errors if e), None)
        if error:
            raise InterviewError(error)

    def step(self, fn: Callable[[], T], lead_only: bool = False) -> T | None:
        """``fn()`` on every rank (``lead_only``: on rank 0), then ``agree`` on its error: an ``UndertowError``'s
        one line as it is, anything else as ``rank <r>: <type>: <message>`` (its traceback printed here)."""
        error, result = None, None
        if self.lead or not lead_only:
            try:
                result = fn()
            except UndertowError as e:
                error = str(e)
            except Exception as e:  # noqa: BLE001 - reported to every rank, then raised there
                traceback.print_exc()
                error = f"rank {self.rank}: {type(e).__name__}: {e}"
        self.agree(error)
        return result

    def share(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` on rank 0 (its error raised on every rank, as ``step``), its result sent to every rank
        (``broadcast_object_list``; without a process group the other ranks get None)."""
        result = self.step(fn, lead_only=True)
        if self.sync:
            import torch.distributed as dist

            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
        return result
