"""``brain-tumor-dev adapt-curve`` end to end on tiny cases: summary, table and plot with every retrain."""

from __future__ import annotations

import json
from pathlib import Path

from brain_tumor_dev.adapt_curve import split_means
from brain_tumor_dev.cli import main
from brain_tumor_mri.networks.checkpoint import save_model
from brain_tumor_mri.networks.factory import build_segmentation_network
from tests.helpers.segmentation import SMALL_NET, SPACING, make_datastore


def test_adapt_curve_writes_before_after_scratch_and_times(tmp_path: Path) -> None:
    site = make_datastore(tmp_path / "site", n=4)
    original = make_datastore(tmp_path / "original", n=2)
    init = tmp_path / "served" / "segmentation.pt"
    save_model(build_segmentation_network(**SMALL_NET), init,
               {"kind": "segmentation", "network": SMALL_NET, "spacing": SPACING, "patch": [32, 32, 32]})  # fmt: skip
    out = tmp_path / "out"
    argv = ["adapt-curve", "--studies", str(site), "--counts", "1,2", "--seeds", "1", "--eval", "1",
            "--replay", str(original), "--replay-cases", "1", "--original", "1", "--init", str(init), "--scratch",
            "--budget-scale", "0.25", "--device", "cpu", "--out", str(out),
            "--workdir", str(tmp_path / "work")]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [r["count"] for r in summary["runs"]] == [1, 2] and len(summary["eval_cases"]) == 1
    for row in summary["runs"]:
        assert not set(row["cases"]) & set(summary["eval_cases"]), "evaluation cases are never trained on"
        for kind in ("adapted", "scratch"):
            res = row[kind]
            assert res["seconds"] > 0 and set(res["site"]) == {"wt", "tc", "et", "mean"} and res["original"]
        assert row["adapted"]["patches"] == row["scratch"]["patches"] == 16 * (1 if row["count"] == 1 else 2)
    (case,) = summary["eval_cases"]
    assert set(summary["eval_regions_present"][case]) == {"wt", "tc", "et"}
    for row in summary["runs"]:
        split = row["adapted"]["site_present"]
        assert sum(split["n_present"].values()) + sum(split["n_empty"].values()) == 3  # one case, three regions
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table.count("\n| 1 |") == 2 and "| 2 |" in table  # the all-case table and the split one
    assert "By whether the reference has the region" in table
    assert (out / "adapt_curve.png").stat().st_size > 1000


def test_split_separates_the_tumours_from_the_empty_references() -> None:
    per_case = {
        "glioma": {"wt": 0.8, "tc": 0.6, "et": 0.4, "mean": 0.6},
        "no-et": {"wt": 0.7, "tc": 0.5, "et": 1.0, "mean": 0.73},  # no ET in the reference, none predicted
        "free-ok": {"wt": 1.0, "tc": 1.0, "et": 1.0, "mean": 1.0},  # tumour-free, segmented empty
        "free-fp": {"wt": 0.0, "tc": 0.0, "et": 1.0, "mean": 0.33},  # tumour-free, a false WT/TC component
    }
    present = {"wt": True, "tc": True, "et": True}
    presence = {"glioma": present, "no-et": {**present, "et": False},
                "free-ok": dict.fromkeys(present, False), "free-fp": dict.fromkeys(present, False)}  # fmt: skip
    out = split_means(per_case, presence)
    assert out["present"] == {"wt": 0.75, "tc": 0.55, "et": 0.4}
    assert out["empty"] == {"wt": 0.5, "tc": 0.5, "et": 1.0}
    assert out["n_present"] == {"wt": 2, "tc": 2, "et": 1} and out["n_empty"] == {"wt": 2, "tc": 2, "et": 3}


def test_served_scores_use_the_post_processing_the_adaptation_keeps(tmp_path: Path) -> None:
    """``--served``: the site's cases are scored through the served pipeline, with the filter carried over."""
    from brain_tumor_mri.inference.segmenter import store_expectations
    from brain_tumor_mri.training.postprocess_fit import write_postprocess

    site = make_datastore(tmp_path / "site", n=3)
    init = tmp_path / "served" / "segmentation.pt"
    meta = {"kind": "segmentation", "network": SMALL_NET, "spacing": SPACING, "patch": [32, 32, 32],
            **store_expectations()}  # fmt: skip
    save_model(build_segmentation_network(**SMALL_NET), init, meta)
    init_version = write_postprocess(init, {"min_mean_prob": {"whole_tumor": 0.9}})["version"]
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["adapt-curve", "--studies", str(site), "--counts", "1", "--seeds", "1", "--eval", "1", "--init",
            str(init), "--served", "--budget-scale", "0.25", "--device", "cpu", "--out", str(out),
            "--workdir", str(work)]  # fmt: skip
    assert main(argv) == 0
    (row,) = json.loads((out / "summary.json").read_text(encoding="utf-8"))["runs"]
    for key in ("site_served", "site_before_served"):
        split = row["adapted"][key]
        assert sum(split["n_present"].values()) + sum(split["n_empty"].values()) == 3, key
    adapted = json.loads((work / "n1-s0" / "studies" / "adapt.json").read_text(encoding="utf-8"))
    assert adapted["postprocess"]["carried_from"] == init_version
    assert adapted["postprocess"]["min_mean_prob"] == {"whole_tumor": 0.9}
    assert "As the server answers" in (out / "table.md").read_text(encoding="utf-8")
