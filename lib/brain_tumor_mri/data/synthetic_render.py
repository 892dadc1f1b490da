"""From sampled tissue maps and labels to the four MRI sequences of a case.

Each sequence mixes the soft tissue maps with the case's drawn class means
(``synthetic_contrast``), blends in the normal enhancing structures, paints the lesion
labels with textured lesion intensities and then runs the simulated acquisition
(``synthetic_scanner``). Everything random comes from the caller's generator.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..labels import SEG_LABELS, SEQUENCES
from .synthetic_contrast import CLASSES, draw_contrast
from .synthetic_fields import smooth_noise
from .synthetic_scanner import Acquisition, acquire, draw_acquisition

logger = logging.getLogger(__name__)

_C = {name: i for i, name in enumerate(CLASSES)}
_LABEL_CLASS = {
    SEG_LABELS["necrotic_core"]: "core",
    SEG_LABELS["edema"]: "edema",
    SEG_LABELS["enhancing_tumor"]: "enhancing",
}


def foreground(tissue: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Non-background voxels: brain, lesions and the enhancing structures kept outside it."""
    return (tissue[2] > 0.5) | (seg > 0) | (tissue[3] > 0.5) | (tissue[4] > 0.5)


def render_sequences(
    rng: np.random.Generator,
    tissue: np.ndarray,
    seg: np.ndarray,
    kind: str,
    core: str,
    axes: tuple[np.ndarray, ...],
    spacing: float,
    domain: str,
    profile: str,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Images of every sequence (float32, integral values, 0 outside), foreground and metadata."""
    gm, wm, mask, vessel, plexus = tissue[:5]
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    fg = foreground(tissue, seg)
    means, wild = draw_contrast(rng, domain, profile, kind, core)
    lesion = _lesion_box(seg)
    texture = 1.0 + np.float32(rng.uniform(0.01, 0.06)) * smooth_noise(rng, axes, float(rng.uniform(6.0, 16.0)))
    images: dict[str, np.ndarray] = {}
    acquisitions: dict[str, Acquisition] = {}
    for key in SEQUENCES:
        m = means[key]
        img = (wm * m[_C["wm"]] + gm * m[_C["gm"]] + csf * m[_C["csf"]]).astype(np.float32)
        img += vessel * (m[_C["vessel"]] - img)
        img += plexus * (m[_C["plexus"]] - img)
        img *= texture
        if lesion is not None:
            _paint_lesion(img[lesion], seg[lesion], m, rng, axes, lesion)
        acq = draw_acquisition(rng, profile, wild[key])
        images[key] = acquire(rng, img, fg, axes, spacing, acq, float(m[_C["wm"]]))
        acquisitions[key] = acq
    meta = {
        "wild_sequences": [k for k in SEQUENCES if wild[k]],
        "acquisition": {k: a.as_dict() for k, a in acquisitions.items()},
        "class_means": {k: {c: round(float(v), 1) for c, v in zip(CLASSES, means[k])} for k in SEQUENCES},
    }
    return images, fg, meta


def _lesion_box(seg: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of all labels, or None for a tumour-free case."""
    found = ndimage.find_objects((seg > 0).astype(np.uint8))
    return found[0] if found else None


def _paint_lesion(
    img: np.ndarray,
    seg: np.ndarray,
    means: np.ndarray,
    rng: np.random.Generator,
    axes: tuple[np.ndarray, ...],
    box: tuple[slice, ...],
) -> None:
    """Replace tissue intensity by textured lesion intensity per label, in place (a view).

    Edema is blended (it is tissue with more water), cores and enhancing tumour replace it.
    """
    sub_axes = tuple(a[s] for a, s in zip(axes, box))
    grain = 1.0 + np.float32(rng.uniform(0.03, 0.1)) * smooth_noise(rng, sub_axes, float(rng.uniform(3.0, 6.0)))
    for label, name in _LABEL_CLASS.items():
        where = seg == label
        if not where.any():
            continue
        value = means[_C[name]] * float(rng.uniform(0.94, 1.06)) * grain[where]
        if name == "edema":
            weight = np.float32(rng.uniform(0.75, 1.0))
            img[where] = weight * value + (1.0 - weight) * img[where]
        else:
            img[where] = value
