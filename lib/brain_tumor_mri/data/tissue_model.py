"""Soft grey matter / white matter / CSF maps from a T1 brain, by intensity (no atlas needed).

A three-class 1D Gaussian mixture (fitted by EM on the brain's intensity histogram) finds
the CSF, GM and WM intensity levels of a T1 image; voxels between two adjacent levels are
then unmixed linearly (the partial-volume model: a voxel half GM half WM has the mean of the
two levels). That gives smooth probability-like maps, as the generator's sampling needs,
for any real T1 brain the project can read offline (Colin27, the ITK example head).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

__all__ = ["fit_gmm_1d", "partial_volume_maps", "largest_component", "fill_holes_2d"]


def fit_gmm_1d(values: np.ndarray, n_classes: int = 3, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Means and standard deviations (sorted by mean) of a 1D Gaussian mixture fitted by EM.

    Works on a 256-bin histogram of ``values`` so it costs the same for any volume size;
    initialised at evenly spaced percentiles, which is stable for T1 brain histograms.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = np.percentile(values, [0.5, 99.5])
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=256, range=(lo, hi))
    x = 0.5 * (edges[1:] + edges[:-1])
    w = counts / counts.sum()
    mu = np.percentile(values, np.linspace(15, 85, n_classes))
    sd = np.full(n_classes, (hi - lo) / (4.0 * n_classes))
    pi = np.full(n_classes, 1.0 / n_classes)
    for _ in range(iterations):
        dens = pi * np.exp(-0.5 * ((x[:, None] - mu) / sd) ** 2) / sd
        resp = dens / (dens.sum(axis=1, keepdims=True) + 1e-300)
        weight = (resp * w[:, None]).sum(axis=0) + 1e-12
        mu = (resp * w[:, None] * x[:, None]).sum(axis=0) / weight
        var = (resp * w[:, None] * (x[:, None] - mu) ** 2).sum(axis=0) / weight
        sd = np.sqrt(np.maximum(var, ((hi - lo) / 256.0) ** 2))
        pi = weight / weight.sum()
    order = np.argsort(mu)
    return mu[order], sd[order]


def partial_volume_maps(
    t1: np.ndarray, mask: np.ndarray, smooth_vox: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gm, wm, csf) fractions in [0, 1] (summing to the mask) of a T1 brain.

    ``smooth_vox`` > 0 denoises a single-acquisition scan before unmixing (a Gaussian of
    that many voxels); an averaged template like Colin27 needs none.
    """
    img = t1.astype(np.float32)
    if smooth_vox > 0:
        img = ndimage.gaussian_filter(img, smooth_vox)
    inside = mask > 0
    (mu_c, mu_g, mu_w), _ = fit_gmm_1d(img[inside])
    logger.debug("T1 class means csf %.1f gm %.1f wm %.1f", mu_c, mu_g, mu_w)
    wm = np.clip((img - mu_g) / (mu_w - mu_g), 0.0, 1.0)
    gm_from_csf = np.clip((img - mu_c) / (mu_g - mu_c), 0.0, 1.0)
    gm = np.where(img >= mu_g, 1.0 - wm, gm_from_csf)
    csf = 1.0 - gm - wm
    weight = inside.astype(np.float32)
    return (gm * weight).astype(np.float32), (wm * weight).astype(np.float32), (csf * weight).astype(np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (empty stays empty)."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_2d(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes slice by slice along ``axis`` (closes cavities open in 3D, e.g. ear canals)."""
    out = np.empty_like(mask, dtype=bool)
    for i in range(mask.shape[axis]):
        index: list[slice | int] = [slice(None)] * 3
        index[axis] = i
        out[tuple(index)] = ndimage.binary_fill_holes(mask[tuple(index)])
    return out
