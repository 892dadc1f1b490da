"""Fitting the segmentation's component filter on held-out cases, writing it, and carrying it over.

The fit cases are built so the right answer is known: every case has a sure true lesion
(probability 0.97); half of them also carry a false blob the network is unsure of (0.7), on
tumour-free cases too. Any WT threshold between 0.7 and 0.97 removes exactly the false blobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brain_tumor_mri.cli import main
from brain_tumor_mri.imageio import save_label
from brain_tumor_mri.inference.inferer import InfererSpec
from brain_tumor_mri.labels import SEG_LABELS
from brain_tumor_mri.layout import final_label_dir
from brain_tumor_mri.networks.checkpoint import load_model, promote, sidecar_path
from brain_tumor_mri.training.postprocess_fit import (
    MIN_CASES,
    FitCase,
    carry_postprocess,
    fit_component_filter,
    postprocess_digest,
    smoothed,
    write_postprocess,
)
from brain_tumor_mri.training.publish import Decision
from brain_tumor_mri.training.run import run_training
from tests.helpers.consistency import lesion_case, save_threshold_segmenter, write_case
from tests.helpers.segmentation import make_datastore
from tests.unit.training.test_seg_training import _opts, _tiny_weights


def _case(i: int, tumour: bool, false_blob: bool) -> FitCase:
    probs = np.zeros((3, 16, 16, 16), np.float32)
    truth = np.zeros((16, 16, 16), np.uint8)
    if tumour:
        probs[:, 2:7, 2:7, 2:7] = 0.97
        truth[2:7, 2:7, 2:7] = SEG_LABELS["enhancing_tumor"]
    if false_blob:
        probs[0, 10:14, 10:14, 10:14] = 0.7
    return FitCase(f"c{i}", probs, truth)


def _cases() -> list[FitCase]:
    return [_case(i, tumour=i % 3 != 0, false_blob=i % 2 == 0) for i in range(8)]


def test_fit_finds_a_threshold_that_removes_only_the_false_blobs():
    record = fit_component_filter(_cases())
    tau = record["min_mean_prob"]["whole_tumor"]
    assert 0.7 < tau <= 0.97
    fit = record["fit"]
    assert fit["dice_after"]["mean"] == 1.0 > fit["dice_before"]["mean"]
    assert fit["n"] == 8 and fit["case_ids"][0] == "c0"
    assert "tumor_core" not in record["min_mean_prob"], "nothing left to gain: TC stays unfiltered"


def test_fit_keeps_the_filter_off_when_it_does_not_help():
    record = fit_component_filter([_case(i, tumour=True, false_blob=False) for i in range(6)])
    assert record["min_mean_prob"] == {}
    assert record["fit"]["dice_after"] == record["fit"]["dice_before"]


def test_fit_refuses_too_few_cases():
    with pytest.raises(ValueError, match=f"at least {MIN_CASES}"):
        fit_component_filter(_cases()[: MIN_CASES - 1])


def test_smoothing_averages_grid_neighbours():
    assert smoothed(np.array([0.0, 3.0, 0.0, 6.0])).tolist() == [1.5, 1.0, 3.0, 3.0]


def test_write_replaces_the_suffix_and_keeps_the_weights(tmp_path):
    weights = _tiny_weights(tmp_path / "segmentation.pt")
    base = load_model(weights, "segmentation").meta["version"]
    first = write_postprocess(weights, {"min_mean_prob": {"whole_tumor": 0.9}})
    second = write_postprocess(weights, {"min_mean_prob": {"whole_tumor": 0.8}})
    assert first["version"].startswith(f"{base}-pp") and second["version"].startswith(f"{base}-pp")
    assert first["version"] != second["version"] and second["version"].count("-pp") == 1
    assert load_model(weights, "segmentation").meta["postprocess"]["base_version"] == base  # sha256 still matches


def test_write_refuses_weights_that_do_not_match_their_sidecar(tmp_path):
    weights = _tiny_weights(tmp_path / "segmentation.pt")
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(ValueError, match="sha256"):
        write_postprocess(weights, {"min_mean_prob": {"whole_tumor": 0.9}})


def test_carry_copies_the_initial_models_filter(tmp_path):
    init = _tiny_weights(tmp_path / "init" / "segmentation.pt")
    assert carry_postprocess(_tiny_weights(tmp_path / "a.pt"), init) is None, "nothing to carry"
    init_meta = write_postprocess(init, {"min_mean_prob": {"whole_tumor": 0.9}, "fit": {"n": 7}})
    meta = carry_postprocess(_tiny_weights(tmp_path / "b.pt"), init)
    assert meta is not None
    assert meta["postprocess"]["min_mean_prob"] == {"whole_tumor": 0.9}
    assert meta["postprocess"]["carried_from"] == init_meta["version"]
    assert meta["postprocess"]["fit"] == {"n": 7}


def _always(inp):
    return Decision(True, "published: test rule", {"rule": "always"})


def test_fine_tune_with_few_validation_cases_carries_the_filter(tmp_path):
    studies = make_datastore(tmp_path / "studies")  # 3 cases: 1 validation case
    init = _tiny_weights(tmp_path / "init.pt")
    init_meta = write_postprocess(init, {"min_mean_prob": {"whole_tumor": 0.85}})
    result = run_training(_opts(studies, tmp_path, init=str(init), epochs=1), publish_rule=_always)
    assert result.published
    meta = json.loads(sidecar_path(Path(result.publish_path)).read_text(encoding="utf-8"))
    assert meta["postprocess"]["min_mean_prob"] == {"whole_tumor": 0.85}
    assert meta["postprocess"]["carried_from"] == init_meta["version"]
    assert result.version == meta["version"] and "-pp" in meta["version"]


def test_promote_puts_a_staged_pair_in_place(tmp_path):
    served = _tiny_weights(tmp_path / "served" / "segmentation.pt")
    staged = _tiny_weights(tmp_path / "run" / "staged" / "segmentation.pt", spacing=2.0)
    fitted = write_postprocess(staged, {"min_mean_prob": {"whole_tumor": 0.9}})
    assert load_model(served, "segmentation").version != fitted["version"]
    promote(staged, served)
    assert load_model(served, "segmentation").version == fitted["version"]  # weights and sidecar agree (sha256)
    assert json.loads(sidecar_path(served).read_text(encoding="utf-8")) == fitted
    assert sorted(p.name for p in served.parent.iterdir()) == ["segmentation.json", "segmentation.pt"]  # no temps
    promote(served, served)  # the same file: nothing to do
    assert load_model(served, "segmentation").version == fitted["version"]


def test_fine_tuning_the_published_model_in_place_keeps_its_filter(tmp_path):
    """The server's second retrain fine-tunes the model it published: the filter must survive replacing it."""
    studies = make_datastore(tmp_path / "studies")
    published = _tiny_weights(tmp_path / "studies" / "model" / "segmentation.pt")
    first = write_postprocess(published, {"min_mean_prob": {"whole_tumor": 0.85}})
    opts = _opts(studies, tmp_path, init=str(published), out=published, epochs=1)
    result = run_training(opts, publish_rule=_always)
    assert result.published and result.publish_path == str(published)
    meta = json.loads(sidecar_path(published).read_text(encoding="utf-8"))
    assert meta["version"] != first["version"] and load_model(published, "segmentation").version == meta["version"]
    assert meta["postprocess"]["min_mean_prob"] == {"whole_tumor": 0.85}
    assert meta["postprocess"]["carried_from"] == first["version"]
    staged = tmp_path / "run" / "staged" / "segmentation.pt"
    assert json.loads(sidecar_path(staged).read_text(encoding="utf-8")) == meta  # fitted before it was put in place


