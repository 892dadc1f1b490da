"""Tumour candidate sites and normal enhancing structures, derived from an anatomy's maps.

Everything is computed from the 1 mm GM/WM/mask maps of one real brain (see
``anatomy_sources``), so each anatomy has its own sites. Positions that no map shows (the
pituitary gland sits below the skull-stripped brain) use MNI coordinates, which all
anatomies share approximately after their alignment.

Normal structures that enhance on contrast T1, rendered as two soft template-space maps:

- ``vessel``: dural structures and sinuses (falx cerebri in the interhemispheric fissure,
  superior sagittal sinus over the vertex): bright on T1c, dark (flow void / fibrous) on T2.
- ``plexus``: choroid plexus glomus in both ventricular atria, pituitary gland and
  infundibulum: bright on T1c, grey-matter-like on the other sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: MNI mm of the normal pituitary gland centre and the top of the infundibulum (tuber cinereum).
SELLA_MM = np.array([0.0, -3.0, -34.0])
INFUNDIBULUM_TOP_MM = np.array([0.0, -6.0, -17.0])
#: MNI mm of the ventricular atria (trigones), where the choroid plexus glomus lies.
ATRIA_MM = (np.array([-28.0, -42.0, 14.0]), np.array([28.0, -42.0, 14.0]))


@dataclass(frozen=True)
class Sites:
    """Candidate tumour positions (world mm, N x 3) of one anatomy."""

    midline_x: float  # world x of the interhemispheric plane
    wm_sites: np.ndarray  # deep hemispheric white matter (glioma centres)
    junction_sites: np.ndarray  # grey-white junction (metastases)
    callosal_sites: np.ndarray  # corpus callosum body/genu/splenium (butterfly gliomas)
    surface_sites: np.ndarray  # cerebral convexity (meningioma bases)
    surface_normals: np.ndarray  # outward unit normals at the surface sites
    sella: np.ndarray  # pituitary gland centre


def find_sites(maps: np.ndarray, origin: np.ndarray) -> Sites:
    """Tumour sites on a 3 mm lattice of the 1 mm maps (gm, wm, mask)."""
    step = 3
    gm, wm, mask = (m[::step, ::step, ::step] for m in maps[:3])
    world = [origin[a] + step * np.arange(gm.shape[a]) for a in range(3)]
    xx, yy, zz = np.meshgrid(*world, indexing="ij")
    inside = mask > 0.5
    mid = float(xx[inside].mean())
    xr = xx - mid
    depth = ndimage.distance_transform_edt(inside) * step
    csf = mask - gm - wm
    deep = (wm > 0.75) & (csf < 0.2) & (np.abs(xr) >= 14) & (zz >= -8) & (depth >= 16)
    junction = (gm > 0.3) & (wm > 0.3) & (csf < 0.15) & (depth >= 6) & (np.abs(xr) >= 6) & (zz >= -50)
    callosal = (wm > 0.7) & (np.abs(xr) <= 3) & (zz >= 8) & (zz <= 32) & (yy >= -40) & (yy <= 30)
    boundary = inside & ~ndimage.binary_erosion(inside) & (zz >= 5) & (yy >= -90)
    grad = np.stack(np.gradient(ndimage.gaussian_filter(mask, 1.5)))
    normals = -grad[:, boundary].T
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-6

    def pts(sel: np.ndarray) -> np.ndarray:
        return np.stack([xx[sel], yy[sel], zz[sel]], axis=1).astype(np.float32)

    return Sites(
        midline_x=mid,
        wm_sites=pts(deep),
        junction_sites=pts(junction),
        callosal_sites=pts(callosal),
        surface_sites=pts(boundary),
        surface_normals=normals.astype(np.float32),
        sella=(SELLA_MM + [mid, 0.0, 0.0]).astype(np.float32),
    )


def _world_axes(shape: tuple[int, ...], origin: np.ndarray) -> list[np.ndarray]:
    """Per-axis world mm of a 1 mm grid, broadcastable."""
    return [
        (origin[a] + np.arange(shape[a], dtype=np.float32)).reshape([-1 if k == a else 1 for k in range(3)])
        for a in range(3)
    ]


def _tube(shape: tuple[int, ...], origin: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    """Soft (0..1) tube of ``radius`` mm around a polyline of world points, on the 1 mm grid."""
    out = np.zeros(shape, dtype=np.float32)
    if len(points) < 2:
        return out
    dense = [np.linspace(a, b, max(2, int(np.linalg.norm(b - a) * 2) + 1)) for a, b in zip(points[:-1], points[1:])]
    idx = np.rint(np.concatenate(dense) - origin).astype(int)
    idx = idx[np.all((idx >= 0) & (idx < np.array(shape)), axis=1)]
    if not len(idx):
        return out
    pad = int(np.ceil(radius)) + 2
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, shape)
    seeds = np.ones(tuple(hi - lo), dtype=bool)
    seeds[tuple((idx - lo).T)] = False
    dist = ndimage.distance_transform_edt(seeds)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = np.clip(radius + 0.5 - dist, 0.0, 1.0)
    return out


def _ellipsoid(shape: tuple[int, ...], origin: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Soft (0..1, about 1 mm edge) ellipsoid on the 1 mm grid."""
    axes = _world_axes(shape, origin)
    dist = np.sqrt(sum(((axes[a] - centre[a]) / radii[a]) ** 2 for a in range(3)))
    return np.clip((1.0 - dist) * float(radii.min()) + 0.5, 0.0, 1.0).astype(np.float32)


