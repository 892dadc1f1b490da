"""Kaggle-style 2D pictures (8-bit JPEG or PNG, in a real head) cut from synthetic 3D cases.

Public 2D brain-tumour sets (figshare T1c sections in all three planes, plus mostly axial
tumour-free pictures of every contrast) are not skull stripped and vary in plane, size,
zoom, aspect, rotation, windowing and JPEG quality, so each picture draws all of those;
tumour pictures cut through the tumour. The head around the brain is Colin27's real head
(``head2d``). Metastasis cases get no pictures: they are no Kaggle class.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from .head2d import brain_moments, head_section
from .synthetic import SyntheticCase
from .synthetic_fields import smooth_noise

logger = logging.getLogger(__name__)

#: Kaggle class folder name per internal tumour class.
KAGGLE_FOLDERS: dict[str, str] = {
    "glioma": "glioma",
    "meningioma": "meningioma",
    "pituitary": "pituitary",
    "no_tumor": "notumor",
}
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
#: (column direction, row direction) in world axes for display: radiological axial/coronal
#: (patient right on the image left), sagittal with the face to the left; superior/anterior up.
_DIRECTIONS = {
    "axial": (np.array([-1.0, 0, 0]), np.array([0, -1.0, 0])),
    "coronal": (np.array([-1.0, 0, 0]), np.array([0, 0, -1.0])),
    "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
}
#: Plane and contrast mixes: tumour pictures like figshare (T1c, all planes), tumour-free
#: pictures like the public no-tumour sets (mostly axial, every contrast).
_PLANE_P = {"tumour": (0.36, 0.32, 0.32), "no_tumor": (0.7, 0.15, 0.15)}
_CONTRAST_P = {
    "tumour": {"t1c": 0.85, "t2w": 0.08, "t2f": 0.04, "t1n": 0.03},
    "no_tumor": {"t1n": 0.25, "t1c": 0.25, "t2w": 0.3, "t2f": 0.2},
}
_JPEG_P = 0.8


def kaggle_folder(tumor_type: str) -> str:
    """Kaggle class folder (``notumor`` etc.) of an internal tumour class."""
    return KAGGLE_FOLDERS[tumor_type]


def _mix(case: SyntheticCase) -> str:
    """Which plane/contrast mix a case's pictures follow."""
    return "no_tumor" if case.tumor_type == "no_tumor" else "tumour"


def draw_view(case: SyntheticCase, rng: np.random.Generator) -> tuple[str, str]:
    """Plane and contrast of one picture of ``case`` (figshare-like or no-tumour-set-like mix)."""
    mix = _mix(case)
    plane = PLANES[int(rng.choice(len(PLANES), p=_PLANE_P[mix]))]
    contrast = str(rng.choice(list(_CONTRAST_P[mix]), p=list(_CONTRAST_P[mix].values())))
    return plane, contrast


