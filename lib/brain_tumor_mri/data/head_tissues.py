"""A head-tissue label map of Colin27's real head (scalp, fat, muscle, skull, marrow, eyes...).

Public 2D brain-tumour pictures show the whole head, so the generator's 2D pictures put the
case's brain inside a real one: Colin27's ``ch2.nii.gz`` (1 mm T1 with scalp, skull, orbits
and face down to the skull base). Its tissues are classified once per process by this
project's own rules on the T1 intensity (dark / medium / bright, thresholds from the brain's
own GM and WM levels) and geometry (distance from the intracranial cavity and the skin):

- inside the intracranial cavity: brain, a dura lining and CSF;
- within 12 mm outside it: bright = diploic marrow, dark = skull tables (bone);
- further out: bright = fat (scalp, orbit), medium = muscle and soft tissue, dark = air
  spaces and skull-base bone (sinuses); the outer 2 mm are skin;
- eyes: dark fluid blobs in the orbits (vitreous).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy_sources import colin_head
from .tissue_model import fill_holes_2d, fit_gmm_1d, largest_component

logger = logging.getLogger(__name__)

HEAD_LABELS: dict[str, int] = {
    "air": 0, "skin": 1, "fat": 2, "muscle": 3, "bone": 4, "marrow": 5, "csf": 6, "eye": 7, "sinus": 8,
    "brain": 9, "dura": 10,
}  # fmt: skip
#: Only brain above this world z (mm) enters the head fit (see ``head2d``).
FIT_ABOVE_Z_MM = -20.0
#: MNI box (mm) that holds both eyeballs.
_ORBITS_MM = ((-55.0, 55.0), (30.0, 85.0), (-60.0, -15.0))


@dataclass(frozen=True)
class Head:
    """Colin27's head on its 1 mm RAS grid: tissue labels, the T1 (for texture), brain moments."""

    labels: np.ndarray  # uint8 (X, Y, Z), HEAD_LABELS values
    t1: np.ndarray  # float32 (X, Y, Z), Colin's T1 scaled so white matter is 1
    origin: np.ndarray  # world mm of voxel (0, 0, 0)
    brain_centre: np.ndarray  # world mm centroid of the brain mask
    brain_std: np.ndarray  # per-axis world-mm std of the brain mask


@functools.lru_cache(maxsize=1)
def load_head() -> Head:
    """Colin27's head-tissue label map (computed once per process, about 3 s)."""
    t1, brain, origin = colin_head()
    (_, mu_gm, mu_wm), _ = fit_gmm_1d(t1[brain])
    labels = classify_head(t1, brain, float(mu_gm), float(mu_wm))
    idx = np.argwhere(brain).astype(np.float64) + origin
    idx = idx[idx[:, 2] > FIT_ABOVE_Z_MM]
    logger.debug("Colin27 head labels: %s", {k: int((labels == v).sum()) for k, v in HEAD_LABELS.items()})
    return Head(labels, (t1 / mu_wm).astype(np.float32), origin, idx.mean(axis=0), idx.std(axis=0))


def classify_head(t1: np.ndarray, brain: np.ndarray, mu_gm: float, mu_wm: float) -> np.ndarray:
    """Head-tissue labels of a T1 head with a known brain mask (rules in the module docstring)."""
    smooth = ndimage.gaussian_filter(t1.astype(np.float32), 0.7)
    head = largest_component(smooth > 0.12 * mu_gm)
    head = fill_holes_2d(ndimage.binary_closing(head, iterations=3) | head, axis=2)
    icv = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=5))
    icv = ndimage.binary_dilation(icv, iterations=2) & head
    from_skin = ndimage.distance_transform_edt(head)
    from_icv = ndimage.distance_transform_edt(~icv)
    dark = smooth < 0.55 * mu_gm
    bright = smooth > 0.5 * (mu_gm + mu_wm) * 1.1
    labels = np.zeros(t1.shape, dtype=np.uint8)
    outside = head & ~icv
    shell = outside & (from_icv <= 12.0)
    labels[outside] = HEAD_LABELS["muscle"]
    labels[outside & bright] = HEAD_LABELS["fat"]
    labels[outside & dark] = HEAD_LABELS["sinus"]
    labels[shell & dark] = HEAD_LABELS["bone"]
    labels[shell & bright & (from_skin > 3.0)] = HEAD_LABELS["marrow"]
    labels[_eyes(smooth, outside, dark)] = HEAD_LABELS["eye"]
    labels[head & (from_skin <= 2.0)] = HEAD_LABELS["skin"]
    labels[icv] = HEAD_LABELS["csf"]
    labels[icv & ~ndimage.binary_erosion(icv)] = HEAD_LABELS["dura"]
    labels[brain] = HEAD_LABELS["brain"]
    return labels


def _eyes(smooth: np.ndarray, outside: np.ndarray, dark: np.ndarray) -> np.ndarray:
    """Vitreous: the two largest dark fluid blobs (4-12 mL) in the orbit box."""
    origin = np.array([-90.0, -125.0, -71.0])  # Colin27's grid (checked by colin_head's affine)
    box = tuple(slice(int(lo - o), int(hi - o)) for (lo, hi), o in zip(_ORBITS_MM, origin))
    fluid = np.zeros(smooth.shape, dtype=bool)
    fluid[box] = ndimage.binary_opening(outside[box] & dark[box], iterations=2)
    comps, n = ndimage.label(fluid)
    if n == 0:
        return fluid
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    keep = [i for i in np.argsort(sizes)[::-1][:2] if 2500 <= sizes[i] <= 20000]
    eyes = np.isin(comps, keep)
    return ndimage.binary_closing(eyes, iterations=2)
