"""One optimiser step on any model, on any device: precision, memory format, DDP, batch size.

bf16 autocast on CPUs with native bf16 (plus channels-last for 3D networks), fp16 autocast
with a ``GradScaler`` on CUDA, plain fp32 otherwise. Under ``torch.distributed`` the
network is wrapped in ``DistributedDataParallel`` on this rank's device. On CUDA an
``auto`` batch size is the largest power of two whose trial step fits in 85 % of memory.

A step whose gradients come back non-finite from a bf16 pass on a finite loss is run again
in fp32; a step whose loss or gradients are still not finite changes no weight: it is
skipped, counted and logged, as the ``GradScaler`` does on CUDA. bf16 on the CPU needs
this: PyTorch 2.13's bf16 backward at the U-Net's bottleneck (2^3 voxels with 32^3 patches)
now and then returns a NaN weight gradient for a finite loss and finite inputs, sometimes
for several steps in a row, in about every second fine-tuning run of the server test, never
in fp32; before, one such step poisoned every weight after it (``SegModel.cpu_bf16_fits``
now trains such patches in fp32; this stays as the safety net). ``MAX_SKIPPED_IN_A_ROW``
skipped steps in a row mean the run diverged, and it stops with an error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..runtime import autocast, pick_device, to_memory_format, use_reduced_precision
from . import distributed as ddp

logger = logging.getLogger(__name__)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: non-finite steps in a row after which a run is taken to have diverged
MAX_SKIPPED_IN_A_ROW = 5


@dataclass
class StepContext:
    """What every step needs: device, precision, memory format and the optimiser state."""

    device: torch.device
    reduced: bool
    channels_last: bool
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None
    skipped: int = 0  # steps skipped for a non-finite loss or gradient, this run
    skipped_in_a_row: int = 0
    fp32_retries: int = 0  # bf16 steps run again in fp32 for a non-finite gradient, this run

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


def _forward_backward(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: Loss,
                      ctx: StepContext, reduced: bool) -> float:  # fmt: skip
    """Forward (autocast when ``reduced``), loss and backward (scaled with a scaler); the loss value."""
    ctx.optimizer.zero_grad(set_to_none=True)
    with autocast(ctx.device, reduced):
        logits = net(x)
    loss = loss_fn(logits.float(), target)
    # backward even on a non-finite loss: under DDP every rank must join the gradient all-reduce
    (ctx.scaler.scale(loss) if ctx.scaler is not None else loss).backward()
    return float(loss.detach())


def train_step(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: Loss, ctx: StepContext) -> float:
    """One optimiser step on a batch already on the device; returns the loss value (NaN possible).

    Non-finite steps are retried in fp32 or skipped (module docstring).
    """
    value = _forward_backward(net, x, target, loss_fn, ctx, ctx.reduced)
    if ctx.scaler is not None:
        ctx.scaler.step(ctx.optimizer)  # skips the update itself when a gradient is not finite
        ctx.scaler.update()
        finite = math.isfinite(value)
    else:
        finite = math.isfinite(value) and gradients_finite(net)
        if not finite and ctx.reduced and math.isfinite(value):
            ctx.fp32_retries += 1
            logger.info("non-finite bf16 gradient on a finite loss: step run again in fp32 (%d this run)",
                        ctx.fp32_retries)  # fmt: skip
            value = _forward_backward(net, x, target, loss_fn, ctx, False)
            finite = math.isfinite(value) and gradients_finite(net)
        if finite:
            ctx.optimizer.step()
    if finite:
        ctx.skipped_in_a_row = 0
        return value
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.skipped += 1
    ctx.skipped_in_a_row += 1
    what = "gradient" if math.isfinite(value) else f"loss ({value})"
    logger.warning("step skipped: non-finite %s (%d in a row, %d this run)", what, ctx.skipped_in_a_row, ctx.skipped)
    if ctx.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
        raise FloatingPointError(
            f"training loss or gradients not finite for {ctx.skipped_in_a_row} steps in a row (last loss {value}); "
            "lower the learning rate, or train in fp32 (--no-amp)"
        )
    return value


def gradients_finite(net: torch.nn.Module) -> bool:
    """Whether every gradient of ``net`` is finite (a parameter without one counts as finite)."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


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
