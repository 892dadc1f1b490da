"""Segmentation training run, shared by ``brain-tumor train segmentation`` and the app.

``train_segmentation`` fine-tunes the served model (or trains from scratch), validates on
whole held-out cases each epoch, stops early when validation stalls, and publishes the
best epoch atomically -- only when it beats the initial model on the same validation
cases (or there was no initial model). A stop request or an exception publishes nothing,
so the served model is never replaced by a half-trained or worse one.

Under ``torch.distributed`` (``brain-tumor train segmentation --nproc N``) each rank trains
on its shard of every epoch's patches through ``DistributedDataParallel``; rank 0 alone
validates, logs and publishes, and broadcasts each epoch's scores and stop decision.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import AppConfig
from ..labels import REGION_CHANNELS, SEG_LABELS, SEQUENCES
from ..networks.checkpoint import load_model, save_model, sidecar_path
from ..networks.factory import SEG_DEFAULTS, build_segmentation_network
from ..runtime import pick_device, to_memory_format, use_reduced_precision
from ..transforms.augment import AugmentSettings
from . import distributed as ddp
from .loop import StepContext, train_epoch, validate
from .report import RunLog, plot_curves
from .result import TrainResult
from .seg_data import SegCase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegTrainSettings:
    """Hyper-parameters and provenance of one segmentation training run."""

    epochs: int = 20
    lr: float = 2e-4
    weight_decay: float = 1e-5
    patience: int = 8
    batch_size: int = 2
    samples_per_epoch: int = 0  # 0: one pass over the training cases, at least 16 patches
    max_seconds: float = 0.0  # wall-time budget; 0 = none. Ends like the last epoch (publishes)
    store_half: bool = True  # publish fp16 weights (half the file; load_model casts back to fp32)
    seed: int = 0
    device: str = "auto"
    bf16: str = "auto"
    amp: bool = True
    spacing: float = 2.0
    schedule: str = "cosine"  # cosine | plateau
    network: dict[str, Any] = field(default_factory=dict)  # overrides of SEG_DEFAULTS (scratch only)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    data: dict[str, Any] = field(default_factory=dict)  # description recorded in the sidecar
    command: str = ""

    @classmethod
    def from_config(cls, cfg: AppConfig, **overrides: Any) -> SegTrainSettings:
        """Defaults from the app's typed config, then explicit overrides."""
        base = {
            "epochs": cfg.train_epochs,
            "lr": cfg.train_lr,
            "patience": cfg.train_patience,
            "seed": cfg.seed,
            "device": cfg.device,
            "bf16": cfg.bf16,
            "amp": cfg.train_amp,
            "spacing": cfg.seg_spacing,
        }
        return cls(**{**base, **overrides})


def _initial_network(settings: SegTrainSettings, init_weights: Path | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network to train and its kwargs: the init model's architecture, or defaults."""
    if init_weights is None:
        kwargs = {**SEG_DEFAULTS, **settings.network}
        torch.manual_seed(settings.seed)
        return build_segmentation_network(**kwargs), kwargs
    loaded = load_model(init_weights, "segmentation")
    init_spacing = loaded.meta.get("spacing")
    if init_spacing is not None and abs(float(init_spacing) - settings.spacing) > 1e-6:
        raise ValueError(
            f"{init_weights.name} works at {init_spacing} mm but the cases were prepared at {settings.spacing} mm; "
            "prepare them at the initial model's spacing (see init_spacing)"
        )
    logger.info("fine-tuning from %s (version %s)", init_weights, loaded.version)
    return loaded.network, {**SEG_DEFAULTS, **loaded.meta.get("network", {})}


def init_spacing(init_weights: Path | None, default: float) -> float:
    """Working spacing for a run: the initial model's (from its sidecar), else ``default``."""
    if init_weights is None:
        return default
    meta = json.loads(sidecar_path(init_weights).read_text(encoding="utf-8"))
    return float(meta.get("spacing", default))


def _schedule(settings: SegTrainSettings, opt: torch.optim.Optimizer) -> Any:
    """Cosine decay over the planned epochs, or halve-on-plateau of the validation metric."""
    if settings.schedule == "plateau":
        patience = max(1, settings.patience // 3)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=patience)
    if settings.schedule != "cosine":
        raise ValueError(f"unknown schedule {settings.schedule!r}; expected cosine or plateau")
    total = max(settings.epochs, 1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * e / total)))


