"""What the segmentation says about a tumour's type: compartments, count, location, depth.

Radiologists tell the tumour types apart mostly by where the lesion sits and how it is
built, cues a segmentation already carries:

* **compartment volumes** (``log_wt``, ``log_tc``, ``log_et``, on a log scale because
  volumes span 0.5-200 mL) and **composition** (``edema_frac``: share of the whole tumour
  that is edema, large around gliomas and metastases, small around pituitary adenomas;
  ``et_frac_tc``: share of the core that enhances, near 1 for meningiomas and adenomas,
  lower around a necrotic glioma core);
* **how many lesions** (``n_lesions``: components of at least ``MIN_LESION_ML``, capped
  at 5) and how dominant the largest is (``largest_share``);
* **where the largest lesion lies** relative to the brain, in brain standard deviations
  along the RAS axes: ``rel_lat`` (distance from the midline, unsigned), ``rel_ap``,
  ``rel_is``. Pituitary adenomas sit low and central (sella turcica), meningiomas on the
  convexity or the falx, gliomas in a hemisphere;
* **how deep it reaches** into the brain (Euclidean distance to the brain's edge, as a
  share of the deepest point of the brain): ``depth_mean`` and ``depth_max`` of the
  lesion, ``core_depth`` of its core, and ``surface_frac``, the share of the lesion within
  ``SURFACE_MM`` of the edge. Extra-axial tumours (meningioma, pituitary) hug the edge;
  intra-axial gliomas reach deep.

The brain is the input's non-zero region (``imageio.nonzero_mask``: skull-stripped
BraTS-style input, where the background is 0). Geometry is computed on a grid strided to about ``GRID_MM`` so a 1 mm
case costs the same as a 2 mm one (a few tenths of a second); volumes use every voxel.
A label without tumour gives zeros for every lesion feature. The same function serves
fitting (``training/lesion_type_fit.py``) and inference (``inference/lesion_type.py``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..imageio import voxel_sizes_mm
from ..labels import REGIONS
from .measure import voxel_volume_ml

#: Feature order of every vector this module returns and every model fitted on them.
FEATURE_NAMES: tuple[str, ...] = (
    "log_wt", "log_tc", "log_et", "edema_frac", "et_frac_tc", "n_lesions", "largest_share",
    "rel_lat", "rel_ap", "rel_is", "depth_mean", "depth_max", "surface_frac", "core_depth",
)  # fmt: skip
MIN_LESION_ML = 0.5
MAX_LESIONS = 5
SURFACE_MM = 6.0
GRID_MM = 2.0


def _strides(affine: np.ndarray) -> tuple[int, int, int]:
    zooms = voxel_sizes_mm(affine)
    return tuple(max(1, int(round(GRID_MM / max(float(z), 1e-6)))) for z in zooms)  # type: ignore[return-value]


def lesion_features(label: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The ``FEATURE_NAMES`` vector (float64) of an internal-convention label on the brain's grid."""
    label = np.asarray(label)
    affine = np.asarray(affine, dtype=np.float64)
    out = dict.fromkeys(FEATURE_NAMES, 0.0)
    vox_ml = voxel_volume_ml(affine)
    counts = np.bincount(label.ravel().astype(np.int64), minlength=4)
    wt_n = float(sum(counts[v] for v in REGIONS["whole_tumor"]))
    tc_n = float(sum(counts[v] for v in REGIONS["tumor_core"]))
    et_n = float(sum(counts[v] for v in REGIONS["enhancing_tumor"]))
    out["log_wt"], out["log_tc"], out["log_et"] = (float(np.log1p(n * vox_ml)) for n in (wt_n, tc_n, et_n))
    out["edema_frac"] = (wt_n - tc_n) / wt_n if wt_n else 0.0
    out["et_frac_tc"] = et_n / tc_n if tc_n else 0.0

    s = _strides(affine)
    grid = (slice(None, None, s[0]), slice(None, None, s[1]), slice(None, None, s[2]))
    coarse = affine.copy()
    coarse[:3, :3] = affine[:3, :3] * np.asarray(s, dtype=np.float64)
    lab, brn = label[grid], np.asarray(brain, dtype=bool)[grid]
    wt = np.isin(lab, REGIONS["whole_tumor"])
    if not wt.any() or not brn.any():
        return np.array([out[k] for k in FEATURE_NAMES], dtype=np.float64)
    parts, n = ndimage.label(wt, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:] * voxel_volume_ml(coarse)
    out["n_lesions"] = float(min(MAX_LESIONS, int((sizes >= MIN_LESION_ML).sum())))
    out["largest_share"] = float(sizes.max() / sizes.sum())
    largest = parts == int(np.argmax(sizes)) + 1

    to_ras = coarse[:3, :3].T
    brain_ras = np.argwhere(brn) @ to_ras
    centre, spread = brain_ras.mean(axis=0), brain_ras.std(axis=0) + 1e-6
    rel = ((np.argwhere(largest) @ to_ras).mean(axis=0) - centre) / spread
    out["rel_lat"], out["rel_ap"], out["rel_is"] = abs(float(rel[0])), float(rel[1]), float(rel[2])

    depth = ndimage.distance_transform_edt(brn, sampling=voxel_sizes_mm(coarse))
    deepest = float(depth.max()) or 1.0
    d = depth[largest]
    out["depth_mean"], out["depth_max"] = float(d.mean()) / deepest, float(d.max()) / deepest
    out["surface_frac"] = float((d <= SURFACE_MM).mean())
    core = largest & np.isin(lab, REGIONS["tumor_core"])
    out["core_depth"] = float(depth[core].mean()) / deepest if core.any() else out["depth_mean"]
    return np.array([out[k] for k in FEATURE_NAMES], dtype=np.float64)
