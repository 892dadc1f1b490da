"""``brain-tumor evaluate``: BraTS-region Dice/HD95 from label files, table and CSV."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from brain_tumor_mri.cli import main as cli_main
from brain_tumor_mri.commands.evaluate import evaluate_pairs


def _save(path, data, spacing=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.uint8), np.diag([spacing] * 3 + [1.0])), str(path))


def test_scores_match_hand_computed_values(tmp_path):
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[5:15, 5:15, 5:15] = 2  # 1000 voxels WT
    gt[8:12, 8:12, 8:12] = 4  # BraTS 2021 enhancing -> TC = ET = 64 voxels
    pred = np.zeros_like(gt)
    pred[5:15, 5:15, 5:10] = 2  # half of WT
    pred[8:12, 8:12, 8:12] = 3
    _save(tmp_path / "gt" / "A_seg.nii.gz", gt)
    _save(tmp_path / "pred" / "A-seg.nii.gz", pred)
    rows = evaluate_pairs(tmp_path / "pred", tmp_path / "gt", gt_conv="brats2021")
    assert [r["case_id"] for r in rows] == ["A"]
    wt_pred = 500 + 64 - 2 * 4 * 4  # ET block overlaps the half-WT slab on z 8..9
    assert rows[0]["whole_tumor_dice"] == pytest.approx(round(2 * wt_pred / (wt_pred + 1000), 4))
    assert rows[0]["enhancing_tumor_dice"] == 1.0
    assert rows[0]["tumor_core_hd95"] == 0.0


def test_cli_writes_csv_and_refuses_unmatched(tmp_path, caplog):
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:5, 2:5, 2:5] = 1
    _save(tmp_path / "p" / "X.nii.gz", lab)
    _save(tmp_path / "g" / "X-seg.nii.gz", lab)
    assert cli_main(["evaluate", str(tmp_path / "p"), str(tmp_path / "g"), "--csv", str(tmp_path / "e.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "e.csv")))
    assert rows[0]["case_id"] == "X" and float(rows[0]["whole_tumor_dice"]) == 1.0
    _save(tmp_path / "g2" / "Y.nii.gz", lab)
    assert cli_main(["evaluate", str(tmp_path / "p"), str(tmp_path / "g2")]) == 2
    assert "no case ids in common" in caplog.text