def _context(settings: SegTrainSettings, net: torch.nn.Module) -> tuple[torch.nn.Module, StepContext]:
    """Place the network and build optimiser, precision and memory-format settings."""
    device = pick_device(settings.device)
    if device.type == "cuda" and ddp.is_distributed():
        device = torch.device("cuda", ddp.rank())
        torch.cuda.set_device(device)
    reduced = settings.amp and use_reduced_precision(device, settings.bf16)
    channels_last = reduced and device.type == "cpu"
    net = ddp.wrap(to_memory_format(net.to(device), channels_last), device)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if reduced and device.type == "cuda" else None
    logger.info(
        "training on %s (reduced precision: %s, channels-last: %s, rank %d of %d)",
        device, reduced, channels_last, ddp.rank(), ddp.world_size(),
    )  # fmt: skip
    return net, StepContext(device, reduced, channels_last, opt, scaler)


def _sidecar(settings: SegTrainSettings, kwargs: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """Metadata published beside the weights (see ``networks.checkpoint``)."""
    network = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    return {
        "kind": "segmentation",
        "network": network,
        "spacing": settings.spacing,
        "sequences": list(SEQUENCES),
        "regions": list(REGION_CHANNELS),
        "labels": dict(SEG_LABELS),
        "storage_dtype": "float16" if settings.store_half else "float32",
        "training": training,
    }


@dataclass
class _Best:
    """Best epoch so far: its metric, per-region Dice and a CPU copy of its weights."""

    metric: float = -1.0
    epoch: int = 0
    dice: dict[str, float] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, scores: dict[str, float], net: torch.nn.Module) -> None:
        """Keep this epoch if it is the best so far."""
        if scores["mean"] > self.metric:
            self.metric, self.epoch, self.dice = scores["mean"], epoch, dict(scores)
            self.state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def _generators(settings: SegTrainSettings) -> tuple[torch.Generator, torch.Generator | None]:
    """Augmentation generator (per rank) and, when distributed, a shared sample-order one."""
    if not ddp.is_distributed():
        return torch.Generator().manual_seed(settings.seed), None
    aug = torch.Generator().manual_seed(settings.seed + 1000 * ddp.rank())
    return aug, torch.Generator().manual_seed(settings.seed)


def _verdict(
    settings: SegTrainSettings, epoch: int, best: _Best, stop: Callable[[], bool], elapsed: float
) -> str | None:
    """Why the loop ends after this epoch (early stop, stop request, time budget), or None."""
    if epoch - best.epoch >= settings.patience:
        logger.info("early stop: no improvement for %d epochs", settings.patience)
        return "early_stopped"
    if stop():
        return "stopped"
    if settings.max_seconds and elapsed >= settings.max_seconds:
        logger.info("time budget of %.0f s reached after epoch %d", settings.max_seconds, epoch)
        return "time_limit"
    return None


def _stop_flag(stop_now: Callable[[], bool] | None) -> Callable[[], bool]:
    """The stop check for ``_verdict``: asked lazily alone, but collectively on every rank when distributed."""
    if stop_now is None:
        return lambda: False
    if not ddp.is_distributed():
        return stop_now
    flag = stop_now()
    return lambda: flag


