"""IoU, sensitivity and specificity per BraTS region on hand-made masks, with the empty-mask rules."""

from __future__ import annotations

import numpy as np
import pytest

from brain_tumor_mri.training.metrics import EMPTY_HD95, overlap_metrics, region_metrics


def test_overlap_metrics_on_hand_made_masks():
    gt = np.zeros((10, 10, 10), bool)
    gt[0:4, 0:5, 0:5] = True  # 100 voxels
    pred = np.zeros_like(gt)
    pred[2:6, 0:5, 0:5] = True  # 100 voxels, 50 shared
    m = overlap_metrics(pred, gt)
    assert m["dice"] == pytest.approx(2 * 50 / 200)
    assert m["iou"] == pytest.approx(50 / 150)
    assert m["sensitivity"] == pytest.approx(50 / 100)
    assert m["specificity"] == pytest.approx((1000 - 150) / (1000 - 100))  # TN / (TN + FP) over the whole volume


@pytest.mark.parametrize(
    ("pred_on", "gt_on", "expected"),
    [
        (False, False, {"dice": 1.0, "iou": 1.0, "sensitivity": None, "specificity": 1.0}),
        (True, False, {"dice": 0.0, "iou": 0.0, "sensitivity": None, "specificity": 1 - 8 / 64}),
        (False, True, {"dice": 0.0, "iou": 0.0, "sensitivity": 0.0, "specificity": 1.0}),
    ],
)
def test_empty_masks_follow_the_documented_rules(pred_on, gt_on, expected):
    blob = np.zeros((4, 4, 4), bool)
    blob[:2, :2, :2] = True
    empty = np.zeros_like(blob)
    m = overlap_metrics(blob if pred_on else empty, blob if gt_on else empty)
    for key, value in expected.items():
        assert m[key] == (pytest.approx(value) if value is not None else None), key


def test_region_metrics_report_every_region_and_empty_references():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[2:8, 2:8, 2:8] = 2  # edema only: TC and ET empty in the reference
    pred = gt.copy()
    pred[4:6, 4:6, 4:6] = 3  # an enhancing spot the reference does not have
    m = region_metrics(pred, gt, 1.0)
    assert m["whole_tumor"]["dice"] == 1.0 and m["whole_tumor"]["reference_empty"] == 0.0
    assert m["whole_tumor"]["sensitivity"] == 1.0 and m["whole_tumor"]["iou"] == 1.0
    for region in ("tumor_core", "enhancing_tumor"):
        assert m[region]["reference_empty"] == 1.0
        assert m[region]["dice"] == 0.0 and m[region]["hd95"] == EMPTY_HD95 and m[region]["sensitivity"] is None
        assert m[region]["specificity"] == pytest.approx(1 - 8 / (12**3))
    with pytest.raises(ValueError, match="differs"):
        region_metrics(pred[:-1], gt)
