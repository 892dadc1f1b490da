"""Rendering a 2D section of a case inside Colin27's real head, in the picture's contrast.

The case's brain (any anatomy) is fitted into Colin27's head by a per-axis affine that maps
Colin's brain onto the case's brain mask (same centroid and spread along every axis), so
the skull, scalp, orbits and face surround it where they should. Head tissues get random
intensities per contrast relative to the brain (fat bright on T1, marrow, dark bone and
air, CSF per contrast, enhancing dura on T1c) with Colin's own T1 as texture; the gap
between the case's brain and Colin's intracranial cavity is CSF.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from .head_tissues import FIT_ABOVE_Z_MM, HEAD_LABELS, Head, load_head

logger = logging.getLogger(__name__)

#: Head-tissue level per contrast, relative to the brain's median in the picture.
_LEVELS: dict[str, dict[str, float]] = {
    "t1n": {
        "skin": 0.8,
        "fat": 1.6,
        "muscle": 0.55,
        "bone": 0.05,
        "marrow": 1.35,
        "csf": 0.3,
        "eye": 0.25,
        "sinus": 0.03,
        "dura": 0.35,
    },
    "t1c": {
        "skin": 0.9,
        "fat": 1.55,
        "muscle": 0.65,
        "bone": 0.05,
        "marrow": 1.3,
        "csf": 0.3,
        "eye": 0.25,
        "sinus": 0.03,
        "dura": 1.4,
    },
    "t2w": {
        "skin": 0.7,
        "fat": 1.2,
        "muscle": 0.45,
        "bone": 0.05,
        "marrow": 0.9,
        "csf": 2.0,
        "eye": 2.1,
        "sinus": 0.03,
        "dura": 0.2,
    },
    "t2f": {
        "skin": 0.8,
        "fat": 1.3,
        "muscle": 0.5,
        "bone": 0.05,
        "marrow": 1.0,
        "csf": 0.25,
        "eye": 0.3,
        "sinus": 0.03,
        "dura": 0.3,
    },
}


def brain_moments(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-mm centroid and per-axis std of a brain mask above ``FIT_ABOVE_Z_MM`` (cerebellum cuts differ)."""
    idx = np.argwhere(mask).astype(np.float64)
    world = idx * np.diag(affine)[:3] + affine[:3, 3]
    world = world[world[:, 2] > FIT_ABOVE_Z_MM]
    return world.mean(axis=0), world.std(axis=0) + 1e-6


def head_section(
    points: np.ndarray, centre: np.ndarray, std: np.ndarray, contrast: str, level: float, rng: np.random.Generator
) -> np.ndarray:
    """Head intensities at world ``points`` (3, H, W) of a case whose brain has ``centre``/``std``.

    Colin's own brain and intracranial CSF both render as CSF here: the case's brain is
    painted over them by the caller.
    """
    head: Head = load_head()
    colin = head.brain_centre[:, None, None] + (points - centre[:, None, None]) * (head.brain_std / std)[:, None, None]
    vox = colin - head.origin[:, None, None]
    labels = ndimage.map_coordinates(head.labels, vox, order=0, mode="constant", cval=0)
    t1 = ndimage.map_coordinates(head.t1, vox, order=1, mode="constant", cval=0.0)
    out = np.zeros(labels.shape, dtype=np.float32)
    levels = _LEVELS[contrast]
    grain = float(rng.uniform(0.3, 1.0))
    for name, base in levels.items():
        where = labels == HEAD_LABELS[name]
        if not where.any():
            continue
        value = base * float(rng.uniform(0.75, 1.3)) * level
        texture = t1[where] / (float(np.median(t1[where])) + 1e-3)
        out[where] = value * np.clip(texture, 0.3, 2.0) ** grain
    csf = levels["csf"] * float(rng.uniform(0.8, 1.2)) * level
    out[labels == HEAD_LABELS["brain"]] = csf
    return out
