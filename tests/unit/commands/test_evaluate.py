"""``brain-tumor evaluate``: BraTS-region Dice, HD95, IoU, sensitivity, specificity: table, CSV, summary."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from brain_tumor_mri.cli import main as cli_main
from brain_tumor_mri.commands.evaluate import evaluate_pairs, mean_interval


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


def test_summary_counts_empty_references_and_groups_by_metadata(tmp_path):
    tumour = np.zeros((10, 10, 10), np.uint8)
    tumour[2:6, 2:6, 2:6] = 2
    half = tumour.copy()
    half[2:4] = 0
    empty = np.zeros_like(tumour)
    for cid, pred, gt in (("A", half, tumour), ("B", empty, empty), ("C", tumour, empty)):
        _save(tmp_path / "p" / f"{cid}.nii.gz", pred)
        _save(tmp_path / "g" / cid / f"{cid}-seg.nii.gz", gt)
    meta = tmp_path / "cases.jsonl"
    meta.write_text("\n".join(json.dumps({"case_id": c, "anatomy": a}) for c, a in (("A", "x"), ("B", "x"))))
    out = tmp_path / "e.csv"
    argv = ["evaluate", str(tmp_path / "p"), str(tmp_path / "g"), "--csv", str(out), "--cases-meta", str(meta),
            "--group-by", "anatomy"]  # fmt: skip
    assert cli_main(argv) == 0
    summary = json.loads((tmp_path / "e_summary.json").read_text())
    wt = summary["regions"]["whole_tumor"]
    assert summary["n_cases"] == 3 and wt["empty_reference"] == 2
    dice_a = 2 * 32 / (32 + 64)
    assert wt["dice"]["mean"] == pytest.approx((dice_a + 1.0 + 0.0) / 3, abs=1e-4)
    assert wt["dice"]["median"] == pytest.approx(dice_a, abs=1e-4)
    lo, hi = wt["dice"]["mean_ci95"]  # three cases with Dice 0.5, 1 and 0: the mean can fall anywhere between
    assert 0.0 <= lo < wt["dice"]["mean"] < hi <= 1.0 and hi - lo > 0.4
    assert wt["sensitivity"] == {"mean": pytest.approx(0.5), "median": pytest.approx(0.5), "n": 1}
    assert set(summary["groups"]) == {"x", "unknown"} and summary["groups"]["x"]["n_cases"] == 2
    rows = {r["case_id"]: r for r in csv.DictReader(open(out))}
    assert rows["B"]["whole_tumor_sensitivity"] == "" and rows["C"]["whole_tumor_reference_empty"] == "1"
    assert rows["A"]["whole_tumor_iou"] == "0.5" and rows["C"]["anatomy"] == "unknown"
    text = (tmp_path / "e_summary.md").read_text()
    assert "empty reference" in text and "By `anatomy`" in text


def test_group_by_needs_metadata(tmp_path, caplog):
    lab = np.zeros((8, 8, 8), np.uint8)
    _save(tmp_path / "p" / "X.nii.gz", lab)
    _save(tmp_path / "g" / "X-seg.nii.gz", lab)
    assert cli_main(["evaluate", str(tmp_path / "p"), str(tmp_path / "g"), "--group-by", "anatomy"]) == 2
    assert "--cases-meta" in caplog.text


def test_case_metadata_sources_and_lookup(tmp_path):
    from brain_tumor_mri.training.case_meta import group_value, load_case_meta, lookup

    jsonl = tmp_path / "cases.jsonl"
    jsonl.write_text(json.dumps({"case_id": "BraTS-SYN-00005-000", "anatomy": "colin27", "wild": []}) + "\n")
    table = load_case_meta(jsonl)
    # an imported 2D picture: class prefix and slice suffix around the generator's case id
    assert lookup("glioma-BraTS-SYN-00005-000_1", table)["anatomy"] == "colin27"
    assert lookup("BraTS-SYN-00005-000", table)["anatomy"] == "colin27"
    assert lookup("other-case", table) == {}
    assert group_value(table["BraTS-SYN-00005-000"], "wild") == "none" and group_value({}, "anatomy") == "unknown"
    table_csv = tmp_path / "types.csv"
    table_csv.write_text("case_id,tumor_type\nA,glioma\n")
    assert load_case_meta(table_csv)["A"]["tumor_type"] == "glioma"
    (tmp_path / "bad.csv").write_text("id,x\n1,2\n")
    with pytest.raises(ValueError, match="case_id"):
        load_case_meta(tmp_path / "bad.csv")
    studies = tmp_path / "studies" / "cases" / "c1"
    studies.mkdir(parents=True)
    (studies / "case.json").write_text(json.dumps({"kind": "3d", "tumor_type": "pituitary"}))
    assert load_case_meta(tmp_path / "studies")["c1"]["tumor_type"] == "pituitary"
    with pytest.raises(ValueError, match="neither"):
        load_case_meta(tmp_path / "nothing")


def test_mean_interval_narrows_with_more_cases_and_needs_two():
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0.5, 1.0, 10), rng.uniform(0.5, 1.0, 400)
    lo_f, hi_f = mean_interval(few)
    lo_m, hi_m = mean_interval(many)
    assert lo_f < few.mean() < hi_f and lo_m < many.mean() < hi_m
    assert hi_m - lo_m < (hi_f - lo_f) / 3  # the width falls as one over the square root of the cases
    assert mean_interval(np.array([0.7])) is None
