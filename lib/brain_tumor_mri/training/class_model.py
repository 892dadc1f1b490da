"""The tumour-type classifier's parts for the engine (2D slices or 3D cases, one kind per run).

A compact DenseNet trained on class-balanced draws (each class equally likely) with
label-smoothed cross-entropy, one warm-up epoch then cosine decay, selected on validation
balanced accuracy (ties broken by lower loss), published with the preprocessing settings
its inference must use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..labels import TUMOR_CLASSES
from ..networks.checkpoint import load_model
from ..networks.classifier import IN_CHANNELS, build_classification_network, network_kwargs
from ..transforms.augment_class import ClassAugment
from ..transforms.classify_preprocess import ClassPreprocess
from .cache import CacheFamily
from .cases import CaseSpec
from .class_entries import class_family
from .datasets import ClassDataset
from .options import TrainOptions
from .sampler import EpochPlan
from .step import StepContext
from .store import CaseStore
from .validation import ValScores, validate_classification

logger = logging.getLogger(__name__)

LABEL_SMOOTHING = 0.05


def init_preprocess(input_kind: str, init: Path | None, size: int | None = None, spacing: float | None = None
                    ) -> ClassPreprocess:  # fmt: skip
    """Preprocessing a run prepares its data with: the init model's, else default with overrides."""
    if init is not None:
        if size is not None or spacing is not None:
            raise ValueError("--input-size/--spacing apply to training from scratch only (--init none)")
        return ClassPreprocess.from_meta(load_model(init, "classification", {"input_kind": input_kind}).meta)
    spec = ClassPreprocess.default(input_kind)
    if spacing is not None and input_kind == "2d":
        spacing = None  # a 2D picture has no working spacing
    return ClassPreprocess(input_kind, size or spec.size, spacing if spacing is not None else spec.spacing_mm)


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with label smoothing (the training loss)."""
    return F.cross_entropy(logits.float(), target, label_smoothing=LABEL_SMOOTHING)


class ClassModel:
    """Parts of the 2D or 3D tumour-type classifier (see module docstring)."""

    name = "classification"
    metric_name = "balanced accuracy"
    val_keys = ("loss", "accuracy", "balanced_accuracy", "macro_f1")
    curve_keys = ("accuracy", "balanced_accuracy", "macro_f1")
    cpu_batch = 16
    min_batch = 2  # batch norm needs two samples
    schedule_default = "warmup_cosine"
    channels_last_3d = False  # measured slower for this small DenseNet on the CPU

    def __init__(self, opts: TrainOptions, init: Path | None, kind: str) -> None:
        self.opts, self.init, self.kind = opts, init, kind
        self.tag = f"classification {kind}"
        self.spec = init_preprocess(kind, init, opts.input_size, opts.class_spacing)
        self.kwargs: dict[str, Any] = {}

    @property
    def family(self) -> CacheFamily:
        """The cache family the inputs are prepared in (the preprocessing settings)."""
        return class_family(self.spec)

    def lr(self) -> float:
        """The peak learning rate: 1e-3 from scratch, 3e-4 fine-tuning, unless given."""
        return self.opts.lr if self.opts.lr is not None else (1e-3 if self.init is None else 3e-4)

    def weight_decay(self) -> float:
        """AdamW weight decay."""
        return self.opts.weight_decay if self.opts.weight_decay is not None else 1e-4

    @staticmethod
    def cpu_bf16_fits() -> bool:
        """bf16 on the CPU suits the classifier (its inputs stay at least 4 voxels a side)."""
        return True

    def build_network(self) -> torch.nn.Module:
        """The initial model's network, or a new one (seeded) with the defaults and overrides."""
        if self.init is None:
            self.kwargs = network_kwargs(self.kind, **self.opts.network)
            torch.manual_seed(self.opts.seed)
            return build_classification_network(**self.kwargs)
        expect = {"input_kind": self.kind, "classes": list(TUMOR_CLASSES)}
        loaded = load_model(self.init, "classification", expect)
        logger.info("fine-tuning from %s (version %s)", self.init, loaded.version)
        self.kwargs = dict(loaded.meta["network"])
        return loaded.network

    def dataset(self, store: CaseStore) -> Dataset:
        """Augmented inputs of the training (and replay) cases with their classes."""
        return ClassDataset(store, ClassAugment(domain_random=self.opts.domain_random))

    def plan(self, train: list[CaseSpec], n_replay: int) -> EpochPlan:
        """Class-balanced draws over the training cases, with replay draws when given."""
        targets = tuple(int(s.target or 0) for s in train)
        return EpochPlan(len(train), n_replay, self.opts.replay_fraction, targets, self.opts.seed)

    @staticmethod
    def samples_per_epoch(n_train: int) -> int:
        """As many draws per epoch as training samples."""
        return n_train

    @staticmethod
    def target(y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """Class indices on the device."""
        return y.to(ctx.device, non_blocking=True).long()

    loss = staticmethod(smoothed_cross_entropy)

    @staticmethod
    def validate(net: torch.nn.Module, store: CaseStore, ctx: StepContext) -> ValScores:
        """Loss, accuracy, balanced accuracy and macro F1 over the validation samples."""
        return validate_classification(net, store, ctx)

    def trial_input(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A dummy batch of ``batch`` inputs (for the auto batch size on a GPU)."""
        shape = (IN_CHANNELS[self.kind], *(self.spec.size,) * int(self.kind[0]))
        return torch.zeros((batch, *shape)), torch.zeros(batch, dtype=torch.long)

    def sidecar(self, training: dict[str, Any]) -> dict[str, Any]:
        """Metadata published beside the weights (keys as before: input kind/size/spacing, classes, network)."""
        meta = {"kind": "classification", **self.spec.to_meta(), "classes": list(TUMOR_CLASSES),
                "network": self.kwargs, "training": training}  # fmt: skip
        # calibration hook: a temperature fitted on the validation cases would be added to ``meta`` here
        return meta

    def publishable(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The network to save from a best-epoch state."""
        net = build_classification_network(**self.kwargs)
        net.load_state_dict(state)
        return net
