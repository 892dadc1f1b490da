"""The random helpers every augmentation draws through, so all of them draw alike.

Each helper takes the caller's ``torch.Generator`` and draws exactly once per call,
whatever the probability or range (``chance(gen, 0.0)`` still consumes a draw). So the
stream of a seeded run does not shift when one probability is changed to or from 0,
and segmentation, classification and domain randomisation behave the same way.
"""

from __future__ import annotations

import torch

__all__ = ["chance", "randint", "uniform"]


def chance(gen: torch.Generator, p: float) -> bool:
    """True with probability ``p``; always draws one number."""
    return bool(torch.rand((), generator=gen) < p)


def uniform(gen: torch.Generator, lo: float, hi: float, size: tuple[int, ...] = ()) -> torch.Tensor:
    """Uniform samples in ``[lo, hi)`` of shape ``size`` (a 0-d tensor by default)."""
    return torch.rand(size, generator=gen) * (hi - lo) + lo


def randint(gen: torch.Generator, n: int) -> int:
    """A uniform integer in ``[0, n)``; ``n`` must be at least 1."""
    if n < 1:
        raise ValueError(f"randint needs n >= 1, got {n}")
    return int(torch.randint(n, (), generator=gen))
