"""Training run of a tumour-type classifier (2D or 3D): epochs, validation, publication.

Class-balanced sampling (each class equally likely per draw) with label-smoothed
cross-entropy, AdamW with a one-epoch warm-up then cosine decay, bf16 autocast on capable
CPUs / fp16 + GradScaler on CUDA, early stopping on validation balanced accuracy (ties
broken by lower validation loss). The best epoch is published atomically with
``save_model`` only when it beats the starting model on the same validation split.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AppConfig
from ..labels import TUMOR_CLASSES
from ..networks.checkpoint import load_model, save_model
from ..networks.classifier import build_classification_network, network_kwargs
from ..runtime import autocast, pick_device, use_reduced_precision
from ..transforms.classify_preprocess import ClassPreprocess
from .class_augment import ClassAugment, augment_batch
from .class_data import ClassSample, describe
from .class_metrics import classification_metrics
from .class_report import ClassRunLog, plot_class_curves
from .result import TrainResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassTrainSettings:
    """Hyper-parameters and provenance of one classification training run."""

    input_kind: str = "2d"
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    bf16: str = "auto"
    amp: bool = True
    label_smoothing: float = 0.05
    max_minutes: float = 0.0  # 0: no time limit; else stop after the epoch that passes it
    network: dict[str, Any] = field(default_factory=dict)  # overrides of CLASS_DEFAULTS (scratch only)
    preprocess: ClassPreprocess | None = None  # input size/spacing from scratch (default: the kind's default)
    augment: ClassAugment = field(default_factory=ClassAugment)
    data: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @classmethod
    def from_config(cls, cfg: AppConfig, **overrides: Any) -> ClassTrainSettings:
        """Defaults from the app's config (epochs, patience, seed, device, precision), then overrides."""
        base = {"epochs": cfg.train_epochs, "patience": cfg.train_patience, "seed": cfg.seed,
                "device": cfg.device, "bf16": cfg.bf16, "amp": cfg.train_amp}  # fmt: skip
        return cls(**{**base, **overrides})


@dataclass
class _Ctx:
    """Device, precision and memory format for every forward pass of the run."""

    device: torch.device
    reduced: bool
    channels_last: bool
    scaler: torch.amp.GradScaler | None = None

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the network's memory format."""
        x = x.to(self.device, non_blocking=True)
        if not self.channels_last:
            return x
        return x.contiguous(memory_format=torch.channels_last_3d if x.ndim == 5 else torch.channels_last)


def _context(settings: ClassTrainSettings, net: torch.nn.Module) -> tuple[torch.nn.Module, _Ctx]:
    """Place the network and choose precision (bf16 on capable CPUs, fp16 + scaler on CUDA)."""
    device = pick_device(settings.device)
    reduced = settings.amp and use_reduced_precision(device, settings.bf16)
    # channels-last made CPU training steps of this small DenseNet slower (measured), so it is off
    channels_last = False
    net = net.to(device)
    scaler = torch.amp.GradScaler("cuda") if reduced and device.type == "cuda" else None
    return net, _Ctx(device, reduced, channels_last, scaler)


def _initial(
    settings: ClassTrainSettings, init: Path | None
) -> tuple[torch.nn.Module, dict[str, Any], ClassPreprocess]:
    """Network, its kwargs and preprocessing: from the init model's sidecar, or defaults."""
    if init is None:
        kwargs = network_kwargs(settings.input_kind, **settings.network)
        torch.manual_seed(settings.seed)
        spec = settings.preprocess or ClassPreprocess.default(settings.input_kind)
        return build_classification_network(**kwargs), kwargs, spec
    loaded = load_model(init, "classification", {"input_kind": settings.input_kind, "classes": list(TUMOR_CLASSES)})
    logger.info("fine-tuning from %s (version %s)", init, loaded.version)
    return loaded.network, dict(loaded.meta["network"]), ClassPreprocess.from_meta(loaded.meta)


def init_preprocess(
    input_kind: str, init: Path | None, size: int | None = None, spacing: float | None = None
) -> ClassPreprocess:
    """Preprocessing a run must prepare its data with: the init model's, else default with overrides."""
    if init is not None:
        if size is not None or spacing is not None:
            raise ValueError("--input-size/--spacing apply to training from scratch only (--init none)")
        return ClassPreprocess.from_meta(load_model(init, "classification", {"input_kind": input_kind}).meta)
    spec = ClassPreprocess.default(input_kind)
    if spacing is not None and input_kind == "2d":
        raise ValueError("--spacing applies to the 3D model only")
    return ClassPreprocess(input_kind, size or spec.size, spacing if spacing is not None else spec.spacing_mm)


