"""Kaggle-style 2D pictures (8-bit PNG, with skull and scalp) cut from synthetic 3D cases.

Public 2D brain-tumour datasets are not skull stripped and mix planes, contrasts, sizes
and small rotations, so each picture draws those at random; tumour pictures cut through
the tumour. The skull is layered by distance from the (closed) brain outline: CSF gap,
inner table (dark), diploe (fatty marrow, bright on T1), outer table, scalp fat and skin.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from .synthetic import SyntheticCase

logger = logging.getLogger(__name__)

#: Kaggle class folder name per internal tumour class.
KAGGLE_FOLDERS: dict[str, str] = {
    "glioma": "glioma",
    "meningioma": "meningioma",
    "pituitary": "pituitary",
    "no_tumor": "notumor",
}
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
_PLANE_P = (0.7, 0.15, 0.15)
_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
_CONTRAST_P = {"t1c": 0.6, "t2w": 0.2, "t2f": 0.2}
#: Head layers outside the brain: (name, min mm, max mm), innermost first.
_LAYERS: tuple[tuple[str, float, float], ...] = (
    ("csf", 1.5, 4.0),
    ("cortex", 1.5, 2.5),
    ("marrow", 2.5, 6.0),
    ("cortex", 1.5, 2.5),
    ("fat", 3.0, 7.0),
    ("skin", 1.5, 3.0),
)
#: Layer intensity per contrast, relative to the slice's brain median.
_LAYER_LEVEL: dict[str, dict[str, float]] = {
    "t1c": {"csf": 0.3, "cortex": 0.05, "marrow": 1.2, "fat": 1.5, "skin": 0.7},
    "t2w": {"csf": 2.2, "cortex": 0.05, "marrow": 0.9, "fat": 1.3, "skin": 0.6},
    "t2f": {"csf": 0.25, "cortex": 0.05, "marrow": 1.1, "fat": 1.3, "skin": 0.7},
}


def kaggle_folder(tumor_type: str) -> str:
    """Kaggle class folder (``notumor`` etc.) of an internal tumour class."""
    return KAGGLE_FOLDERS[tumor_type]


def render_slices(case: SyntheticCase, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` uint8 pictures of ``case`` with random plane, contrast, size and rotation."""
    pictures = []
    for _ in range(count):
        plane = PLANES[int(rng.choice(len(PLANES), p=_PLANE_P))]
        contrast = str(rng.choice(list(_CONTRAST_P), p=list(_CONTRAST_P.values())))
        index = pick_slice(case, plane, rng)
        pictures.append(render_slice(case, plane, contrast, index, rng)[0])
    return pictures


def render_slice(
    case: SyntheticCase, plane: str, contrast: str, index: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 picture (with skull) of slice ``index`` in ``plane``, and its brain mask."""
    image = _oriented(_take(case.sequences[contrast], plane, index))
    mask = _oriented(_take(case.brain_mask, plane, index))
    return _picture(image, mask, contrast, case.spacing, rng)


def _take(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One slice of an (x, y, z) volume in ``plane``."""
    return np.take(volume, index, axis=_AXIS[plane])


def _oriented(section: np.ndarray) -> np.ndarray:
    """Display orientation: superior/anterior up, patient right on the image left."""
    return np.ascontiguousarray(section.T[::-1, ::-1])


def pick_slice(case: SyntheticCase, plane: str, rng: np.random.Generator) -> int:
    """A slice index through the tumour (its larger sections), or through the brain if none."""
    axis = _AXIS[plane]
    other = tuple(a for a in range(3) if a != axis)
    area = (case.seg > 0).sum(axis=other)
    threshold = 0.4
    if area.max() == 0:
        area = case.brain_mask.sum(axis=other)
        threshold = 0.6
    candidates = np.flatnonzero(area >= threshold * area.max())
    return int(candidates[rng.integers(len(candidates))])


def _picture(
    image: np.ndarray, mask: np.ndarray, contrast: str, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a section onto a square canvas (rotated, padded), add the skull, map to 8 bits."""
    size = int(rng.integers(224, 513))
    rows, cols = np.nonzero(mask)
    centre = np.array([rows.mean(), cols.mean()]) if rows.size else np.array(image.shape) / 2.0
    extent_mm = (max(np.ptp(rows), np.ptp(cols)) + 1) * spacing + 2 * 20.0 if rows.size else 200.0
    pixel_mm = extent_mm / (size * rng.uniform(0.8, 0.95))
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * (pixel_mm / spacing)
    offset = centre - rot @ np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    sample = dict(matrix=rot, offset=offset, output_shape=(size, size), order=1, mode="constant", cval=0.0)
    brain = ndimage.affine_transform(image.astype(np.float32), **sample)
    inside = ndimage.affine_transform(mask.astype(np.float32), **sample) > 0.5
    level = float(np.median(brain[inside])) if inside.any() else 500.0
    head = _skull(inside, contrast, float(pixel_mm), level, rng)
    picture = np.where(inside, brain, head)
    picture = np.hypot(
        picture + rng.normal(0, 0.015 * level, picture.shape), rng.normal(0, 0.015 * level, picture.shape)
    )
    top = float(np.percentile(picture[inside], 99.7)) if inside.any() else float(picture.max() + 1e-6)
    return np.clip(picture / (top * rng.uniform(1.0, 1.15)) * 255.0, 0, 255).astype(np.uint8), inside


def _skull(inside: np.ndarray, contrast: str, pixel_mm: float, level: float, rng: np.random.Generator) -> np.ndarray:
    """Intensity of CSF gap, skull tables, marrow and scalp around the brain outline (0 in the brain)."""
    head = np.zeros(inside.shape, dtype=np.float32)
    if not inside.any():
        return head
    close_px = 20.0 / pixel_mm
    grown = ndimage.distance_transform_edt(~inside) <= close_px
    closed = ndimage.binary_fill_holes(ndimage.distance_transform_edt(grown) > close_px) | inside
    dist_mm = ndimage.distance_transform_edt(~closed) * pixel_mm
    levels = _LAYER_LEVEL[contrast]
    head[closed & ~inside] = levels["csf"] * level
    grain = ndimage.gaussian_filter(rng.standard_normal(inside.shape).astype(np.float32), 2.0)
    texture = 1.0 + 0.08 * grain / (grain.std() + 1e-6)
    outer = 0.0
    for name, lo, hi in _LAYERS:
        inner, outer = outer, outer + float(rng.uniform(lo, hi))
        head[(dist_mm > inner) & (dist_mm <= outer)] = levels[name] * level
    return head * texture


def write_slices(case: SyntheticCase, kaggle_dir: str | Path, count: int, rng: np.random.Generator) -> list[Path]:
    """Write ``count`` PNGs of ``case`` to ``<kaggle_dir>/<class>/<id>_<n>.png``."""
    from PIL import Image

    if count <= 0:
        return []
    folder = Path(kaggle_dir) / kaggle_folder(case.tumor_type)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, picture in enumerate(render_slices(case, count, rng)):
        path = folder / f"{case.case_id}_{n}.png"
        Image.fromarray(picture).save(path, optimize=True)
        paths.append(path)
    return paths
