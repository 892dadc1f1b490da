"""Streaming training samples: torch ``Dataset``s over a ``CaseStore`` and their DataLoader.

A dataset item is one (case index, sample seed) pair from the epoch plan (``sampler``);
``__getitem__`` reads that case (from RAM or from its cache file), cuts and augments one
sample with a generator seeded by the item, and returns tensors. DataLoader worker
processes do this in parallel with the training step, each holding at most a few cases.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..transforms.augment import AugmentSettings, augment
from ..transforms.augment_class import ClassAugment, augment_sample
from .sampler import PlanSampler, sample_patch
from .store import CaseStore

logger = logging.getLogger(__name__)


class SegPatchDataset(Dataset):
    """Augmented fixed-size patches (image (4, *patch) float32, label (*patch) uint8)."""

    def __init__(self, store: CaseStore, patch: Sequence[int], fg_fraction: float, aug: AugmentSettings) -> None:
        self.store, self.patch, self.fg_fraction, self.aug = store, tuple(patch), fg_fraction, aug

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item
        gen = torch.Generator().manual_seed(seed)
        entry = self.store.entry(index)
        image = torch.from_numpy(np.asarray(entry.arrays["image"]))
        label = torch.from_numpy(np.asarray(entry.arrays["label"]))
        img, lab, _ = sample_patch(image, label, entry.arrays["fg"], self.patch, self.fg_fraction, gen)
        return augment(img.float(), lab, gen, self.aug)


class ClassDataset(Dataset):
    """Augmented classification inputs (2D (1, H, W) or 3D (4, n, n, n)) with their class."""

    def __init__(self, store: CaseStore, aug: ClassAugment | None) -> None:
        self.store, self.aug = store, aug

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        image = torch.from_numpy(np.asarray(self.store.entry(index).arrays["image"])).float()
        target = self.store.specs[index].target
        assert target is not None, "classification cases carry their class"
        if self.aug is not None:
            image = augment_sample(image, torch.Generator().manual_seed(seed), self.aug)
        return image, int(target)


def _worker_init(_: int) -> None:
    """One compute thread per loader worker: the workers already run in parallel."""
    torch.set_num_threads(1)


def auto_workers(requested: int) -> int:
    """``requested`` loader workers, or for -1 half the CPU cores (at most 8; 0 on a single core)."""
    if requested >= 0:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores // 2)


def make_loader(
    dataset: Dataset, sampler: PlanSampler, batch_size: int, workers: int, device: torch.device, drop_last: bool = False
) -> DataLoader:
    """The run's DataLoader: ``workers`` forked processes (0 = in this process), pinned memory on CUDA."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": 2, "worker_init_fn": _worker_init,
                  "multiprocessing_context": "fork"}  # fmt: skip
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last, **kwargs)  # fmt: skip
