"""Per-case normal enhancing structures in output space: cortical veins and what survives skull stripping.

The template-space maps (falx, superior sagittal sinus, choroid plexus, pituitary gland;
see ``anatomy_sites``) are sampled with the case's anatomy; here each case adds a few
cortical veins (bright tubes crawling over the brain surface on T1c) and decides, as a
real skull-stripping tool might, whether the sinus and pituitary outside the brain mask
are kept. A model trained on these learns that a bright T1c spot is not always tumour.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

_NEIGHBOURS = np.array(
    [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)]
)


def cortical_veins(rng: np.random.Generator, mask: np.ndarray, spacing: float) -> np.ndarray:
    """Soft map (0..1) of 3-7 vein segments, 15-60 mm long, walking over the mask's surface."""
    inside = mask > 0.5
    surface = inside & ~ndimage.binary_erosion(inside)
    starts = np.argwhere(surface[:, :, surface.shape[2] // 3 :]) + [0, 0, surface.shape[2] // 3]
    out = np.zeros(mask.shape, dtype=np.float32)
    if not len(starts):
        return out
    radius_mm = float(rng.uniform(0.7, 1.4))
    for _ in range(int(rng.integers(3, 8))):
        path = _walk(rng, surface, starts[rng.integers(len(starts))], int(rng.uniform(15.0, 60.0) / spacing))
        _paint_tube(out, path, radius_mm / spacing, float(rng.uniform(0.6, 1.0)))
    return out


def _walk(rng: np.random.Generator, surface: np.ndarray, start: np.ndarray, steps: int) -> np.ndarray:
    """Voxel path over ``surface`` keeping a slowly turning direction."""
    pos = start.copy()
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction) + 1e-9
    path = [pos.copy()]
    shape = np.array(surface.shape)
    for _ in range(max(steps, 2)):
        cand = pos + _NEIGHBOURS
        ok = np.all((cand >= 0) & (cand < shape), axis=1)
        cand = cand[ok]
        cand = cand[surface[tuple(cand.T)]]
        if not len(cand):
            break
        steps_dir = (cand - pos) / np.linalg.norm(cand - pos, axis=1, keepdims=True)
        score = steps_dir @ direction + 0.4 * rng.normal(size=len(cand))
        nxt = cand[int(np.argmax(score))]
        direction = 0.75 * direction + 0.25 * (nxt - pos) / np.linalg.norm(nxt - pos)
        direction /= np.linalg.norm(direction) + 1e-9
        pos = nxt
        path.append(pos.copy())
    return np.asarray(path)


def _paint_tube(out: np.ndarray, path: np.ndarray, radius_vox: float, strength: float) -> None:
    """Add a blurred tube along ``path`` (voxel indices) into ``out``, in place (max-combined)."""
    pad = int(np.ceil(2 * radius_vox + 2))
    lo = np.maximum(path.min(axis=0) - pad, 0)
    hi = np.minimum(path.max(axis=0) + pad + 1, out.shape)
    local = np.zeros(tuple(hi - lo), dtype=np.float32)
    local[tuple((path - lo).T)] = 1.0
    sigma = max(radius_vox, 0.5)
    blurred = ndimage.gaussian_filter(local, sigma)
    peak = ndimage.gaussian_filter(np.pad(np.ones((1, 1, 1), np.float32), pad), sigma).max()
    view = out[tuple(slice(a, b) for a, b in zip(lo, hi))]
    np.maximum(view, np.clip(blurred / peak, 0.0, 1.0) * strength, out=view)


def keep_outside_structures(
    rng: np.random.Generator, extra: np.ndarray, mask: np.ndarray, kind: str
) -> dict[str, bool]:
    """Drop, in place, the sinus and/or pituitary outside the brain mask as skull stripping might.

    ``extra`` is (vessel, plexus) on the case grid. A pituitary tumour replaces the normal
    gland, so its case never keeps the gland. Returns what was kept (for the metadata).
    """
    outside = mask <= 0.5
    keep_sinus = bool(rng.random() < 0.6)
    keep_gland = kind != "pituitary" and bool(rng.random() < 0.7)
    if not keep_sinus:
        extra[0][outside] = 0.0
    if not keep_gland:
        extra[1][outside] = 0.0
    return {"sagittal_sinus": keep_sinus, "pituitary_gland": keep_gland}
