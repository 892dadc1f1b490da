"""Cheap checks that an input looks like what the classifiers were trained on.

A network answers every input with a class, so a photograph or a noise image can come back
as "pituitary 0.995". These checks look at the input itself, before any network: a failed
check never rejects the request (the input may still be a valid, unusual scan); it makes the
answer low-confidence with the check's reason. All thresholds are constants below, chosen
from measurements on the generator's 2D pictures and 3D cases (every one passes; see
``tests/unit/inference/test_input_checks.py``) with wide margins, so they flag inputs that
are clearly not brain MRI rather than scans that are merely unusual.

2D (a slice picture), on the picture scaled to at most 256 px:
  colour        mean chroma (max - min over R, G, B) / intensity range > ``MAX_CHROMA``
  contrast      (99.5th - 0.5th percentile) / largest magnitude < ``MIN_CONTRAST`` (near-blank;
                an MR slice has dark air beside bright tissue)
  aspect        long side / short side > ``MAX_ASPECT``
  foreground    share of pixels brighter than 10 % of the range outside ``FOREGROUND_RANGE``
  background    share of the outer border that is dark < ``MIN_DARK_BORDER`` (MR has air around the head)
  grey_levels   fewer than ``MIN_GREY_LEVELS`` of 64 intensity levels each hold >= 0.5 % of the foreground
  fragmented    the 3 largest 4-connected foreground parts (brain, skull, scalp) hold
                < ``MIN_MAIN_PARTS`` of the foreground
  texture       neighbouring-pixel correlation < ``MIN_NEIGHBOUR_CORRELATION`` (noise-like)
3D (four sequences, skull-stripped), on the non-zero region of the input grid:
  brain_extent  bounding box of the non-zero voxels outside ``BRAIN_EXTENT_MM`` along any axis
  brain_fill    non-zero voxels / bounding-box voxels > ``MAX_BRAIN_FILL`` (a box, or a
                non-skull-stripped volume whose background is not zero)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..imageio import nonzero_mask, voxel_sizes_mm

logger = logging.getLogger(__name__)

MAX_CHROMA = 0.06
MIN_CONTRAST = 0.15
MAX_ASPECT = 3.0
FOREGROUND_RANGE = (0.04, 0.95)
MIN_DARK_BORDER = 0.15
MIN_GREY_LEVELS = 8
MIN_MAIN_PARTS = 0.5
MIN_NEIGHBOUR_CORRELATION = 0.5
BRAIN_EXTENT_MM = (70.0, 230.0)
MAX_BRAIN_FILL = 0.85
_MAX_SIDE = 256


@dataclass(frozen=True)
class Reason:
    """Why an answer is low-confidence: a stable ``code`` for programs, a ``message`` for people."""

    code: str
    message: str

    def as_params(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def _downsample(arr: np.ndarray) -> np.ndarray:
    """Every k-th pixel so the long side is at most ``_MAX_SIDE`` (statistics only)."""
    step = max(1, int(np.ceil(max(arr.shape[:2]) / _MAX_SIDE)))
    return arr[::step, ::step]


def _unit(grey: np.ndarray) -> np.ndarray:
    """Grey scaled to [0, 1] from its minimum to the 99.5th percentile of non-minimum pixels."""
    lo = float(grey.min())
    above = grey[grey > lo]
    hi = float(np.percentile(above, 99.5)) if above.size else lo + 1.0
    return np.clip((grey - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _chroma(raw: np.ndarray) -> float:
    """Mean (max - min over the colour channels) relative to the intensity range; 0 for grey."""
    if raw.ndim != 3 or raw.shape[-1] < 3:
        return 0.0
    rgb = raw[..., :3].astype(np.float32)
    span = float(rgb.max() - rgb.min())
    return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean() / span) if span > 0 else 0.0


def _neighbour_correlation(u: np.ndarray) -> float:
    """Mean Pearson correlation of horizontally and vertically adjacent pixels."""
    values = []
    for a, b in ((u[:, :-1], u[:, 1:]), (u[:-1, :], u[1:, :])):
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        values.append(float((a * b).sum()) / den if den > 0 else 0.0)
    return float(np.mean(values))


def image_stats_2d(raw: np.ndarray, grey: np.ndarray) -> dict[str, float]:
    """The measurements the 2D checks compare with their thresholds."""
    u = _unit(_downsample(grey))
    h, w = grey.shape
    fg = u > 0.1
    ring = max(1, round(0.03 * min(u.shape)))
    border = np.concatenate([u[:ring].ravel(), u[-ring:].ravel(), u[:, :ring].ravel(), u[:, -ring:].ravel()])
    small = _downsample(grey)
    p_lo, p_hi = (float(v) for v in np.percentile(small, [0.5, 99.5]))
    stats = {
        "chroma": _chroma(_downsample(raw)),
        "contrast": (p_hi - p_lo) / max(abs(p_hi), abs(p_lo), 1e-6),
        "aspect": max(h, w) / max(min(h, w), 1),
        "foreground": float(fg.mean()),
        "dark_border": float((border <= 0.1).mean()),
        "grey_levels": 0.0,
        "main_parts": 0.0,
        "neighbour_correlation": _neighbour_correlation(u),
    }
    if fg.any():
        hist = np.bincount(np.minimum((u[fg] * 64).astype(np.int64), 63), minlength=64)
        stats["grey_levels"] = float((hist >= 0.005 * fg.sum()).sum())
        parts, n = ndimage.label(fg)
        sizes = np.sort(np.bincount(parts.ravel())[1:])[::-1]
        stats["main_parts"] = float(sizes[:3].sum() / fg.sum()) if n else 0.0
    return stats


def check_image_2d(raw: np.ndarray, grey: np.ndarray) -> tuple[list[Reason], dict[str, float]]:
    """Reasons a 2D picture does not look like a brain MR slice (empty list: none), and the stats.

    ``raw`` is the decoded picture ((H, W) or (H, W, 3)); ``grey`` its (H, W) grey version.
    """
    s = image_stats_2d(raw, grey)
    reasons = []
    if s["chroma"] > MAX_CHROMA:
        reasons.append(Reason("input.colour", f"colour image (chroma {s['chroma']:.2f}); MR slices are greyscale"))
    if s["contrast"] < MIN_CONTRAST:
        reasons.append(Reason("input.low_contrast", f"near-blank picture (contrast {s['contrast']:.2f}); an MR "
                              "slice has dark air next to bright tissue"))  # fmt: skip
    if s["aspect"] > MAX_ASPECT:
        reasons.append(Reason("input.aspect", f"aspect ratio {s['aspect']:.1f}:1 is unlike a brain slice"))
    lo, hi = FOREGROUND_RANGE
    if not lo <= s["foreground"] <= hi:
        reasons.append(Reason("input.foreground", f"{100 * s['foreground']:.0f} % of the picture is bright; "
                              f"a head slice covers {100 * lo:.0f}-{100 * hi:.0f} %"))  # fmt: skip
    if s["dark_border"] < MIN_DARK_BORDER:
        reasons.append(Reason("input.background", f"only {100 * s['dark_border']:.0f} % of the border is dark; "
                              "an MR slice has air around the head"))  # fmt: skip
    if s["grey_levels"] < MIN_GREY_LEVELS:
        reasons.append(Reason("input.grey_levels", f"{s['grey_levels']:.0f} grey levels in use: a graphic or "
                              "near-blank picture, not an MR image"))  # fmt: skip
    if s["main_parts"] < MIN_MAIN_PARTS:
        reasons.append(Reason("input.fragmented", f"bright region is fragmented (3 largest parts hold "
                              f"{100 * s['main_parts']:.0f} %); a head is a few connected regions"))  # fmt: skip
    if s["neighbour_correlation"] < MIN_NEIGHBOUR_CORRELATION:
        reasons.append(Reason("input.texture", f"neighbouring pixels barely correlate "
                              f"({s['neighbour_correlation']:.2f}): noise-like, not anatomy"))  # fmt: skip
    return reasons, s


def volume_stats_3d(stack: np.ndarray, affine: np.ndarray) -> dict[str, float | list[float]]:
    """Extent (mm, RAS order) and bounding-box fill of the non-zero region of a (C, x, y, z) case."""
    mask = nonzero_mask(stack)
    if not mask.any():
        return {"extent_mm": [0.0, 0.0, 0.0], "fill": 0.0}
    zooms = voxel_sizes_mm(affine)
    lengths, box = [], 1
    for axis in range(3):
        hits = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        n = int(hits[-1] - hits[0] + 1)
        lengths.append(n * float(zooms[axis]))
        box *= n
    ornt = nib.orientations.io_orientation(affine)  # voxel axis i -> RAS axis ornt[i, 0]
    extent = [0.0, 0.0, 0.0]
    for axis, length in enumerate(lengths):
        extent[int(ornt[axis, 0])] = round(length, 1)
    return {"extent_mm": extent, "fill": float(mask.sum() / box)}


def check_case_3d(stack: np.ndarray, affine: np.ndarray) -> tuple[list[Reason], dict[str, float | list[float]]]:
    """Reasons a four-sequence case does not look like a skull-stripped adult brain, and the stats."""
    s = volume_stats_3d(stack, affine)
    extent, fill = s["extent_mm"], s["fill"]
    assert isinstance(extent, list) and isinstance(fill, float)
    reasons = []
    lo, hi = BRAIN_EXTENT_MM
    if any(not lo <= e <= hi for e in extent):
        sizes = " x ".join(f"{e:.0f}" for e in extent)
        reasons.append(Reason("input.brain_extent", f"non-zero region is {sizes} mm (R-L x A-P x S-I); a skull-"
                              f"stripped adult brain spans {lo:.0f}-{hi:.0f} mm per axis"))  # fmt: skip
    if fill > MAX_BRAIN_FILL:
        reasons.append(Reason("input.brain_fill", f"non-zero voxels fill {100 * fill:.0f} % of their bounding box: "
                              "background is not zero (not skull-stripped?) or not a brain"))  # fmt: skip
    return reasons, s
