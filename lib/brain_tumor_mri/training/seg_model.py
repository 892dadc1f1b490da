"""The segmentation model's parts for the engine: network, data, augmentation, loss, metric.

A 3D U-Net with three sigmoid region outputs (WT, TC, ET), trained on augmented patches
(``datasets.SegPatchDataset``) with soft Dice + BCE, validated on whole cases by mean
Dice exactly as inference runs them, published with a sidecar recording the working
spacing, the patch size and the inferer (full pass or Gaussian-blended sliding window
over windows of the patch size, chosen at inference from the memory budget).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..inference.inferer import AUTO, InfererSpec
from ..inference.postprocess import ComponentFilter
from ..labels import REGION_CHANNELS, SEG_LABELS, SEQUENCES, label_to_regions
from ..networks.checkpoint import load_model, read_sidecar, sidecar_path
from ..networks.factory import SEG_DEFAULTS, build_segmentation_network
from ..transforms.augment import AugmentSettings
from ..transforms.preprocess import PREPROCESS_VERSION
from .cache import CacheFamily
from .cases import CaseSpec
from .datasets import SegPatchDataset
from .options import TrainOptions
from .sampler import EpochPlan
from .seg_data import seg_family
from .step import StepContext
from .store import CaseStore
from .validation import SegValidation, ValScores, validate_segmentation

logger = logging.getLogger(__name__)

WINDOW_OVERLAP = 0.5
MIN_BF16_BOTTLENECK = 4  # voxels a side at the U-Net's deepest level for bf16 training on the CPU


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


def served_filter(init_weights: Path | None, adapt: bool) -> ComponentFilter | None:
    """The component filter a site adaptation's published model will carry (the initial model's), else None.

    Only site adaptation knows it before training (``run._postprocess`` carries it); other
    runs refit the filter on their validation cases after training, so they select on raw output.
    """
    meta = read_sidecar(init_weights) if adapt else None
    if meta is None:
        return None
    filt = ComponentFilter.from_meta(meta)
    return filt if filt.active else None


def init_mirror_axes(init_weights: Path | None) -> tuple[int, ...]:
    """Test-time mirroring for a run's model: the initial model's (its filter, refitted or carried, assumes it)."""
    meta = read_sidecar(init_weights)
    return InfererSpec.from_meta(meta).mirror_axes if meta is not None else ()


def init_spacing(init_weights: Path | None, default: float) -> float:
    """Working spacing for a run: the initial model's (from its sidecar), else ``default``."""
    if init_weights is None:
        return default
    meta = json.loads(sidecar_path(init_weights).read_text(encoding="utf-8"))
    return float(meta.get("spacing", default))


