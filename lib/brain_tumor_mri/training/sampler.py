"""What each training step sees: the epoch's case order and the patch cut from each case.

``EpochPlan`` draws one epoch's items -- (case index, sample seed) pairs -- from a
generator seeded by the run seed and the epoch, the same on every rank, and gives each
rank its own share. Cases are drawn in shuffled passes (segmentation) or class-balanced
(classification); with a replay source, each draw is a replay case with the replay
fraction's probability. Every item carries its own seed, so its patch and augmentation
are the same whichever DataLoader worker makes it, and whatever the number of workers.

``sample_patch`` cuts a fixed-size patch nnU-Net style: with probability ``fg_fraction``
it is centred on a voxel of a randomly chosen tumour label present in the case (from the
foreground coordinates stored in the cache), else placed uniformly at random; volumes
smaller than the patch are zero-padded at a random offset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..transforms.rand import chance, randint

logger = logging.getLogger(__name__)

#: Foreground voxels kept per label value in a cache entry (coordinates to centre patches on).
FG_PER_LABEL = 4000


def foreground_coords(label: np.ndarray, seed: int, per_label: int = FG_PER_LABEL) -> np.ndarray:
    """(N, 4) int16 rows (label value, x, y, z): up to ``per_label`` random voxels per non-zero value."""
    rng = np.random.default_rng(seed)
    rows = []
    for value in np.unique(label):
        if value == 0:
            continue
        idx = np.argwhere(label == value)
        if len(idx) > per_label:
            idx = idx[rng.choice(len(idx), per_label, replace=False)]
        rows.append(np.concatenate([np.full((len(idx), 1), value), idx], axis=1))
    return np.concatenate(rows).astype(np.int16) if rows else np.zeros((0, 4), np.int16)


def _start(n: int, p: int, centre: int | None, gen: torch.Generator) -> int:
    """Window start on one axis of length ``n`` for a patch of ``p`` (negative: padded)."""
    if n <= p:
        return -randint(gen, p - n + 1)
    if centre is not None:
        return min(max(centre - p // 2, 0), n - p)
    return randint(gen, n - p + 1)


def crop(x: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """The (..., *size) window of ``x`` at ``start`` on its last three axes, zero outside."""
    out = x.new_zeros((*x.shape[:-3], *size))
    src: list[Any] = [Ellipsis]
    dst: list[Any] = [Ellipsis]
    for s, p, n in zip(start, size, x.shape[-3:]):
        lo, hi = max(s, 0), min(s + p, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = x[tuple(src)]
    return out


def sample_patch(
    image: torch.Tensor,
    label: torch.Tensor,
    fg: np.ndarray,
    patch: Sequence[int],
    fg_fraction: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """A ``patch``-sized (image, label) window; True when it was centred on foreground."""
    centre = None
    if chance(gen, fg_fraction) and len(fg):
        values = np.unique(fg[:, 0])
        value = values[randint(gen, len(values))]
        rows = fg[fg[:, 0] == value]
        centre = [int(v) for v in rows[randint(gen, len(rows)), 1:]]
    start = [
        _start(n, p, None if centre is None else centre[a], gen) for a, (n, p) in enumerate(zip(label.shape, patch))
    ]
    return crop(image, start, patch), crop(label, start, patch), centre is not None


@dataclass(frozen=True)
class EpochPlan:
    """How one epoch's items are drawn (see module docstring)."""

    n_primary: int  # cases 0 .. n_primary-1 are primary, the rest replay
    n_replay: int = 0
    replay_fraction: float = 0.0
    targets: tuple[int, ...] | None = None  # class of each primary case: class-balanced draws
    seed: int = 0

    def _primary_order(self, n: int, gen: torch.Generator) -> list[int]:
        """``n`` primary case indices: shuffled passes, or class-balanced draws."""
        if self.targets is not None:
            labels = torch.tensor(self.targets)
            weights = 1.0 / torch.bincount(labels).float()[labels]
            return torch.multinomial(weights, n, replacement=True, generator=gen).tolist()
        order: list[int] = []
        while len(order) < n:
            order.extend(torch.randperm(self.n_primary, generator=gen).tolist())
        return order[:n]

    def items(self, epoch: int, n_samples: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
        """This rank's (case index, sample seed) items of ``epoch`` (equal count on every rank)."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        total = -(-n_samples // world) * world
        order = self._primary_order(total, gen)
        if self.n_replay and self.replay_fraction > 0:
            use = torch.rand(total, generator=gen) < self.replay_fraction
            picks = torch.randint(self.n_replay, (total,), generator=gen)
            order = [self.n_primary + int(r) if u else o for o, u, r in zip(order, use.tolist(), picks.tolist())]
        seeds = torch.randint(2**62, (total,), generator=gen).tolist()
        return list(zip(order, seeds))[rank::world]


class PlanSampler(torch.utils.data.Sampler):
    """A DataLoader sampler yielding one rank's items of the current epoch (``set_epoch``)."""

    def __init__(self, plan: EpochPlan, n_samples: int, rank: int = 0, world: int = 1) -> None:
        self.plan, self.n_samples, self.rank, self.world = plan, n_samples, rank, world
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Draw the items of ``epoch`` next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.plan.items(self.epoch, self.n_samples, self.rank, self.world))

    def __len__(self) -> int:
        return -(-self.n_samples // self.world)