def test_run_with_enough_validation_cases_fits_on_them(tmp_path):
    studies = make_datastore(tmp_path / "studies", n=8)
    result = run_training(_opts(studies, tmp_path, epochs=1, val_fraction=0.7), publish_rule=_always)
    meta = json.loads(sidecar_path(Path(result.publish_path)).read_text(encoding="utf-8"))
    fit = meta["postprocess"]["fit"]
    assert fit["n"] == len(meta["training"]["val_cases"]) >= MIN_CASES
    assert sorted(fit["case_ids"]) == meta["training"]["val_cases"]
    assert meta["postprocess"]["fitted_on"]["split"] == "val"
    assert result.version == meta["version"]


def _calibration_case(tmp_path: Path) -> tuple[Path, Path]:
    """Six labelled cases (a dim false lesion on every tumour-free one) and a threshold "network" for them."""
    studies = tmp_path / "studies"
    for i in range(6):
        tumour = i % 2 == 0
        stack, affine, lesion = lesion_case([(-30.0, 10.0, 0.0)] if tumour else [(30.0, -20.0, 0.0)], seed=i)
        if not tumour:
            stack[:, lesion] *= 0.6  # a dim "false tumour", absent from the reference
        write_case(studies, f"case{i}", stack, affine, "glioma" if tumour else "no_tumor")
        label = (
            np.where(lesion, SEG_LABELS["edema"], 0).astype(np.uint8) if tumour else np.zeros(lesion.shape, np.uint8)
        )
        final_label_dir(studies).mkdir(parents=True, exist_ok=True)
        save_label(final_label_dir(studies) / f"case{i}.nii.gz", label, affine)
    stack, _, lesion = lesion_case([(-30.0, 10.0, 0.0)])
    flair = stack[3]
    z = (flair - flair[flair > 0].mean()) / flair[flair > 0].std()
    z_bright = float(np.median(z[lesion]))
    weights = tmp_path / "weights" / "segmentation.pt"
    save_threshold_segmenter(weights, z_threshold=0.6 * z_bright, gain=3.0 / z_bright)
    return studies, weights


