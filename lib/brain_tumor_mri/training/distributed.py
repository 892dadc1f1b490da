"""Data-parallel helpers: rank queries, rank-0 broadcasts and a collective stop flag.

Everything degrades to the single-process behaviour when ``torch.distributed`` is not
initialised, so the trainers call these unconditionally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process validates, logs and publishes."""
    return rank() == 0


def from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (a collective: all ranks must call it)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def synced_stop(should_stop: Callable[[], bool] | None) -> Callable[[], bool] | None:
    """A ``should_stop`` that is true on all ranks when it is true on any (collective per call)."""
    if not is_distributed():
        return should_stop

    def stop() -> bool:
        """All-reduce the local request so every rank leaves at the same step."""
        flag = torch.tensor([1 if should_stop is not None and should_stop() else 0], dtype=torch.int32)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    return stop


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside a ``DistributedDataParallel`` wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap in ``DistributedDataParallel`` when distributed; else return ``net`` unchanged."""
    if not is_distributed():
        return net
    ids: Any = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
