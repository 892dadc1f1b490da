"""Per-case validation of a segmentation or classification network, the same record for both.

``ValScores`` carries per-case scores (what a publish rule may compare case by case), the
summary logged each epoch, the metric Slicer's accuracy bar shows and the model-selection
key. Segmentation runs each whole validation case exactly as inference does (full pass or
sliding window, test-time mirroring, probability 0 where the image is empty, thresholded by ``regions_to_label``,
then, when given, the component filter the published model will be served with);
classification scores every sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..imageio import nonzero_mask
from ..inference.inferer import InfererSpec, choose, memory_budget_mb, mirrored_mean, network_logits
from ..inference.postprocess import ComponentFilter
from ..labels import REGION_CHANNELS, TUMOR_CLASSES, label_to_regions, regions_to_label
from ..runtime import autocast
from .class_metrics import classification_metrics
from .metrics import dice
from .step import StepContext
from .store import CaseStore

logger = logging.getLogger(__name__)

SEG_SHORT = {"whole_tumor": "wt", "tumor_core": "tc", "enhancing_tumor": "et"}


@dataclass
class ValScores:
    """One validation pass: selection key and metric, summary, and every case's scores."""

    metric: float  # segmentation: mean Dice of WT/TC/ET; classification: balanced accuracy
    key: tuple[float, ...]  # higher is better (classification: balanced accuracy, then -loss)
    summary: dict[str, float]
    per_case: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. full classification metrics


@dataclass(frozen=True)
class SegValidation:
    """How segmentation cases are run at validation: the inference choice of full pass or windows, and the filter.

    ``postprocess`` is the component filter the published model will be served with when it
    is known before training (site adaptation carries the initial model's), so a decision
    compares what users would see; a run that refits the filter afterwards scores raw output.
    """

    inferer: InfererSpec
    network: dict[str, Any]
    memory_mb: float
    postprocess: ComponentFilter | None = None


@torch.inference_mode()
def validate_segmentation(net: torch.nn.Module, store: CaseStore, ctx: StepContext, how: SegValidation) -> ValScores:
    """Dice per region for every whole validation case, their means and the mean of the three."""
    net.eval()
    per_case: dict[str, dict[str, float]] = {}
    budget = memory_budget_mb(how.memory_mb, ctx.device)
    for i in range(len(store)):
        entry = store.entry(i)
        image = torch.from_numpy(np.asarray(entry.arrays["image"])).float()
        mode = choose(how.inferer, how.network, tuple(image.shape[1:]), ctx.reduced, budget)

        def one_pass(x: torch.Tensor, mode: str = mode) -> torch.Tensor:
            """Probabilities (3, *spatial) of one pass over ``x`` (C, *spatial)."""
            logits = network_logits(net, ctx.to_device(x[None]), ctx.device, ctx.reduced, ctx.channels_last, mode,
                                    how.inferer)  # fmt: skip
            return torch.sigmoid(logits)[0].float().cpu()

        probs = mirrored_mean(one_pass, image, how.inferer.mirror_axes).numpy()
        probs *= nonzero_mask(image.numpy())  # as served: nothing where the image is empty (normalize keeps it 0)
        label = regions_to_label(probs)
        if how.postprocess is not None and how.postprocess.active:
            label = how.postprocess.apply(label, probs)[0]
        pred = label_to_regions(label)
        gt = label_to_regions(np.asarray(entry.arrays["label"]))
        scores = {SEG_SHORT[r]: dice(pred[k], gt[k]) for k, r in enumerate(REGION_CHANNELS)}
        scores["mean"] = float(np.mean(list(scores.values())))
        per_case[store.specs[i].case_id] = scores
    summary = {k: float(np.mean([c[k] for c in per_case.values()])) if per_case else 0.0
               for k in ("wt", "tc", "et")}  # fmt: skip
    summary["mean"] = float(np.mean([summary[k] for k in ("wt", "tc", "et")]))
    return ValScores(summary["mean"], (summary["mean"],), summary, per_case)


@torch.inference_mode()
def validate_classification(net: torch.nn.Module, store: CaseStore, ctx: StepContext, batch: int = 32) -> ValScores:
    """Cross-entropy, accuracy, balanced accuracy and macro F1 over all validation samples."""
    net.eval()
    probs, targets, per_case = [], [], {}
    for start in range(0, len(store), batch):
        idx = list(range(start, min(start + batch, len(store))))
        x = torch.stack([torch.from_numpy(np.asarray(store.entry(i).arrays["image"])).float() for i in idx])
        with autocast(ctx.device, ctx.reduced):
            logits = net(ctx.to_device(x)).float().cpu()
        y = torch.tensor([int(store.specs[i].target or 0) for i in idx])
        losses = F.cross_entropy(logits, y, reduction="none")
        p = torch.softmax(logits, dim=1)
        for j, i in enumerate(idx):
            per_case[store.specs[i].case_id] = {"p_true": float(p[j, y[j]]), "correct": float(p[j].argmax() == y[j]),
                                                "loss": float(losses[j])}  # fmt: skip
        probs.append(p.numpy())
        targets += y.tolist()
    metrics = classification_metrics(targets, np.concatenate(probs), TUMOR_CLASSES)
    loss = float(np.mean([c["loss"] for c in per_case.values()]))
    summary = {"loss": loss, "accuracy": float(metrics["accuracy"] or 0.0),
               "balanced_accuracy": float(metrics["balanced_accuracy"] or 0.0),
               "macro_f1": float(metrics["macro_f1"] or 0.0)}  # fmt: skip
    return ValScores(summary["balanced_accuracy"], (summary["balanced_accuracy"], -loss), summary, per_case, metrics)