def test_calibrate_command_fits_a_datastore(tmp_path):
    """``brain-tumor calibrate segmentation``: a dim false lesion on every tumour-free case is filtered out."""
    studies, weights = _calibration_case(tmp_path)
    assert (
        main(["calibrate", "segmentation", str(studies), "--weights-dir", str(weights.parent), "--device", "cpu"]) == 0
    )
    meta = load_model(weights, "segmentation").meta
    fit = meta["postprocess"]["fit"]
    assert "whole_tumor" in meta["postprocess"]["min_mean_prob"], fit
    assert fit["dice_after"]["wt"] > fit["dice_before"]["wt"]
    assert meta["version"].rpartition("-pp")[2] == meta["version"][-8:]
    assert meta["postprocess"]["mirror_axes"] == [] and "tta_mirror_axes" not in meta.get("inferer", {})
    # without mirroring the suffix is the hash of the thresholds alone, as in sidecars from before mirroring
    assert meta["version"][-8:] == postprocess_digest({"min_mean_prob": meta["postprocess"]["min_mean_prob"]})


def test_calibrate_command_sets_the_mirroring_and_fits_on_it(tmp_path):
    """``--mirror-axes`` goes into the inferer, the filter is fitted on the mirrored output; ``none`` undoes it."""
    studies, weights = _calibration_case(tmp_path)
    base = ["calibrate", "segmentation", str(studies), "--weights-dir", str(weights.parent), "--device", "cpu"]
    assert main([*base, "--mirror-axes", "2,0"]) == 0
    mirrored = load_model(weights, "segmentation").meta
    assert mirrored["inferer"]["tta_mirror_axes"] == [0, 2]
    assert mirrored["inferer"]["mode"] == "full"  # a sidecar without an inferer keeps its one full pass
    assert mirrored["postprocess"]["mirror_axes"] == [0, 2]
    assert mirrored["postprocess"]["command"].endswith("--mirror-axes 0,2")
    assert "whole_tumor" in mirrored["postprocess"]["min_mean_prob"]
    assert main([*base, "--mirror-axes", "none"]) == 0
    plain = load_model(weights, "segmentation").meta
    assert "tta_mirror_axes" not in plain["inferer"] and plain["postprocess"]["mirror_axes"] == []
    assert plain["postprocess"]["min_mean_prob"] == mirrored["postprocess"]["min_mean_prob"]  # same filter...
    assert plain["version"] != mirrored["version"]  # ...but answers show that the output they come from changed
    with pytest.raises(SystemExit) as exc:
        main([*base, "--mirror-axes", "3"])
    assert exc.value.code == 2
    assert load_model(weights, "segmentation").meta == plain  # a refused call changes nothing


def test_fine_tune_keeps_the_initial_models_mirroring(tmp_path):
    """The carried filter was fitted on mirrored output, so the fine-tuned model is served (and validated) mirrored."""
    studies = make_datastore(tmp_path / "studies")  # 3 cases: 1 validation case
    init = _tiny_weights(tmp_path / "init.pt")
    write_postprocess(init, {"min_mean_prob": {"whole_tumor": 0.85}, "mirror_axes": [0]},
                      inferer=InfererSpec(mirror_axes=(0,)))  # fmt: skip
    result = run_training(_opts(studies, tmp_path, init=str(init), epochs=1), publish_rule=_always)
    meta = json.loads(sidecar_path(Path(result.publish_path)).read_text(encoding="utf-8"))
    assert meta["inferer"]["tta_mirror_axes"] == [0]
    assert meta["postprocess"]["mirror_axes"] == [0] and meta["postprocess"]["min_mean_prob"] == {"whole_tumor": 0.85}
