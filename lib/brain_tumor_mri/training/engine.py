"""The one training loop every model runs: epochs, timing, validation, best epoch, stopping.

A model contributes its parts (``ModelParts``: the streaming DataLoader, how a batch's
target reaches the device, the loss, the validation pass); the engine owns the rest:
the learning-rate schedule, one optimiser step per batch (``step.train_step``), where the
time goes (waiting for data vs computing steps vs validating), validation by rank 0 with
its scores broadcast, the best epoch's weights, early stopping, the wall-time budget and
stop requests (collective under torch.distributed, so every rank leaves at the same step).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import distributed as ddp
from .runlog import RunLog
from .sampler import PlanSampler
from .step import Loss, StepContext, train_step
from .validation import ValScores

logger = logging.getLogger(__name__)


@dataclass
class ModelParts:
    """What differs between models; everything else is the engine's."""

    tag: str  # log / run-dir name, e.g. "segmentation", "classification 2d"
    loader: Any  # torch DataLoader over the model's dataset, driven by ``sampler``
    sampler: PlanSampler
    target: Callable[[torch.Tensor, StepContext], torch.Tensor]  # batch target -> device target
    loss: Loss
    validate: Callable[[torch.nn.Module, StepContext], ValScores]
    val_keys: tuple[str, ...]  # summary keys logged per epoch
    metric_name: str
    min_batch: int = 1  # smaller batches are skipped (batch norm needs 2)


@dataclass(frozen=True)
class LoopSettings:
    """Schedule and stopping of the loop."""

    epochs: int
    patience: int
    max_seconds: float = 0.0
    schedule: str = "cosine"  # cosine | plateau | warmup_cosine
    final_only: bool = False  # fixed budget: validate only after the last epoch, keep that epoch (no selection)


@dataclass
class Best:
    """Best epoch so far: its scores and a CPU copy of its weights."""

    epoch: int = 0
    scores: ValScores | None = None
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, scores: ValScores, net: torch.nn.Module) -> None:
        """Keep this epoch if its selection key beats the best so far."""
        if self.scores is None or scores.key > self.scores.key:
            self.epoch, self.scores = epoch, scores
            self.state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


@dataclass
class LoopResult:
    """How the loop ended, its best epoch, per-epoch rows and when the first step finished."""

    status: str  # finished | early_stopped | time_limit | stopped
    best: Best
    history: list[dict[str, Any]] = field(default_factory=list)
    first_step_at: float | None = None  # time.monotonic() when the first step began (its batch ready)


def make_schedule(kind: str, opt: torch.optim.Optimizer, epochs: int, patience: int) -> Any:
    """Cosine decay to 2 % (optionally after a 1-epoch warm-up at 30 %), or halve-on-plateau."""
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=max(1, patience // 3))
    total = max(epochs, 1)
    warm = kind == "warmup_cosine" and total > 1

    def factor(epoch: int) -> float:
        """Learning-rate multiplier of ``epoch`` (0-based)."""
        if warm and epoch == 0:
            return 0.3
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * epoch / total))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _train_epoch(
    parts: ModelParts, net: torch.nn.Module, ctx: StepContext, stop: Callable[[], bool] | None, result: LoopResult
) -> tuple[float | None, float, float]:  # fmt: skip
    """One pass over the epoch's batches; (mean loss or None if stopped, data seconds, step seconds)."""
    net.train()
    losses: list[float] = []
    t_data = t_step = 0.0
    batches = iter(parts.loader)
    while True:
        if stop is not None and stop():
            return None, t_data, t_step
        t0 = time.monotonic()
        batch = next(batches, None)
        t1 = time.monotonic()
        t_data += t1 - t0
        if batch is None:
            break
        x, y = batch
        if len(x) < parts.min_batch:
            continue
        if result.first_step_at is None:
            result.first_step_at = t1
        losses.append(train_step(net, ctx.to_device(x), parts.target(y, ctx), parts.loss, ctx))
        t_step += time.monotonic() - t1
    finite = [v for v in losses if math.isfinite(v)]  # a skipped step's loss may be NaN (step.py)
    return (sum(finite) / len(finite) if finite else float("nan")), t_data, t_step


