"""``--nproc N``: re-run a ``brain-tumor train`` command as N data-parallel worker processes.

The workers are spawned with ``torch.multiprocessing`` and joined in one process group
(``nccl`` on CUDA, ``gloo`` on the CPU) over 127.0.0.1 and a free port; rank ``r`` trains
on ``cuda:r`` when there are GPUs. A SIGTERM to the launcher is forwarded to every worker,
which stop together without publishing (see ``trainers.distributed.synced_stop``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_backend(device: str, nproc: int) -> str:
    """``nccl`` when training on CUDA GPUs (one per rank), else ``gloo``."""
    if device == "cpu" or not torch.cuda.is_available():
        return "gloo"
    if nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA GPU(s) available")
    return "nccl"


def _worker(
    rank: int, target: Callable[[argparse.Namespace], int], args: argparse.Namespace, world: int, port: int,
    backend: str,
) -> None:  # fmt: skip
    """One rank: join the process group, run ``target(args)``, leave the group."""
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.INFO
    logging.basicConfig(level=level, format=f"%(asctime)s rank {rank} %(levelname)s %(message)s")
    if backend == "gloo":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        code = target(args)
    finally:
        dist.destroy_process_group()
    if code not in (0, 3):
        raise SystemExit(code)


@contextlib.contextmanager
def _forward_sigterm(pids: list[int]) -> Iterator[None]:
    """Pass a SIGTERM on to the workers, which stop cleanly together."""

    def forward(signum: int, frame: Any) -> None:
        """Signal every worker that is still alive."""
        logger.warning("stop requested (signal %d); forwarding to %d workers", signum, len(pids))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, forward) if in_main else None
    try:
        yield
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def launch(target: Callable[[argparse.Namespace], int], args: argparse.Namespace, nproc: int, device: str) -> bool:
    """Run ``target(args)`` (a module-level function) as ``nproc`` ranks and wait; False if a worker failed."""
    backend = pick_backend(device, nproc)
    port = free_port()
    logger.info("launching %d workers (backend %s, 127.0.0.1:%d)", nproc, backend, port)
    ctx = mp.start_processes(_worker, args=(target, args, nproc, port, backend), nprocs=nproc, join=False,
                             start_method="spawn")  # fmt: skip
    try:
        with _forward_sigterm([p.pid for p in ctx.processes]):
            while not ctx.join():
                pass
    except ProcessException as exc:
        logger.error("a training worker failed: %s", exc)
        return False
    return True
