"""Data-parallel processes on this node (``nproc``), and clean stops on SIGTERM.

``launch(target, options)`` spawns ``options.nproc`` worker processes with
``torch.multiprocessing``, joins them in one process group (``nccl`` on CUDA, ``gloo`` on
the CPU) over 127.0.0.1 and a free port, and runs ``target(options)`` in each; rank ``r``
trains on ``cuda:r`` when there are GPUs. A SIGTERM to the launcher is forwarded to every
worker, which stop together without publishing (``distributed.synced_stop``). Across
several nodes ``torchrun`` starts the processes instead (see the README's cluster
section); then ``run_training`` joins the group itself.
"""

from __future__ import annotations

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

from .distributed import TIMEOUT, backend_for
from .options import TrainOptions

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_backend(device: str, nproc: int) -> str:
    """``nccl`` when training on CUDA GPUs (one per rank), else ``gloo``."""
    backend = backend_for(device)
    if backend == "nccl" and nproc > torch.cuda.device_count():
        raise ValueError(f"nproc {nproc}: only {torch.cuda.device_count()} CUDA GPU(s) available")
    return backend


def _worker(
    rank: int, target: Callable[[TrainOptions, Callable[[], bool]], Any], opts: TrainOptions, port: int, backend: str
) -> None:
    """One rank: join the process group, run ``target(opts)``, leave the group."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(levelname)s %(message)s")
    if backend == "gloo":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts.nproc))
    else:
        torch.cuda.set_device(rank)  # before the first collective, which runs on the current device
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(opts.nproc))  # fmt: skip
    dist.init_process_group(backend, rank=rank, world_size=opts.nproc, timeout=TIMEOUT)
    try:
        with stop_on_sigterm() as should_stop:
            target(opts, should_stop)
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[Callable[[], bool]]:
    """A ``should_stop`` that turns SIGTERM into a clean stop (nothing is published)."""
    state = {"stop": False}

    def handle(signum: int, frame: Any) -> None:
        """Remember the request; the run checks it between steps."""
        logger.warning("stop requested (signal %d); finishing without publishing", signum)
        state["stop"] = True

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, handle) if in_main else None
    try:
        yield lambda: state["stop"]
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


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


def launch(target: Callable[[TrainOptions, Callable[[], bool]], Any], opts: TrainOptions) -> bool:
    """Run ``target(opts, should_stop)`` (module-level) as ``opts.nproc`` ranks and wait; False if one failed."""
    backend = pick_backend(opts.device, opts.nproc)
    port = free_port()
    logger.info("launching %d workers (backend %s, 127.0.0.1:%d)", opts.nproc, backend, port)
    ctx = mp.start_processes(_worker, args=(target, opts, port, backend), nprocs=opts.nproc, join=False,
                             start_method="spawn")  # fmt: skip
    try:
        with _forward_sigterm([p.pid for p in ctx.processes]):
            while not ctx.join():
                pass
    except ProcessException as exc:
        logger.error("a training worker failed: %s", exc)
        return False
    return True
