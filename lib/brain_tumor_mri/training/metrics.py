"""Segmentation metrics per BraTS region: Dice and HD95 (challenge ranking), IoU, sensitivity, specificity.

Conventions (BraTS): both masks empty -> Dice 1 and HD95 0; exactly one empty -> Dice 0
and HD95 = ``EMPTY_HD95`` (373.13 mm, the diagonal of the 240x240x155 1 mm BraTS grid).
HD95 is the larger of the two directed 95th-percentile surface distances, in mm.
IoU (Jaccard) follows the Dice rule for empty masks. Sensitivity TP / (TP + FN) is
undefined (``None``) when the reference is empty; specificity TN / (TN + FP) is computed
over the whole volume, as the BraTS evaluation does (so it is dominated by background and
is close to 1 for any sensible prediction). ``region_scores`` (Dice, HD95) is what training
validates with; ``region_metrics`` adds the rest for the ``evaluate`` command.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..labels import REGIONS, region_mask

logger = logging.getLogger(__name__)

#: HD95 reported when exactly one of prediction and ground truth is empty (BraTS value).
EMPTY_HD95 = 373.13


def _as_bool(mask: np.ndarray) -> np.ndarray:
    """Any array-like (numpy or torch) as a numpy bool array."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask).astype(bool)


def dice(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Dice overlap of two binary masks; 1.0 when both are empty."""
    p, g = _as_bool(pred_mask), _as_bool(gt_mask)
    if p.shape != g.shape:
        raise ValueError(f"dice: shapes differ {p.shape} vs {g.shape}")
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a mask (voxels with a face neighbour outside it)."""
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def hd95(pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: float | Sequence[float] = 1.0) -> float:
    """Symmetric 95th-percentile Hausdorff distance between mask surfaces, in mm."""
    p, g = _as_bool(pred_mask), _as_bool(gt_mask)
    if p.shape != g.shape:
        raise ValueError(f"hd95: shapes differ {p.shape} vs {g.shape}")
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0
    if not has_p or not has_g:
        return EMPTY_HD95
    if isinstance(spacing, (int, float, np.floating, np.integer)):
        sampling = [float(spacing)] * p.ndim
    else:
        sampling = [float(s) for s in spacing]
    sp, sg = _surface(p), _surface(g)
    to_g = ndimage.distance_transform_edt(~sg, sampling=sampling)[sp]
    to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)[sg]
    return float(max(np.percentile(to_g, 95), np.percentile(to_p, 95)))


def region_scores(
    pred_label: np.ndarray, gt_label: np.ndarray, spacing: float | Sequence[float] = 1.0, with_hd95: bool = True
) -> dict[str, dict[str, float]]:
    """``{region: {"dice": .., "hd95": ..}}`` for each BraTS region of two internal labels."""
    pred, gt = np.asarray(_label_array(pred_label)), np.asarray(_label_array(gt_label))
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    out: dict[str, dict[str, float]] = {}
    for region in REGIONS:
        p, g = region_mask(pred, region), region_mask(gt, region)
        out[region] = {"dice": dice(p, g)}
        if with_hd95:
            out[region]["hd95"] = hd95(p, g, spacing)
    return out


def overlap_metrics(pred_mask: np.ndarray, gt_mask: np.ndarray) -> dict[str, float | None]:
    """Dice, IoU, sensitivity and whole-volume specificity of two binary masks (empty rules above)."""
    p, g = _as_bool(pred_mask), _as_bool(gt_mask)
    if p.shape != g.shape:
        raise ValueError(f"overlap metrics: shapes differ {p.shape} vs {g.shape}")
    tp = int(np.logical_and(p, g).sum())
    n_p, n_g = int(p.sum()), int(g.sum())
    fp, fn = n_p - tp, n_g - tp
    tn = p.size - tp - fp - fn
    union = tp + fp + fn
    return {
        "dice": 1.0 if n_p + n_g == 0 else 2.0 * tp / (n_p + n_g),
        "iou": 1.0 if union == 0 else tp / union,
        "sensitivity": None if n_g == 0 else tp / n_g,
        "specificity": None if tn + fp == 0 else tn / (tn + fp),
    }


def region_metrics(
    pred_label: np.ndarray, gt_label: np.ndarray, spacing: float | Sequence[float] = 1.0
) -> dict[str, dict[str, float | None]]:
    """``{region: {dice, hd95, iou, sensitivity, specificity, reference_empty}}`` per BraTS region."""
    pred, gt = np.asarray(_label_array(pred_label)), np.asarray(_label_array(gt_label))
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    out: dict[str, dict[str, float | None]] = {}
    for region in REGIONS:
        p, g = region_mask(pred, region), region_mask(gt, region)
        scores = overlap_metrics(p, g)
        out[region] = {"dice": scores["dice"], "hd95": hd95(p, g, spacing), "iou": scores["iou"],
                       "sensitivity": scores["sensitivity"], "specificity": scores["specificity"],
                       "reference_empty": float(not g.any())}  # fmt: skip
    return out


def _label_array(label: np.ndarray) -> np.ndarray:
    """A label (numpy or torch) as a numpy integer array."""
    if hasattr(label, "detach"):
        label = label.detach().cpu().numpy()
    return np.asarray(label)


def mean_scores(per_case: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Average ``region_scores`` results over cases, per region and metric."""
    if not per_case:
        return {}
    out: dict[str, dict[str, float]] = {}
    for region, metrics in per_case[0].items():
        out[region] = {m: float(np.mean([c[region][m] for c in per_case])) for m in metrics}
    return out
