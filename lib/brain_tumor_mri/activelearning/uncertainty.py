"""Per-case segmentation uncertainty from K stochastic passes of the served model.

Two sources of stochasticity, both on the preprocessed (working-spacing, brain-cropped)
volume so K passes cost about K plain inferences:

* Monte-Carlo dropout (``epistemic``): the U-Net's dropout layers stay active, so each
  pass samples a different sub-network; disagreement measures what the model has not
  learned yet, which is what labelling a case can fix.
* Test-time augmentation (``tta``): the input is flipped over different axis subsets and
  the output flipped back; disagreement measures how unstable the prediction is under
  transformations the answer should not depend on.

The scalar score is the mean, over the predicted tumour, of the per-voxel mutual
information between prediction and pass (BALD): ``H(mean_k p_k) - mean_k H(p_k)`` per
region channel (WT, TC, ET), averaged over the channels. Why this scalar:

* Mutual information is zero wherever all passes agree, even at p = 0.5, so the ambiguous
  one-voxel rim every tumour has (aleatoric noise, proportional to its surface) does not
  rank cases; only disagreement between passes does, which is what K passes measure.
* Averaging over the predicted tumour (voxels where *any* pass predicts any region,
  p > 0.5) instead of the whole window keeps the score from being dominated by, and
  diluted in, the confident background that makes up >95 % of a brain. Using the union
  over passes keeps voxels that only some passes call tumour, the most informative ones.
* The denominator is floored at ``MIN_REGION_VOXELS`` so a few flickering voxels in an
  otherwise empty prediction cannot reach the maximum score; an empty prediction scores 0.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from ..transforms.preprocess import Prepared, restore

logger = logging.getLogger(__name__)

METHODS = ("epistemic", "tta")
#: Floor of the score's denominator (working-grid voxels; 64 = 0.5 mL at 2 mm).
MIN_REGION_VOXELS = 64
_EPS = 1e-6


@dataclass(frozen=True)
class Uncertainty:
    """One case's uncertainty: the scalar score, its map (working grid) and provenance."""

    score: float
    method: str
    passes: int
    region_voxels: int  # voxels any pass predicted as tumour
    mean_probs: torch.Tensor  # (3, *window), mean over passes
    mutual_info: torch.Tensor  # (*window), channel-mean mutual information

    def map_on_input_grid(self, prepared: Prepared) -> np.ndarray:
        """The mutual-information map restored onto the case's input grid (float32)."""
        return restore(self.mutual_info[None].float(), prepared.geometry)[0].astype(np.float32)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of independent Bernoulli probabilities, elementwise."""
    p = p.clamp(_EPS, 1.0 - _EPS)
    return -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))


def tta_flips(k: int) -> list[tuple[int, ...]]:
    """The first ``k`` flip-axis subsets: identity, single axes, pairs, all three."""
    subsets = [s for n in range(4) for s in itertools.combinations(range(3), n)]
    if not 1 <= k <= len(subsets):
        raise ValueError(f"TTA samples must be in [1, {len(subsets)}], got {k}")
    return subsets[:k]


def _passes(segmenter: Any, image: torch.Tensor, method: str, k: int, model: Any = None) -> Iterator[torch.Tensor]:
    """Yield ``k`` region-probability maps (3, *window) for ``method`` (all with the same ``model``)."""
    if method == "epistemic":
        for _ in range(k):
            yield segmenter.forward(image, mc_dropout=True, model=model)
    elif method == "tta":
        for flips in tta_flips(k):
            yield segmenter.forward(image, flips=flips, model=model)
    else:
        raise ValueError(f"unknown uncertainty method {method!r}; expected one of {METHODS}")


def summarize(passes: Iterator[torch.Tensor], method: str = "custom") -> Uncertainty:
    """Reduce stochastic passes (each (3, *window)) to the score and maps, streaming."""
    total: torch.Tensor | None = None
    mean_h: torch.Tensor | None = None
    hit: torch.Tensor | None = None
    k = 0
    for probs in passes:
        probs = probs.float()
        if total is None or mean_h is None or hit is None:
            total, mean_h = torch.zeros_like(probs), torch.zeros_like(probs)
            hit = torch.zeros(probs.shape[1:], dtype=torch.bool)
        total += probs
        mean_h += binary_entropy(probs)
        hit |= (probs > 0.5).any(dim=0)
        k += 1
    if k < 2 or total is None or mean_h is None or hit is None:
        raise ValueError(f"uncertainty needs at least 2 passes, got {k}")
    mean_p = total / k
    mi = (binary_entropy(mean_p) - mean_h / k).clamp_min(0.0).mean(dim=0)
    n = int(hit.sum())
    score = float(mi[hit].sum()) / max(n, MIN_REGION_VOXELS) if n else 0.0
    return Uncertainty(score, method, k, n, mean_p, mi)


def case_uncertainty(
    segmenter: Any, prepared: Prepared, method: str, samples: int, seed: int | None = 0, model: Any = None
) -> Uncertainty:
    """Uncertainty of one preprocessed case by ``method`` with ``samples`` passes.

    ``seed`` makes Monte-Carlo dropout reproducible without disturbing the caller's RNG;
    ``model`` (default: the served one) is the model ``prepared`` was made for.
    """
    store = getattr(segmenter, "store", None)
    if store is not None and model is None:
        model = store.get()  # load before seeding: building a network consumes random numbers
    device = getattr(store, "device", torch.device("cpu"))
    devices = [device.index or 0] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        result = summarize(_passes(segmenter, prepared.image, method, samples, model), method)
    logger.debug("%s uncertainty %.5f over %d voxels (%d passes)", method, result.score, result.region_voxels, samples)
    return result