@torch.inference_mode()
def evaluate(net: torch.nn.Module, samples: list[ClassSample], ctx: _Ctx, batch_size: int = 32) -> dict[str, Any]:
    """Validation loss (plain cross-entropy) and all classification metrics."""
    net.eval()
    probs, losses = [], []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        with autocast(ctx.device, ctx.reduced):
            logits = net(ctx.batch(torch.stack([s.image for s in chunk]))).float().cpu()
        target = torch.tensor([s.label for s in chunk])
        losses.append(float(F.cross_entropy(logits, target, reduction="sum")))
        probs.append(torch.softmax(logits, dim=1).numpy())
    metrics = classification_metrics([s.label for s in samples], np.concatenate(probs), TUMOR_CLASSES)
    metrics["loss"] = sum(losses) / max(len(samples), 1)
    return metrics


def _score(metrics: dict[str, Any]) -> tuple[float, float]:
    """Model-selection key: balanced accuracy, then lower loss."""
    return (float(metrics["balanced_accuracy"] or 0.0), -float(metrics["loss"]))


def balanced_order(samples: list[ClassSample], gen: torch.Generator) -> list[int]:
    """One epoch of sample indices (as many as samples) drawn so each class is equally likely."""
    labels = torch.tensor([s.label for s in samples])
    counts = torch.bincount(labels, minlength=len(TUMOR_CLASSES)).float()
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, len(samples), replacement=True, generator=gen).tolist()


