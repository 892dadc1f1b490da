"""One training epoch and one validation pass of the region segmentation network.

Kept apart from the run orchestration (``segmentation.py``) so each piece stays short:
the loss (soft Dice + BCE on the WT/TC/ET channels), patch sampling with augmentation,
mixed precision (bf16 autocast on capable CPUs, fp16 + GradScaler on CUDA), and
whole-case validation that thresholds exactly as inference does (``regions_to_label``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..labels import REGION_CHANNELS, label_to_regions, regions_to_label
from ..runtime import autocast
from ..transforms.augment import AugmentSettings, augment_batch
from .metrics import dice, mean_scores
from .seg_data import SegCase

logger = logging.getLogger(__name__)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice (per channel, over the batch) plus BCE, on region logits (B, 3, ...)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probs = torch.sigmoid(logits)
    dims = (0, *range(2, logits.ndim))
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    soft_dice = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    return soft_dice.mean() + bce


@dataclass
class StepContext:
    """What every step needs: device, precision, memory format and the optimiser state."""

    device: torch.device
    reduced: bool
    channels_last: bool
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Move a 5D batch to the device in the network's memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x


def epoch_order(n_cases: int, n_samples: int, gen: torch.Generator) -> list[int]:
    """Case indices for one epoch: shuffled passes over all cases, ``n_samples`` long."""
    order: list[int] = []
    while len(order) < n_samples:
        order.extend(torch.randperm(n_cases, generator=gen).tolist())
    return order[:n_samples]


def train_step(net: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, ctx: StepContext) -> float:
    """One optimiser step on a batch; returns the loss value."""
    x = ctx.to_device(image)
    y = label_to_regions(label.to(ctx.device)).transpose(0, 1).contiguous()  # (B, 3, ...)
    ctx.optimizer.zero_grad(set_to_none=True)
    with autocast(ctx.device, ctx.reduced):
        logits = net(x)
    loss = dice_bce_loss(logits, y)
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


def train_epoch(
    net: torch.nn.Module,
    cases: list[SegCase],
    ctx: StepContext,
    gen: torch.Generator,
    aug: AugmentSettings,
    batch_size: int,
    n_samples: int,
    should_stop: Callable[[], bool] | None = None,
    shard: tuple[int, int] = (0, 1),
    order_gen: torch.Generator | None = None,
) -> float | None:
    """Train on ``n_samples`` augmented patches; mean loss, or None if asked to stop.

    With ``shard=(rank, world)`` this rank takes ``order[rank::world]`` of an order drawn
    from ``order_gen`` (seeded alike on all ranks), padded so every rank runs as many steps.
    """
    net.train()
    rank, world = shard
    total = -(-n_samples // world) * world
    order = epoch_order(len(cases), total, gen if order_gen is None else order_gen)[rank::world]
    losses = []
    for i in range(0, len(order), batch_size):
        if should_stop is not None and should_stop():
            return None
        batch = [(cases[k].image, cases[k].label) for k in order[i : i + batch_size]]
        image, label = augment_batch(batch, gen, aug)
        losses.append(train_step(net, image, label, ctx))
    return float(np.mean(losses)) if losses else float("nan")


@torch.inference_mode()
def predict_label(net: torch.nn.Module, image: torch.Tensor, ctx: StepContext) -> np.ndarray:
    """Internal label (x, y, z) for one preprocessed case, thresholded as at inference."""
    with autocast(ctx.device, ctx.reduced):
        logits = net(ctx.to_device(image[None]))
    return regions_to_label(torch.sigmoid(logits.float())[0].cpu().numpy())


def validate(net: torch.nn.Module, cases: list[SegCase], ctx: StepContext) -> dict[str, float]:
    """Mean Dice per region channel over whole validation cases, plus their mean."""
    net.eval()
    per_case = []
    for case in cases:
        pred = predict_label(net, case.image, ctx)
        gt_regions = label_to_regions(case.label.numpy())
        pred_regions = label_to_regions(pred)
        per_case.append({r: {"dice": dice(pred_regions[i], gt_regions[i])} for i, r in enumerate(REGION_CHANNELS)})
    means = mean_scores(per_case)
    out = {r: means[r]["dice"] if means else 0.0 for r in REGION_CHANNELS}
    out["mean"] = float(np.mean([out[r] for r in REGION_CHANNELS]))
    return out