def enhancing_maps(maps: np.ndarray, origin: np.ndarray, sites: Sites) -> np.ndarray:
    """(2, X, Y, Z) soft maps ``vessel`` and ``plexus`` of an anatomy (see module docstring)."""
    gm, wm, mask = maps[:3]
    shape = mask.shape
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    x, y, z = _world_axes(shape, origin)
    mid = sites.midline_x
    zmin = np.where((y > -45) & (y < 30), 32.0, 0.0)
    falx = (np.abs(x - mid) <= 0.5) & (csf > 0.3) & (z > zmin)  # one voxel: the falx is thin
    vessel = np.maximum(falx.astype(np.float32) * 0.4, _sagittal_sinus(mask, origin, mid))
    plexus = _pituitary(shape, origin, sites.sella)
    for atrium in ATRIA_MM:
        plexus = np.maximum(plexus, _choroid(csf, origin, atrium + [mid, 0.0, 0.0]))
    return np.stack([vessel, plexus]).astype(np.float32)


def _sagittal_sinus(mask: np.ndarray, origin: np.ndarray, mid: float) -> np.ndarray:
    """Superior sagittal sinus: a 3 mm tube 2.5 mm above the brain's midline vertex outline."""
    xi = int(round(mid - origin[0]))
    column = mask[max(xi - 1, 0) : xi + 2].max(axis=0) > 0.5  # (Y, Z)
    points = []
    for yi in range(0, column.shape[0], 4):
        zs = np.flatnonzero(column[yi])
        if zs.size and origin[2] + zs[-1] > 5.0:
            points.append([mid, origin[1] + yi, origin[2] + zs[-1] + 2.5])
    return _tube(mask.shape, origin, np.asarray(points, dtype=np.float64), 3.0)


def _pituitary(shape: tuple[int, ...], origin: np.ndarray, sella: np.ndarray) -> np.ndarray:
    """Normal pituitary gland (about 13x10x7 mm) and its infundibulum up to the hypothalamus."""
    gland = _ellipsoid(shape, origin, sella.astype(np.float64), np.array([6.5, 5.0, 3.5]))
    top = INFUNDIBULUM_TOP_MM + [sella[0], 0.0, 0.0]
    stalk = _tube(shape, origin, np.stack([sella + [0.0, 0.0, 3.0], top]).astype(np.float64), 1.3)
    return np.maximum(gland, stalk)


def _choroid(csf: np.ndarray, origin: np.ndarray, atrium: np.ndarray) -> np.ndarray:
    """Choroid plexus glomus: a 6 mm blob at the atrium, kept inside the ventricle's CSF."""
    i = np.rint(atrium - origin).astype(int)
    r = 12
    box = tuple(slice(max(c - r, 0), c + r + 1) for c in i)
    fluid = np.argwhere(csf[box] > 0.6)
    out = np.zeros(csf.shape, dtype=np.float32)
    if not len(fluid):
        return out
    lo = np.array([s.start for s in box])
    nearest = fluid[np.argmin(np.linalg.norm(fluid + lo - i, axis=1))] + lo
    centre = origin + nearest
    blob = _ellipsoid(csf.shape, origin, centre.astype(np.float64), np.array([5.0, 7.0, 4.0]))
    return blob * np.clip(csf * 1.5, 0.0, 1.0)