def render_slices(case: SyntheticCase, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` uint8 pictures of ``case`` with random plane, contrast, size and rotation."""
    pictures = []
    for _ in range(count):
        plane, contrast = draw_view(case, rng)
        index = pick_slice(case, plane, rng)
        pictures.append(render_slice(case, plane, contrast, index, rng)[0])
    return pictures


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


def render_slice(
    case: SyntheticCase, plane: str, contrast: str, index: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 picture (brain in a real head) of slice ``index`` in ``plane``, and its brain mask."""
    points, pixel_mm = _picture_points(case, plane, index, rng)
    vox = (points - case.affine[:3, 3][:, None, None]) / case.spacing
    brain = ndimage.map_coordinates(case.sequences[contrast], vox, order=1, mode="constant", cval=0.0)
    inside = ndimage.map_coordinates(case.brain_mask.astype(np.float32), vox, order=1, mode="constant") > 0.5
    level = float(np.median(brain[inside])) if inside.any() else 500.0
    centre, std = brain_moments(case.brain_mask, case.affine)
    head = head_section(points, centre, std, contrast, level, rng)
    picture = np.where(inside, brain, head).astype(np.float32)
    picture *= np.exp(
        np.float32(rng.uniform(0.0, 0.25)) * _smooth_2d(rng, (picture.shape[0], picture.shape[1]), 90.0 / pixel_mm)
    )
    sd = float(rng.uniform(0.005, 0.04)) * level
    picture = np.hypot(picture + rng.normal(0, sd, picture.shape), rng.normal(0, sd, picture.shape))
    return _window(picture, inside, rng), inside


def _picture_points(case: SyntheticCase, plane: str, index: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """World mm (3, H, W) of every pixel: random size, aspect, zoom, crop and small rotation."""
    width = int(rng.integers(200, 631))
    aspect = 1.0 if rng.random() < 0.6 else float(rng.uniform(0.8, 1.25))
    height = int(np.clip(round(width * aspect), 200, 630))
    col_dir, row_dir = _DIRECTIONS[plane]
    if plane == "sagittal" and rng.random() < 0.3:
        col_dir = -col_dir  # face to the right
    centre, std = brain_moments(case.brain_mask, case.affine)
    fixed = _AXIS[plane]
    centre = centre.copy()
    centre[fixed] = case.affine[fixed, 3] + index * case.spacing
    centre -= row_dir * std[np.argmax(np.abs(row_dir))] * rng.uniform(0.0, 0.35)  # heads reach below the brain
    head_mm = 4.4 * float(max(std[np.argmax(np.abs(col_dir))], std[np.argmax(np.abs(row_dir))])) + 40.0
    zoom = float(rng.uniform(0.72, 1.0)) if rng.random() > 0.15 else float(rng.uniform(1.0, 1.25))
    pixel_mm = head_mm / (max(width, height) * zoom)
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    u = np.cos(angle) * col_dir + np.sin(angle) * row_dir
    v = -np.sin(angle) * col_dir + np.cos(angle) * row_dir
    shift = rng.uniform(-0.06, 0.06, 2) * head_mm
    rows = (np.arange(height) - (height - 1) / 2.0) * pixel_mm + shift[0]
    cols = (np.arange(width) - (width - 1) / 2.0) * pixel_mm + shift[1]
    points = centre[:, None, None] + v[:, None, None] * rows[None, :, None] + u[:, None, None] * cols[None, None, :]
    return points.astype(np.float32), pixel_mm


def _smooth_2d(rng: np.random.Generator, shape: tuple[int, int], step_px: float) -> np.ndarray:
    """Smooth zero-mean 2D field (a one-slice cut of the 3D B-spline noise)."""
    axes = (np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32), np.zeros(1, np.float32))
    return smooth_noise(rng, axes, max(step_px, 4.0))[:, :, 0]


def _window(picture: np.ndarray, inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8-bit windowing as different exporters do it: percentile top, optional floor and gamma, borders."""
    ref = picture[inside] if inside.any() else picture
    top = float(np.percentile(ref, rng.uniform(98.5, 99.9))) * float(rng.uniform(0.95, 1.35)) + 1e-6
    floor = float(np.percentile(picture, 2)) * float(rng.uniform(0.0, 1.0)) if rng.random() < 0.3 else 0.0
    scaled = np.clip((picture - floor) / (top - floor), 0.0, 1.0) ** float(np.exp(rng.normal(0.0, 0.15)))
    out = np.rint(scaled * 255.0).astype(np.uint8)
    if rng.random() < 0.15:  # text-free black border, as in some exported pictures
        pad = int(rng.integers(4, 30))
        out[:pad] = 0
        out[-pad:] = 0
        out[:, :pad] = 0
        out[:, -pad:] = 0
    return out


def encode_picture(picture: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """JPEG at a random quality (most pictures) or PNG: (file bytes, extension)."""
    from PIL import Image

    image = Image.fromarray(picture)
    buf = io.BytesIO()
    if rng.random() < _JPEG_P:
        image.save(buf, format="JPEG", quality=int(rng.integers(55, 96)), subsampling=0)
        return buf.getvalue(), ".jpg"
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), ".png"


def write_slices(case: SyntheticCase, kaggle_dir: str | Path, count: int, rng: np.random.Generator) -> list[Path]:
    """Write ``count`` pictures of ``case`` to ``<kaggle_dir>/<class>/<id>_<n>.jpg`` (or ``.png``).

    Cases of a type outside the Kaggle classes (metastasis) get none.
    """
    if count <= 0 or case.tumor_type not in KAGGLE_FOLDERS:
        return []
    folder = Path(kaggle_dir) / kaggle_folder(case.tumor_type)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, picture in enumerate(render_slices(case, count, rng)):
        data, ext = encode_picture(picture, rng)
        path = folder / f"{case.case_id}_{n}{ext}"
        path.write_bytes(data)
        paths.append(path)
    return paths
