"""One DICOM MR series (single-frame instances) -> a 3D volume and its RAS affine.

The geometry is read from the headers alone (``series_geometry``), so it can be checked
before any pixel data is downloaded: every instance must share ``ImageOrientationPatient``,
``PixelSpacing``, rows and columns; slices are sorted along the slice normal (the cross
product of the row and column directions), must not repeat a position, must be evenly
spaced (a gap means a missing instance) and must line up along the normal (no gantry tilt or
shear). ``series_volume`` then decodes the pixels, applies each instance's rescale slope and
intercept, and stacks them as ``vol[i, j, k]`` = column ``i``, row ``j`` of slice ``k``:

    LPS(i, j, k) = IPP_0 + i * dc * row_dir + j * dr * col_dir + k * step
    RAS = diag(-1, -1, 1) * LPS

where ``row_dir``/``col_dir`` are the two halves of ``ImageOrientationPatient``, ``dr, dc``
the two ``PixelSpacing`` values and ``step`` the vector between consecutive sorted slices.
Every problem is an ``InputError`` naming the series (and the instance, where one is at fault).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..imageio import InputError

ORIENTATION_TOL = 1e-4  # direction cosines of all instances must agree to this
SPACING_REL_TOL = 0.01  # slice gaps may differ by 1 % of the nominal gap (DICOM decimal strings)
SHEAR_TOL_MM = 0.01  # slice positions may leave the normal by this much


@dataclass(frozen=True)
class SeriesGeometry:
    """Sorted instance order, voxel grid and RAS affine of one series."""

    order: tuple[int, ...]  # indices into the datasets given, along the slice normal
    shape: tuple[int, int, int]  # (columns, rows, slices)
    affine: np.ndarray  # 4x4 RAS, mm


def _floats(ds: Any, keyword: str, n: int, name: str) -> np.ndarray:
    value = getattr(ds, keyword, None)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (n,) or not np.all(np.isfinite(arr)):
        uid = getattr(ds, "SOPInstanceUID", "?")
        raise InputError(f"{name}: instance {uid} has no valid {keyword} (expected {n} numbers, got {value!r})")
    return arr


def _check_instance(ds: Any, name: str) -> None:
    frames = getattr(ds, "NumberOfFrames", None)
    if frames not in (None, "") and int(frames) > 1:
        raise InputError(
            f"{name}: multi-frame (enhanced) instance {getattr(ds, 'SOPInstanceUID', '?')} with {frames} frames; "
            "only single-frame MR series are supported"
        )
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise InputError(f"{name}: colour images are not MR magnitude images")


def series_geometry(datasets: Sequence[Any], name: str) -> SeriesGeometry:
    """Check and compute the voxel grid of a series from its instance headers."""
    if len(datasets) < 2:
        raise InputError(f"{name}: {len(datasets)} instance(s); a 3D volume needs at least 2 slices")
    for ds in datasets:
        _check_instance(ds, name)
    iop = [_floats(ds, "ImageOrientationPatient", 6, name) for ds in datasets]
    ipp = np.stack([_floats(ds, "ImagePositionPatient", 3, name) for ds in datasets])
    spacing = [_floats(ds, "PixelSpacing", 2, name) for ds in datasets]
    sizes = {(int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)) for ds in datasets}
    if len(sizes) != 1 or 0 in next(iter(sizes)):
        raise InputError(f"{name}: instances differ in (or lack) rows/columns: {sorted(sizes)}")
    if any(not np.allclose(o, iop[0], atol=ORIENTATION_TOL) for o in iop):
        raise InputError(f"{name}: instances have different ImageOrientationPatient (mixed planes or a localiser)")
    if any(not np.allclose(s, spacing[0], rtol=1e-4) for s in spacing):
        raise InputError(f"{name}: instances have different PixelSpacing")
    row_dir, col_dir = iop[0][:3], iop[0][3:]
    if abs(np.dot(row_dir, col_dir)) > 1e-3 or abs(np.linalg.norm(row_dir) - 1) > 1e-3:
        raise InputError(f"{name}: ImageOrientationPatient is not two orthogonal unit vectors")
    normal = np.cross(row_dir, col_dir)
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    positions = along[order]
    gaps = np.diff(positions)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        uids = [getattr(datasets[order[i]], "SOPInstanceUID", "?") for i in (k, k + 1)]
        raise InputError(
            f"{name}: two instances at the same slice position {positions[k]:.3f} mm ({uids[0]}, {uids[1]}); "
            "several echoes or time points in one series are not supported"
        )
    nominal = float(np.median(gaps))
    if np.any(np.abs(gaps - nominal) > SPACING_REL_TOL * nominal):
        raise InputError(
            f"{name}: slice spacing is not uniform (gaps {np.round(gaps, 3).min():g}..{np.round(gaps, 3).max():g} mm); "
            "an instance may be missing"
        )
    sorted_ipp = ipp[order]
    offsets = sorted_ipp - sorted_ipp[0]
    shear = offsets - np.outer(offsets @ normal, normal)
    if np.abs(shear).max() > SHEAR_TOL_MM + SPACING_REL_TOL * nominal:
        raise InputError(f"{name}: slice positions do not follow the slice normal (gantry tilt or sheared stack)")
    dr, dc = spacing[0]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = (sorted_ipp[-1] - sorted_ipp[0]) / (len(datasets) - 1)
    lps[:3, 3] = sorted_ipp[0]
    rows, cols = next(iter(sizes))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return SeriesGeometry(tuple(int(i) for i in order), (cols, rows, len(datasets)), affine)


def _pixels(ds: Any, name: str) -> np.ndarray:
    uid = getattr(ds, "SOPInstanceUID", "?")
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as exc:  # pydicom raises many types for broken or undecodable pixel data
        raise InputError(f"{name}: instance {uid} cannot be read ({type(exc).__name__}: {exc})") from exc
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return pixels * np.float32(slope) + np.float32(intercept)


def series_volume(
    datasets: Sequence[Any], name: str, *, max_voxels: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(float32 volume (x, y, z), RAS affine, datasets in slice order) of one series."""
    geometry = series_geometry(datasets, name)
    voxels = int(np.prod(geometry.shape))
    if max_voxels is not None and voxels > max_voxels:
        raise InputError(f"{name}: {voxels:,} voxels, more than the {max_voxels:,} accepted")
    ordered = [datasets[i] for i in geometry.order]
    cols, rows, n = geometry.shape
    frames = np.empty((n, rows, cols), dtype=np.float32)  # slice-major, as stored
    for k, ds in enumerate(ordered):
        pixels = _pixels(ds, name)
        if pixels.shape != (rows, cols):
            raise InputError(f"{name}: instance {ds.SOPInstanceUID} pixel data has shape {pixels.shape}")
        frames[k] = pixels
    if not np.all(np.isfinite(frames)):
        raise InputError(f"{name}: pixel data contains NaN or Inf values")
    # (x, y, z) = (column, row, slice): a transposed view, Fortran-ordered like NIfTI itself
    return frames.transpose(2, 1, 0), geometry.affine, ordered