def _verdict(s: LoopSettings, epoch: int, best: Best, stop: bool, elapsed: float) -> str | None:
    """Why the loop ends after this epoch (early stop, stop request, time budget), or None."""
    if not s.final_only and epoch - best.epoch >= s.patience:
        logger.info("early stop: no improvement for %d epochs", s.patience)
        return "early_stopped"
    if stop:
        return "stopped"
    if s.max_seconds and elapsed >= s.max_seconds:
        logger.info("time budget of %.0f s reached after epoch %d", s.max_seconds, epoch)
        return "time_limit"
    return None


def _row(epoch: int, s: LoopSettings, loss: float, scores: ValScores | None, times: tuple[float, ...], lr: float,
         best: Best) -> dict[str, Any]:  # fmt: skip
    """One epoch's record (CSV columns plus what the progress callback shows)."""
    t_data, t_step, t_val, total = times
    row: dict[str, Any] = {"epoch": epoch, "epochs": s.epochs, "train_loss": loss, "lr": lr}
    row.update({f"val_{k}": v for k, v in scores.summary.items()} if scores is not None else {})
    row.update({"data_s": round(t_data, 2), "step_s": round(t_step, 2), "val_s": round(t_val, 2),
                "seconds": round(total, 2), "best_epoch": best.epoch,
                "best_metric": best.scores.metric if best.scores else None})  # fmt: skip
    return row


def _validates(s: LoopSettings, epoch: int, elapsed: float) -> bool:
    """Whether this epoch is validated: always, or (fixed budget) only the one the run ends with.

    A fixed-budget run keeps its last epoch whatever its score, so choosing among epochs
    never peeks at the cases it is judged on (the cross-validated publish decision).
    """
    if not s.final_only or epoch == s.epochs:
        return True
    return bool(s.max_seconds and elapsed >= s.max_seconds)


def train_loop(
    parts: ModelParts,
    net: torch.nn.Module,
    ctx: StepContext,
    settings: LoopSettings,
    log: RunLog | None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoopResult:
    """Train for up to ``settings.epochs``; returns how it ended and the best epoch."""
    stop_now = ddp.synced_stop(should_stop)
    plain = ddp.unwrap(net)
    sched = make_schedule(settings.schedule, ctx.optimizer, settings.epochs, settings.patience)
    result, start = LoopResult("finished", Best()), time.monotonic()
    for epoch in range(1, settings.epochs + 1):
        t0, lr = time.monotonic(), ctx.optimizer.param_groups[0]["lr"]
        parts.sampler.set_epoch(epoch)
        loss, t_data, t_step = _train_epoch(parts, net, ctx, stop_now, result)
        if loss is None:
            result.status = "stopped"
            return result
        t1 = time.monotonic()
        scores = None
        if _validates(settings, epoch, t1 - start):
            scores = ddp.from_main(parts.validate(plain, ctx) if ddp.is_main() else None)
            assert scores is not None  # rank 0 validated and broadcast
            result.best.offer(epoch, scores, plain)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            assert scores is not None  # plateau runs validate every epoch (options.checked)
            sched.step(scores.metric)
        else:
            sched.step()
        now = time.monotonic()
        row = _row(epoch, settings, loss, scores, (t_data, t_step, now - t1, now - t0), lr, result.best)
        if scores is None:
            row.update({f"val_{k}": float("nan") for k in parts.val_keys})
        result.history.append(row)
        if log is not None:
            log.log(row)
        if progress is not None and ddp.is_main():
            progress(dict(row))
        flag = stop_now() if stop_now is not None else False  # collective: asked on every rank
        elapsed = (t1 if settings.final_only else now) - start  # fixed budget: the same clock _validates read
        verdict = _verdict(settings, epoch, result.best, flag, elapsed) if ddp.is_main() else None
        verdict = ddp.from_main(verdict)
        if verdict is not None:
            result.status = verdict
            return result
    return result
