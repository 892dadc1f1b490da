"""Data-parallel helpers: joining a process group, rank queries, broadcasts, a collective stop.

Everything degrades to the single-process behaviour when ``torch.distributed`` is not
initialised, so the engine calls these unconditionally. ``init_from_env`` joins the group
``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``), which is how training spans several nodes.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: Collectives may wait this long, e.g. for other ranks to finish preprocessing a cold cache.
TIMEOUT = datetime.timedelta(hours=4)

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


def local_rank() -> int:
    """This process's index among the ranks of its node (``LOCAL_RANK``; else its rank)."""
    return int(os.environ.get("LOCAL_RANK", rank()))


def local_world_size() -> int:
    """Number of ranks on this node (``LOCAL_WORLD_SIZE``; else the world size)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def launched_by_torchrun() -> bool:
    """Whether ``torchrun`` started this process as one of several ranks."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: str) -> str:
    """``nccl`` when training on CUDA GPUs, else ``gloo``."""
    return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"


def init_from_env(device: str) -> bool:
    """Join torchrun's process group if this process is one of its ranks; True when joined now."""
    if dist.is_initialized() or not launched_by_torchrun():
        return False
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=TIMEOUT)
    logger.info("joined torchrun group: rank %d of %d (%s, local rank %d)", rank(), world_size(), backend,
                local_rank())  # fmt: skip
    return True


def barrier() -> None:
    """Wait until every rank gets here (no-op alone)."""
    if is_distributed():
        dist.barrier()


def min_over_ranks(value: int) -> int:
    """The smallest ``value`` of all ranks (a collective)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


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
