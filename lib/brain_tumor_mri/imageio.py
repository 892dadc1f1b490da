"""Reading and writing volumes with the checks that turn bad files into clear errors.

Every reader raises ``InputError`` (a ``ValueError``) naming the file and the problem:
unreadable or truncated files, non-finite voxels, wrong dimensionality, geometry that
disagrees between sequences, volumes too large to be a scan.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from .labels import SEQUENCES

logger = logging.getLogger(__name__)

AFFINE_TOL_MM = 1e-3


class InputError(ValueError):
    """Bad user input (file, geometry, values); the server answers it with a 4xx."""


def open_nifti(path: str | Path) -> SpatialImage:
    """Open a NIfTI file lazily (header now, voxels on access) as a spatial image."""
    return cast(SpatialImage, nib.load(str(path)))


def load_volume(
    path: str | Path, *, ndim: int | None = 3, max_voxels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI/NRRD volume as float32 (x, y, z) plus its 4x4 affine (RAS, mm)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: file not found")
    try:
        if path.name.lower().endswith(".nrrd"):
            data, affine = _load_nrrd(path)
        else:
            img = open_nifti(path)
            if max_voxels is not None and int(np.prod(img.shape)) > max_voxels:
                raise InputError(
                    f"{path.name}: volume of shape {tuple(img.shape)} has {int(np.prod(img.shape)):,} voxels, "
                    f"more than the {max_voxels:,} accepted"
                )
            data = np.asarray(img.dataobj, dtype=np.float32)
            affine = np.asarray(img.affine, dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt/truncated files
        raise InputError(f"{path.name}: cannot read image ({type(exc).__name__}: {exc})") from exc
    data = np.squeeze(data) if ndim == 3 and data.ndim == 4 and 1 in data.shape[3:] else data
    if ndim is not None and data.ndim != ndim:
        raise InputError(f"{path.name}: expected a {ndim}D image, got shape {tuple(data.shape)}")
    if max_voxels is not None and data.size > max_voxels:
        raise InputError(f"{path.name}: {data.size:,} voxels is more than the {max_voxels:,} accepted")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path.name}: image contains NaN or Inf voxels")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{path.name}: image has an invalid (singular or non-finite) affine")
    return data, affine


def _load_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    data, header = nrrd.read(str(path))
    directions = np.asarray(header.get("space directions", np.eye(3)), dtype=np.float64)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = directions.T
    affine[:3, 3] = origin
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return data.astype(np.float32), affine


def voxel_sizes_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) along the array axes: the norms of the affine's first three columns."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def nonzero_mask(stack: np.ndarray) -> np.ndarray:
    """Voxels where any channel of a (C, x, y, z) stack is non-zero (the brain of skull-stripped input).

    In the stack's memory order (Fortran for NIfTI input); a caller that combines it with
    C-ordered arrays voxel by voxel converts it once (see ``Segmenter.segment``).
    """
    return np.any(np.asarray(stack) != 0, axis=0)


def check_same_geometry(ref_name: str, ref_shape, ref_affine, name: str, shape, affine) -> None:
    """Raise ``InputError`` when two volumes are not on the same voxel grid."""
    if tuple(ref_shape) != tuple(shape):
        raise InputError(f"{name}: shape {tuple(shape)} differs from {ref_name} shape {tuple(ref_shape)}")
    if not np.allclose(ref_affine, affine, atol=AFFINE_TOL_MM):
        raise InputError(f"{name}: affine differs from {ref_name} (sequences must be co-registered on one grid)")


def load_sequences(
    paths: dict[str, Path], *, allow_missing: bool = False, max_voxels: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load a case's sequences as a (4, x, y, z) float32 stack in ``SEQUENCES`` order.

    Returns the stack, the shared affine, and the keys that were missing (zero-filled,
    only when ``allow_missing``). Missing sequences otherwise raise ``InputError``.
    """
    missing = [s for s in SEQUENCES if s not in paths]
    if len(missing) == len(SEQUENCES):
        raise InputError("case has no sequences")
    per_seq = None if max_voxels is None else max_voxels // len(SEQUENCES)
    ref: tuple[str, tuple, np.ndarray] | None = None
    arrays: dict[str, np.ndarray] = {}
    for key in SEQUENCES:
        if key not in paths:
            continue
        data, affine = load_volume(paths[key], ndim=3, max_voxels=per_seq)
        name = f"{key} ({Path(paths[key]).name})"
        if ref is None:
            ref = (name, data.shape, affine)
        else:
            check_same_geometry(ref[0], ref[1], ref[2], name, data.shape, affine)
        arrays[key] = data
    assert ref is not None
    if missing and not allow_missing:  # after reading the others, so their own problems are named first
        names = ", ".join(missing)
        raise InputError(f"case is missing sequence(s): {names}; expected {', '.join(SEQUENCES)}")
    shape = ref[1]
    stack = np.stack([arrays.get(k, np.zeros(shape, np.float32)) for k in SEQUENCES])
    return stack, ref[2], missing


def storage_dtype(data: np.ndarray) -> type:
    """int16 when every voxel is an integer in range (as scanners write), else float32."""
    if data.size and np.all(data == np.rint(data)) and data.min() >= -32768 and data.max() <= 32767:
        return np.int16
    return np.float32


def save_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, dtype=np.uint8) -> Path:
    """Write ``data`` with ``affine`` as NIfTI (qform and sform set)."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return Path(path)


def save_label(path: str | Path, label: np.ndarray, affine: np.ndarray) -> Path:
    """Write a uint8 label as NIfTI or NRRD (chosen by the file extension)."""
    path = Path(path)
    if path.name.lower().endswith(".nrrd"):  # .nrrd and .seg.nrrd: with Slicer's segment names and colours
        from .imageio_seg import save_nrrd_label

        return save_nrrd_label(path, label, affine)
    return save_nifti(path, label, affine, np.uint8)
