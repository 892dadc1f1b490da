"""``brain-tumor classify --evaluate``: calibration before/after, low-confidence figures, groups, out-of-class cases."""

from __future__ import annotations

import csv
import json

from brain_tumor_mri.cli import main as cli_main
from tests.helpers.classification import brain_slice, make_2d_datastore, save_tiny_weights, write_png


def test_evaluate_reports_calibration_confidence_groups_and_out_of_class(tmp_path):
    studies = make_2d_datastore(tmp_path / "studies", per_class=2)
    folder = studies / "cases" / "mets-c0_0"
    folder.mkdir(parents=True)
    (folder / "case.json").write_text(json.dumps({"kind": "2d", "tumor_type": "metastasis"}))
    write_png(studies / "mets-c0_0.png", brain_slice(0, seed=99))
    weights = tmp_path / "w"
    save_tiny_weights(weights / "classification_2d.pt", "2d", seed=1)
    common = ["--kind", "2d", "--weights-dir", str(weights)]
    assert cli_main(["calibrate", "classification", str(studies), *common]) == 0
    out = tmp_path / "card"
    argv = ["classify", "--evaluate", str(studies), "--out", str(out), "--group-by", "tumor_type", "--timing-runs", "0"]
    assert cli_main([*argv, *common]) == 0
    m = json.loads((out / "classification_2d_metrics.json").read_text())
    assert m["n"] == 16  # the metastasis picture is not one of the classes: reported apart
    cal = m["calibration"]
    assert cal["temperature"] != 1.0 and cal["after"]["nll"] <= cal["before"]["nll"] + 1e-9
    assert len(cal["before"]["reliability"]) == 15 and sum(b["count"] for b in cal["after"]["reliability"]) == 16
    conf = m["confidence"]
    assert conf["n"] == 16 and 0.0 <= conf["low_rate"] <= 1.0 and conf["n_low"] == round(16 * conf["low_rate"])
    assert sum(conf["answers"].values()) == 16
    assert m["out_of_class"]["metastasis"]["n"] == 1
    assert set(m["by_group"]["groups"]) == {"glioma", "meningioma", "pituitary", "no_tumor"}
    assert m["split"] == {"n_images": 16, "n_patients": 8, "overlap_with_calibration_set": 16}
    assert m["per_patient"]["n"] == 8 and 0.0 <= m["per_patient"]["accuracy"] <= 1.0
    text = (out / "classification_2d_metrics.md").read_text()
    assert "calibration figures are optimistic" in text and "ECE" in text and "`metastasis`" in text
    assert (out / "classification_2d_reliability.png").stat().st_size > 10_000
    rows = list(csv.DictReader(open(out / "classification_2d_predictions.csv")))
    assert len(rows) == 17 and {"answer", "best_guess", "confidence", "reasons", "energy", "tumor_type"} <= set(rows[0])
