"""Grids and smooth random fields used by the synthetic generator.

Output volumes live on the BraTS field of view (240x240x155 mm, RAS, axis-aligned) in MNI
space, where every anatomy (``anatomies``) is aligned: the MNI brain mask spans exactly
155 mm in z (-72..82 mm), so a brain fits the 155 BraTS slices without rescaling; x and y
are centred on the brain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: BraTS field of view in mm (240x240x155 voxels at 1 mm).
FOV_MM: tuple[float, float, float] = (240.0, 240.0, 155.0)
#: World (MNI mm) position of the field-of-view centre; chosen so that the 1 mm grid
#: coincides with the template's voxel centres and z covers the brain mask (-72..82 mm).
FOV_CENTRE_MM: tuple[float, float, float] = (0.5, -16.5, 5.0)
#: Standard deviation of a 3D cubic B-spline combination of unit normal coefficients.
_BSPLINE_STD_3D = 0.331


@dataclass(frozen=True)
class Grid:
    """An axis-aligned output grid: shape, voxel size and RAS affine."""

    shape: tuple[int, int, int]
    spacing: float
    affine: np.ndarray

    def axis_mm(self, axis: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """World coordinates (mm) of voxel centres along one axis, for indices start..stop."""
        stop = self.shape[axis] if stop is None else stop
        return (self.affine[axis, 3] + self.spacing * np.arange(start, stop)).astype(np.float32)

    def index_of(self, axis: int, mm: float) -> int:
        """Nearest voxel index along ``axis`` of a world coordinate, clipped into the grid."""
        idx = int(round((mm - self.affine[axis, 3]) / self.spacing))
        return int(np.clip(idx, 0, self.shape[axis] - 1))


def output_grid(spacing: float = 1.0) -> Grid:
    """The BraTS field of view at isotropic ``spacing`` mm (240x240x155 at 1 mm)."""
    if not 0.5 <= spacing <= 8.0:
        raise ValueError(f"spacing must be between 0.5 and 8 mm, got {spacing}")
    shape = tuple(max(8, int(round(e / spacing))) for e in FOV_MM)
    origin = np.asarray(FOV_CENTRE_MM) - spacing * (np.asarray(shape) - 1) / 2.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin
    return Grid(shape=shape, spacing=float(spacing), affine=affine)  # type: ignore[arg-type]


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel (support |t| < 2), the weights of a smooth interpolation."""
    a = np.abs(t)
    out = np.where(a < 1, 2.0 / 3.0 - a**2 + 0.5 * a**3, 0.0)
    return np.where((a >= 1) & (a < 2), (2.0 - a) ** 3 / 6.0, out)


def _bspline_matrix(coords: np.ndarray, step: float) -> np.ndarray:
    """Weights (len(coords), n_ctrl) mapping control points every ``step`` mm to ``coords``."""
    start = float(coords[0]) - step
    n_ctrl = int(np.ceil((float(coords[-1]) - float(coords[0])) / step)) + 3
    u = (coords.astype(np.float64) - start) / step
    return _cubic_bspline(u[:, None] - np.arange(n_ctrl)[None, :]).astype(np.float32)


def smooth_noise(rng: np.random.Generator, axes_mm: tuple[np.ndarray, ...], step_mm: float) -> np.ndarray:
    """Zero-mean, roughly unit-std random field with features of ``step_mm`` on a 3D grid.

    Random coefficients on a coarse control lattice are combined with separable cubic
    B-spline weights, which is smooth and far cheaper than zooming or filtering a full grid.
    """
    mats = [_bspline_matrix(c, step_mm) for c in axes_mm]
    coef = rng.standard_normal(tuple(m.shape[1] for m in mats), dtype=np.float32)
    field = np.einsum("ia,abc->ibc", mats[0], coef)
    field = np.einsum("jb,ibc->ijc", mats[1], field)
    field = np.einsum("kc,ijc->ijk", mats[2], field)
    return np.ascontiguousarray(field, dtype=np.float32) / _BSPLINE_STD_3D


def box_slices(grid_axes: tuple[np.ndarray, ...], centre: np.ndarray, half_mm: float) -> tuple[slice, ...]:
    """Index slices of the part of a grid within ``half_mm`` of ``centre`` along each axis."""
    out = []
    for axis, coords in enumerate(grid_axes):
        lo = int(np.searchsorted(coords, centre[axis] - half_mm))
        hi = int(np.searchsorted(coords, centre[axis] + half_mm, side="right"))
        out.append(slice(lo, max(hi, lo + 1)))
    return tuple(out)