def _run_epochs(
    settings: SegTrainSettings,
    net: torch.nn.Module,
    ctx: StepContext,
    train: list[SegCase],
    val: list[SegCase],
    log: RunLog | None,
    progress: Callable[[dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[str, _Best, list[dict[str, Any]]]:
    """The epoch loop: train, validate, log, schedule, early-stop; returns status and best."""
    gen, order_gen = _generators(settings)
    shard = (ddp.rank(), ddp.world_size())
    stop_now = ddp.synced_stop(should_stop)
    plain = ddp.unwrap(net)
    sched = _schedule(settings, ctx.optimizer)
    n_samples = settings.samples_per_epoch or max(len(train), 16)
    best, start = _Best(), time.monotonic()
    history: list[dict[str, Any]] = []
    for epoch in range(1, settings.epochs + 1):
        t0 = time.monotonic()
        lr = ctx.optimizer.param_groups[0]["lr"]
        loss = train_epoch(net, train, ctx, gen, settings.augment, settings.batch_size, n_samples, stop_now, shard,
                           order_gen)  # fmt: skip
        if loss is None:
            return "stopped", best, history
        scores: dict[str, float] = ddp.from_main(validate(plain, val, ctx) if ddp.is_main() else None)  # type: ignore[arg-type]
        best.offer(epoch, scores, plain)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(scores["mean"])
        else:
            sched.step()
        stats = {
            "epoch": epoch, "epochs": settings.epochs, "train_loss": loss, "val_dice": scores, "lr": lr,
            "seconds": round(time.monotonic() - t0, 2), "best_epoch": best.epoch, "best_metric": best.metric,
        }  # fmt: skip
        history.append(stats)
        if log is not None:
            log.log(stats)
        if progress is not None and ddp.is_main():
            progress(dict(stats))
        stop = _stop_flag(stop_now)
        verdict = _verdict(settings, epoch, best, stop, time.monotonic() - start) if ddp.is_main() else None
        verdict = ddp.from_main(verdict)
        if verdict is not None:
            return verdict, best, history
    return "finished", best, history


def train_segmentation(
    settings: SegTrainSettings,
    cases_train: list[SegCase],
    cases_val: list[SegCase],
    init_weights: Path | None,
    publish_to: Path,
    run_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train, validate each epoch, and publish the best epoch to ``publish_to`` if it improved."""
    if not cases_train:
        raise ValueError("no training cases")
    if not cases_val:
        logger.warning("no validation cases: validating on the training cases")
        cases_val = cases_train
    start = time.monotonic()
    net, kwargs = _initial_network(settings, Path(init_weights) if init_weights else None)
    net, ctx = _context(settings, net)
    baseline = None
    if init_weights is not None:
        baseline = ddp.from_main(validate(ddp.unwrap(net), cases_val, ctx)["mean"] if ddp.is_main() else None)
        logger.info("initial model validation mean Dice %.4f", baseline)
    log = RunLog(run_dir) if ddp.is_main() else None
    try:
        status, best, history = _run_epochs(settings, net, ctx, cases_train, cases_val, log, progress, should_stop)
    finally:
        if log is not None:
            log.close()
    if ddp.is_main():
        plot_curves(history, Path(run_dir) / "curves.png", baseline)
    seconds = time.monotonic() - start
    result = TrainResult(
        status, False, "", None, None, len(history), best.epoch, best.metric, baseline, best.dice, round(seconds, 1),
        history,
    )  # fmt: skip
    if ddp.is_main():
        _decide_and_publish(result, settings, kwargs, best, len(cases_train), len(cases_val), Path(publish_to))
    else:
        result.decision = f"rank {ddp.rank()}: rank 0 decides and publishes"
    return result


def _decide_and_publish(
    result: TrainResult,
    settings: SegTrainSettings,
    kwargs: dict[str, Any],
    best: _Best,
    n_train: int,
    n_val: int,
    publish_to: Path,
) -> None:
    """Publish the best epoch when the run finished and beat the initial model; record why."""
    if result.status == "stopped":
        result.decision = "not published: stop requested"
    elif best.state is None:
        result.decision = "not published: no epoch completed"
    elif result.baseline_metric is not None and best.metric <= result.baseline_metric:
        result.decision = f"not published: best {best.metric:.4f} <= initial model {result.baseline_metric:.4f}"
    else:
        net = build_segmentation_network(**kwargs)
        net.load_state_dict(best.state)
        net = net.half() if settings.store_half else net
        training = {
            "epochs": result.epochs_run, "best_epoch": best.epoch, "best_metric": best.metric,
            "baseline_metric": result.baseline_metric, "dice": best.dice, "n_train": n_train, "n_val": n_val,
            "seconds": result.seconds, "data": settings.data, "command": settings.command,
            "world_size": ddp.world_size(),
            "settings": {k: v for k, v in asdict(settings).items() if k not in ("data", "command")},
        }  # fmt: skip
        meta = save_model(net, publish_to, _sidecar(settings, kwargs, training))
        result.published, result.publish_path, result.version = True, str(publish_to), meta["version"]
        base = "no initial model" if result.baseline_metric is None else f"initial {result.baseline_metric:.4f}"
        result.decision = f"published: best {best.metric:.4f} at epoch {best.epoch} ({base})"
    logger.info("%s", result.decision)