class SegModel:
    """Parts of the region segmentation network (see module docstring)."""

    name = "segmentation"
    tag = "segmentation"
    metric_name = "mean Dice"
    val_keys = ("wt", "tc", "et", "mean")
    curve_keys = ("wt", "tc", "et", "mean")
    cpu_batch = 2
    min_batch = 1
    schedule_default = "cosine"
    channels_last_3d = True

    def __init__(self, opts: TrainOptions, init: Path | None) -> None:
        self.opts, self.init = opts, init
        self.spacing = init_spacing(init, opts.spacing)
        self.patch = opts.patch_size(self.spacing)
        self.inferer = InfererSpec(AUTO, self.patch, WINDOW_OVERLAP, mirror_axes=init_mirror_axes(init))
        self.postprocess = served_filter(init, opts.adapt)
        self.kwargs: dict[str, Any] = {}

    @property
    def family(self) -> CacheFamily:
        """The cache family the cases are prepared in (the working spacing)."""
        return seg_family(self.spacing, self.opts.allow_missing)

    def lr(self) -> float:
        """The peak learning rate."""
        return self.opts.lr if self.opts.lr is not None else 2e-4

    def weight_decay(self) -> float:
        """AdamW weight decay."""
        return self.opts.weight_decay if self.opts.weight_decay is not None else 1e-5

    def build_network(self) -> torch.nn.Module:
        """The initial model's network, or a new one (seeded) with the defaults and overrides."""
        if self.init is None:
            self.kwargs = {**SEG_DEFAULTS, **self.opts.network}
            torch.manual_seed(self.opts.seed)
            return build_segmentation_network(**self.kwargs)
        loaded = load_model(self.init, "segmentation")
        logger.info("fine-tuning from %s (version %s)", self.init, loaded.version)
        self.kwargs = {**SEG_DEFAULTS, **loaded.meta.get("network", {})}
        return loaded.network

    def cpu_bf16_fits(self) -> bool:
        """Whether bf16 on the CPU suits this network and patch (call after ``build_network``).

        Not when the bottleneck is under 4 voxels a side (a 32^3 patch under four stride-2
        levels leaves 2^3): measured against fp32 on the shipped model, bf16 weight gradients
        there were off by up to 90 % and now and then NaN, while with 64^3 patches (4^3) the
        conv weights' were within 6 %. Such small patches train in fp32 (and are cheap).
        """
        strides = self.kwargs.get("strides", SEG_DEFAULTS["strides"])
        shrink = math.prod(int(v) for v in strides)
        fits = min(self.patch) // max(1, shrink) >= MIN_BF16_BOTTLENECK
        if not fits:
            logger.info("patch %s leaves a bottleneck under %d voxels a side: training in fp32",
                        list(self.patch), MIN_BF16_BOTTLENECK)  # fmt: skip
        return fits

    def dataset(self, store: CaseStore) -> Dataset:
        """Augmented patches of the training (and replay) cases."""
        aug = AugmentSettings(domain_random=self.opts.domain_random)
        return SegPatchDataset(store, self.patch, self.opts.fg_fraction, aug)

    def plan(self, train: list[CaseSpec], n_replay: int) -> EpochPlan:
        """Shuffled passes over the training cases, with replay draws when given."""
        return EpochPlan(len(train), n_replay, self.opts.replay_fraction, None, self.opts.seed)

    def samples_per_epoch(self, n_train: int) -> int:
        """Patches per epoch: the option, else one per training case (at least 16)."""
        return self.opts.samples_per_epoch or max(n_train, 16)

    @staticmethod
    def target(y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Label batch (B, *patch) -> region targets (B, 3, *patch) on the device."""
        return label_to_regions(y.to(ctx.device, non_blocking=True)).transpose(0, 1).float().contiguous()

    loss = staticmethod(dice_bce_loss)

    def validate(self, net: torch.nn.Module, store: CaseStore, ctx: StepContext) -> ValScores:
        """Mean Dice per region over whole validation cases, run as inference runs them (with the served filter)."""
        how = SegValidation(self.inferer, self.kwargs, self.opts.infer_memory_mb, self.postprocess)
        return validate_segmentation(net, store, ctx, how)

    def trial_input(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A dummy batch of ``batch`` patches (for the auto batch size on a GPU)."""
        return torch.zeros((batch, len(SEQUENCES), *self.patch)), torch.zeros((batch, *self.patch), dtype=torch.uint8)

    def sidecar(self, training: dict[str, Any]) -> dict[str, Any]:
        """Metadata published beside the weights (see ``networks.checkpoint``)."""
        network = {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs.items()}
        return {
            "kind": "segmentation", "network": network, "spacing": self.spacing, "patch": list(self.patch),
            "inferer": self.inferer.to_meta(), "preprocess_version": PREPROCESS_VERSION,
            "sequences": list(SEQUENCES), "regions": list(REGION_CHANNELS), "labels": dict(SEG_LABELS),
            "storage_dtype": "float16" if self.opts.store_half else "float32", "training": training,
        }  # fmt: skip

    def publishable(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The network to save from a best-epoch state (fp16 when stored half)."""
        net = build_segmentation_network(**self.kwargs)
        net.load_state_dict(state)
        return net.half() if self.opts.store_half else net
