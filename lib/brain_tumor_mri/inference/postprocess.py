"""Drop connected components the network is unsure of, with thresholds fitted per set of weights.

On held-out cases the shipped network's false tumours (normal enhancing structures, bright
cortex on FLAIR) and its true lesions differ less in size than in how sure the network is
over the whole component: true lesions have a mean whole-tumour probability of 0.9 or more,
most false ones lie between 0.5 and 0.9. So, as nnU-Net decides its post-processing on
validation cases, each set of weights may carry a ``postprocess`` block in its sidecar
(fitted by ``training/postprocess_fit.py`` on held-out cases, never by hand):

    {"min_mean_prob": {"whole_tumor": 0.9, "enhancing_tumor": 0.85}, "fit": {...}}

and the served label is cleaned in the order WT, TC, ET, over face-connected components (a
false blob touching a lesion only at an edge or corner stays a component of its own; on
the fit cases this kept more of the gain than 26-connectivity, 0.642 against 0.629 mean
Dice at the same WT threshold):

- a whole-tumour component whose mean WT probability is below its threshold is removed;
- a tumour-core component below the TC threshold becomes edema;
- an enhancing component below the ET threshold becomes necrotic core.

Weights without the block are served unchanged. Probabilities are never altered here
(uncertainty and active learning read them as the network gave them, apart from the
segmenter's zero outside the image's signal); only the label is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..labels import REGION_CHANNELS, SEG_LABELS, region_mask

logger = logging.getLogger(__name__)

#: What a dropped component of each region becomes (WT: background, TC: edema, ET: necrotic core).
DEMOTE_TO: dict[str, int] = {
    "whole_tumor": 0,
    "tumor_core": SEG_LABELS["edema"],
    "enhancing_tumor": SEG_LABELS["necrotic_core"],
}

DEMOTE_NAMES: dict[str, str] = {"whole_tumor": "background", "tumor_core": "edema",
                                 "enhancing_tumor": "necrotic_core"}  # fmt: skip

_CONNECTIVITY = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class ComponentFilter:
    """Per-region minimum mean probability of a kept component; a region left out is not filtered."""

    min_mean_prob: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for region, tau in self.min_mean_prob.items():
            if region not in REGION_CHANNELS:
                raise ValueError(f"postprocess: unknown region {region!r} (expected one of {REGION_CHANNELS})")
            if not 0.0 <= float(tau) <= 1.0:
                raise ValueError(f"postprocess: threshold {tau!r} for {region} is not in [0, 1]")

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ComponentFilter:
        """The filter a sidecar asks for (none when it has no ``postprocess`` block)."""
        block = meta.get("postprocess") or {}
        taus = block.get("min_mean_prob") or {}
        return cls({str(k): float(v) for k, v in taus.items() if float(v) > 0.0})

    @property
    def active(self) -> bool:
        """Whether any region is filtered."""
        return bool(self.min_mean_prob)

    def apply(self, label: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, list[Dropped]]:
        """The cleaned label (a copy) and the components it dropped, region by region."""
        if not self.active:
            return label, []
        out = np.array(label, copy=True)
        dropped: list[Dropped] = []
        for k, region in enumerate(REGION_CHANNELS):
            tau = self.min_mean_prob.get(region)
            if tau is not None:
                dropped += drop_unsure(out, np.asarray(probs[k]), region, tau)
        if dropped:
            logger.debug("post-processing dropped %d component(s) below the fitted mean probability", len(dropped))
        return out, dropped


@dataclass(frozen=True)
class Dropped:
    """A component the filter removed: still worth a look, so answers list it as a low-confidence candidate."""

    region: str
    voxels: int
    mean_prob: float
    centroid: tuple[float, float, float]  # voxel indices on the label's grid

    def as_params(self, affine: np.ndarray, voxel_ml: float) -> dict[str, Any]:
        """JSON-ready record: region, volume (mL), mean probability, centroid in RAS mm."""
        ras = np.asarray(affine) @ np.append(np.asarray(self.centroid, dtype=float), 1.0)
        return {"region": self.region, "volume_ml": round(self.voxels * voxel_ml, 3),
                "mean_probability": round(self.mean_prob, 3), "centroid_ras_mm": [round(float(v), 1) for v in ras[:3]],
                "demoted_to": DEMOTE_NAMES[self.region]}  # fmt: skip


def drop_unsure(label: np.ndarray, prob: np.ndarray, region: str, tau: float) -> list[Dropped]:
    """Demote, in place, components of ``region`` whose mean ``prob`` is below ``tau``; what was dropped.

    Works inside the region's bounding box with one pass of ``bincount`` for sizes, sums and
    centroids, so a 1 mm BraTS volume costs tens of milliseconds, not a second.
    """
    mask = region_mask(label, region)
    boxes = ndimage.find_objects(mask.astype(np.uint8))  # as lesion_summary crops: one box around the region
    if not boxes or boxes[0] is None:
        return []
    box = boxes[0]
    sub = label[box]  # a view: demoting it demotes ``label``
    parts, n = ndimage.label(mask[box], structure=_CONNECTIVITY)
    flat = parts.ravel()
    sizes = np.bincount(flat, minlength=n + 1).astype(np.float64)
    means = np.bincount(flat, weights=prob[box].ravel().astype(np.float64), minlength=n + 1) / np.maximum(sizes, 1)
    unsure = np.flatnonzero(means[1:] < tau) + 1
    if not unsure.size:
        return []
    grid = np.indices(sub.shape, sparse=True)
    centres = [np.bincount(flat, weights=np.broadcast_to(g + b.start, sub.shape).ravel().astype(np.float64),
                           minlength=n + 1) / np.maximum(sizes, 1) for g, b in zip(grid, box)]  # fmt: skip
    drop = np.zeros(n + 1, dtype=bool)
    drop[unsure] = True
    sub[drop[parts]] = DEMOTE_TO[region]
    return [Dropped(region, int(sizes[i]), float(means[i]), (float(centres[0][i]), float(centres[1][i]),
                                                             float(centres[2][i])))
            for i in unsure]  # fmt: skip