def train_epoch(
    net: torch.nn.Module, samples: list[ClassSample], ctx: _Ctx, opt: torch.optim.Optimizer,
    gen: torch.Generator, settings: ClassTrainSettings, should_stop: Callable[[], bool] | None,
) -> float | None:  # fmt: skip
    """One epoch of balanced, augmented mini-batches; mean loss, or None if asked to stop."""
    net.train()
    order, losses = balanced_order(samples, gen), []
    for i in range(0, len(order), settings.batch_size):
        if should_stop is not None and should_stop():
            return None
        idx = order[i : i + settings.batch_size]
        if len(idx) < 2:  # batch norm needs two samples
            continue
        x = ctx.batch(augment_batch([samples[k].image for k in idx], gen, settings.augment))
        y = torch.tensor([samples[k].label for k in idx], device=ctx.device)
        opt.zero_grad(set_to_none=True)
        with autocast(ctx.device, ctx.reduced):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=settings.label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {float(loss)}; lower the learning rate")
        if ctx.scaler is not None:
            ctx.scaler.scale(loss).backward()
            ctx.scaler.step(opt)
            ctx.scaler.update()
        else:
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def _schedule(settings: ClassTrainSettings, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first epoch, then cosine decay to 2% of the peak."""
    total = max(settings.epochs, 1)

    def factor(epoch: int) -> float:
        """Learning-rate multiplier of ``epoch``."""
        if epoch == 0 and total > 1:
            return 0.3
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * epoch / total))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@dataclass
class _Best:
    """Best epoch so far: its selection key, metrics and a CPU copy of its weights."""

    key: tuple[float, float] = (-1.0, -math.inf)
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, metrics: dict[str, Any], net: torch.nn.Module) -> None:
        """Keep this epoch if it is the best so far."""
        key = _score(metrics)
        if key > self.key:
            self.key, self.epoch, self.metrics = key, epoch, metrics
            self.state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def _run_epochs(
    settings: ClassTrainSettings, net: torch.nn.Module, ctx: _Ctx, train: list[ClassSample], val: list[ClassSample],
    log: ClassRunLog, progress: Callable[[dict[str, Any]], None] | None, should_stop: Callable[[], bool] | None,
) -> tuple[str, _Best, list[dict[str, Any]]]:  # fmt: skip
    """Train, validate, log, schedule and early-stop; returns status, best epoch and history."""
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = _schedule(settings, opt)
    best, start = _Best(), time.monotonic()
    history: list[dict[str, Any]] = []
    for epoch in range(1, settings.epochs + 1):
        t0, lr = time.monotonic(), opt.param_groups[0]["lr"]
        loss = train_epoch(net, train, ctx, opt, gen, settings, should_stop)
        if loss is None:
            return "stopped", best, history
        metrics = evaluate(net, val, ctx)
        best.offer(epoch, metrics, net)
        sched.step()
        row = {"epoch": epoch, "train_loss": loss, "val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"],
               "val_balanced_accuracy": metrics["balanced_accuracy"], "val_macro_f1": metrics["macro_f1"] or 0.0,
               "lr": lr, "seconds": round(time.monotonic() - t0, 2)}  # fmt: skip
        history.append(row)
        log.log(row)
        if progress is not None:
            progress({**row, "epochs": settings.epochs, "best_epoch": best.epoch})
        if epoch - best.epoch >= settings.patience:
            logger.info("early stop: no improvement for %d epochs", settings.patience)
            return "early_stopped", best, history
        if settings.max_minutes and time.monotonic() - start > 60 * settings.max_minutes:
            logger.info("time limit of %.1f min reached after epoch %d", settings.max_minutes, epoch)
            return "time_limit", best, history
        if should_stop is not None and should_stop():
            return "stopped", best, history
    return "finished", best, history


def train_classification(
    settings: ClassTrainSettings,
    train: list[ClassSample],
    val: list[ClassSample],
    init_weights: Path | None,
    publish_to: Path,
    run_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on ``train``, select on ``val``, publish the best epoch to ``publish_to`` if it improved."""
    if len({s.label for s in train}) < 2:
        raise ValueError(f"{settings.input_kind} classification needs training samples of at least two classes")
    if not val:
        logger.warning("no validation samples: validating on the training samples")
        val = train
    start = time.monotonic()
    net, kwargs, spec = _initial(settings, Path(init_weights) if init_weights else None)
    net, ctx = _context(settings, net)
    baseline = evaluate(net, val, ctx) if init_weights is not None else None
    if baseline is not None:
        logger.info("initial model: val balanced accuracy %.4f, loss %.4f", _score(baseline)[0], baseline["loss"])
    log = ClassRunLog(run_dir, settings.input_kind)
    try:
        status, best, history = _run_epochs(settings, net, ctx, train, val, log, progress, should_stop)
    finally:
        log.close()
    base_metric = None if baseline is None else _score(baseline)[0]
    plot_class_curves(history, Path(run_dir) / "curves.png", base_metric)
    result = TrainResult(status, False, "", None, None, len(history), best.epoch, best.key[0], base_metric,
                              best.metrics, round(time.monotonic() - start, 1), history)  # fmt: skip
    _publish(result, settings, kwargs, spec, best, baseline, (describe(train), describe(val)), Path(publish_to))
    return result


def _publish(
    result: TrainResult, settings: ClassTrainSettings, kwargs: dict[str, Any], spec: ClassPreprocess,
    best: _Best, baseline: dict[str, Any] | None, counts: tuple[dict[str, int], dict[str, int]], publish_to: Path,
) -> None:  # fmt: skip
    """Publish the best epoch when the run was not stopped and beat the starting model; record why."""
    if result.status == "stopped":
        result.decision = "not published: stop requested"
    elif best.state is None:
        result.decision = "not published: no epoch completed"
    elif baseline is not None and best.key <= _score(baseline):
        result.decision = (
            f"not published: best balanced accuracy {best.key[0]:.4f} (loss {-best.key[1]:.4f}) does not "
            f"beat the initial model {_score(baseline)[0]:.4f} (loss {baseline['loss']:.4f})"
        )
    else:
        net = build_classification_network(**kwargs)
        net.load_state_dict(best.state)
        training = {
            "epochs": result.epochs_run, "best_epoch": best.epoch, "val_balanced_accuracy": best.key[0],
            "val_loss": -best.key[1], "val_accuracy": best.metrics.get("accuracy"),
            "baseline_balanced_accuracy": result.baseline_metric, "train_counts": counts[0], "val_counts": counts[1],
            "seconds": result.seconds, "status": result.status, "data": settings.data, "command": settings.command,
            "settings": {k: v for k, v in asdict(settings).items() if k not in ("data", "command")},
        }  # fmt: skip
        meta = {"kind": "classification", **spec.to_meta(), "classes": list(TUMOR_CLASSES), "network": kwargs,
                "training": training}  # fmt: skip
        meta = save_model(net, publish_to, meta)
        result.published, result.publish_path, result.version = True, str(publish_to), meta["version"]
        base = "no initial model" if baseline is None else f"initial {_score(baseline)[0]:.4f}"
        result.decision = f"published: balanced accuracy {best.key[0]:.4f} at epoch {best.epoch} ({base})"
    logger.info("%s", result.decision)
