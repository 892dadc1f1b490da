"""One optimiser step on any model, on any device: precision, memory format, DDP, batch size.

bf16 autocast on CPUs with native bf16 (plus channels-last for 3D networks), fp16 autocast
with a ``GradScaler`` on CUDA, plain fp32 otherwise. Under ``torch.distributed`` the
network is wrapped in ``DistributedDataParallel`` on this rank's device. On CUDA an
``auto`` batch size is the largest power of two whose trial step fits in 85 % of memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..runtime import autocast, pick_device, to_memory_format, use_reduced_precision
from . import distributed as ddp

logger = logging.getLogger(__name__)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepContext:
    """What every step needs: device, precision, memory format and the optimiser state."""

    device: torch.device
    reduced: bool
    channels_last: bool
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the network's memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 5:
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x


def run_device(choice: str) -> torch.device:
    """This process's device: ``choice``, and on CUDA under torch.distributed its local GPU."""
    device = pick_device(choice)
    if device.type == "cuda" and ddp.is_distributed():
        device = torch.device("cuda", ddp.local_rank())
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch sizes: let cuDNN pick its fastest kernels
    return device


def make_context(
    net: torch.nn.Module, device: torch.device, amp: bool, bf16: str, lr: float, weight_decay: float,
    channels_last_3d: bool,
) -> tuple[torch.nn.Module, StepContext]:  # fmt: skip
    """Place (and DDP-wrap) ``net``; AdamW, precision and memory format for its steps."""
    reduced = amp and use_reduced_precision(device, bf16)
    channels_last = channels_last_3d and reduced and device.type == "cpu"
    net = ddp.wrap(to_memory_format(net.to(device), channels_last), device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda") if reduced and device.type == "cuda" else None
    logger.info(
        "training on %s (reduced precision: %s, channels-last: %s, rank %d of %d)",
        device, reduced, channels_last, ddp.rank(), ddp.world_size(),
    )  # fmt: skip
    return net, StepContext(device, reduced, channels_last, opt, scaler)


def train_step(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: Loss, ctx: StepContext) -> float:
    """One optimiser step on a batch already on the device; returns the loss value."""
    ctx.optimizer.zero_grad(set_to_none=True)
    with autocast(ctx.device, ctx.reduced):
        logits = net(x)
    loss = loss_fn(logits.float(), target)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss is {float(loss)}; lower the learning rate")
    if ctx.scaler is not None:
        ctx.scaler.scale(loss).backward()
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        loss.backward()
        ctx.optimizer.step()
    return float(loss.detach())


def auto_batch_size(
    requested: int, cpu_default: int, trial: Callable[[int], None], device: torch.device, cap: int = 64
) -> int:
    """``requested`` if set; on CPU ``cpu_default``; on CUDA the largest power of two that fits.

    ``trial(b)`` runs one forward/backward pass on a batch of ``b``; a size fits when it
    raises no out-of-memory error and peaks below 85 % of the device's memory.
    """
    if requested > 0:
        return requested
    if device.type != "cuda":
        return cpu_default
    total = torch.cuda.get_device_properties(device).total_memory
    best, size = 1, 1
    while size <= cap:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            trial(size)
        except torch.cuda.OutOfMemoryError:
            break
        if torch.cuda.max_memory_allocated(device) > 0.85 * total:
            break
        best, size = size, size * 2
    torch.cuda.empty_cache()
    logger.info("auto batch size on %s: %d", torch.cuda.get_device_name(device), best)
    return best
