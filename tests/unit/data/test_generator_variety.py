"""Content of the varied generator: anatomies, hold-outs, contrasts, metastases, T1c structures, 2D views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from brain_tumor_mri.cli import main
from brain_tumor_mri.data.anatomies import ANATOMIES, load_anatomy, select_anatomies
from brain_tumor_mri.data.importers import import_dataset
from brain_tumor_mri.data.slices2d import PLANES, draw_view, pick_slice, render_slice
from brain_tumor_mri.data.synthetic import GeneratorOptions, anatomy_for, generate_case, tumor_type_for
from brain_tumor_mri.layout import read_case_meta

SPACING = 4.0


def _template_mask(case, name: str) -> np.ndarray:
    """Anatomy ``name``'s brain mask on the case's grid, mirrored like the case."""
    template = load_anatomy(name, case.spacing)
    idx = np.indices(case.seg.shape, dtype=np.float32).reshape(3, -1)
    world = idx * case.spacing + case.affine[:3, 3:4]
    world[0] *= case.meta["flip"]
    vox = world - template.origin[:, None]
    return (ndimage.map_coordinates(template.maps[2], vox, order=1) > 0.5).reshape(case.seg.shape)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_every_anatomy_is_used_and_is_the_right_brain():
    seen = set()
    for index in range(len(ANATOMIES)):
        case = generate_case(index, 2, SPACING, options=GeneratorOptions(metastasis_fraction=0.0))
        seen.add(case.anatomy)
        assert case.meta["anatomy"] == case.anatomy
        brain = case.brain_mask & (case.seg == 0)
        scores = {name: _dice(brain, _template_mask(case, name)) for name in ANATOMIES}
        assert max(scores, key=scores.get) == case.anatomy, scores
    assert seen == set(ANATOMIES)


def test_anatomy_selection_and_leave_one_out(tmp_path):
    assert select_anatomies("mni152,colin27") == ("mni152", "colin27")
    assert select_anatomies(None, ["colin27"]) == tuple(n for n in ANATOMIES if n != "colin27")
    with pytest.raises(ValueError):
        select_anatomies("mni152,inia19")
    with pytest.raises(ValueError):
        select_anatomies("colin27", "colin27")
    assert {anatomy_for(i, 9, ("mni152", "itk_t1")) for i in range(12)} == {"mni152", "itk_t1"}
    out = tmp_path / "loo"
    argv = ["sample-data", str(out), "--cases", "4", "--seed", "1", "--spacing", "4", "--slices-per-case", "0",
            "--exclude-anatomy", "colin27"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "brats" / "cases.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["anatomy"] for r in rows} == {"mni152", "itk_t1"}
    assert "--anatomies mni152,itk_t1" in (out / "README.md").read_text()
    assert main(["sample-data", str(tmp_path / "bad"), "--anatomies", "macaque"]) == 2


def test_contrasts_vary_across_seeds():
    ratios = []
    for seed in range(6):
        opts = GeneratorOptions(domain="standard", metastasis_fraction=0.0, anatomies=("mni152",))
        case = generate_case(0, seed, SPACING, keep_tissue=True, options=opts)
        healthy = case.brain_mask & (case.seg == 0)
        wm, gm = healthy & (case.tissue["wm"] > 0.9), healthy & (case.tissue["gm"] > 0.6)
        t2 = case.sequences["t2w"]
        ratios.append(float(t2[gm].mean() / t2[wm].mean()))
    assert max(ratios) - min(ratios) > 0.15, ratios
    wild = generate_case(0, 0, SPACING, options=GeneratorOptions(domain="wild"))
    assert wild.meta["wild_sequences"] == ["t1n", "t1c", "t2w", "t2f"]


def test_multi_lesion_metastases():
    opts = GeneratorOptions(metastasis_fraction=1.0)
    for index in range(3):
        assert tumor_type_for(index, 4, 1.0) == "metastasis"
        case = generate_case(index, 4, 3.0, options=opts)
        comps, n = ndimage.label(case.seg > 0)
        assert case.tumor_type == "metastasis" and 2 <= case.meta["n_lesions"] <= 5
        assert n >= 2, "separate lesions"
        volumes = np.bincount(comps.ravel())[1:] * 27 / 1000.0
        assert np.all((volumes >= 0.3) & (volumes <= 40.0)), volumes
        assert (case.seg == 3).any() and (case.seg == 2).any()


def test_lesion_volumes_in_range():
    volumes = []
    for seed in range(3):
        for index in range(8):
            case = generate_case(index, seed, SPACING)
            if case.tumor_type != "no_tumor":
                volumes.append(case.meta["whole_tumor_ml"])
    assert min(volumes) >= 0.3 and max(volumes) <= 220.0, volumes
    assert max(volumes) > 20.0 and min(volumes) < 10.0, "small and large tumours both occur"


def test_tumour_free_t1c_has_enhancing_normal_structures():
    opts = GeneratorOptions(domain="standard", metastasis_fraction=0.0, profiles=(("site_a", 1.0),))
    checked = 0
    for index in range(8):
        if tumor_type_for(index, 6, 0.0) != "no_tumor":
            continue
        case = generate_case(index, 6, 2.0, keep_tissue=True, options=opts)
        bright = case.tissue["enhancing_normal"] > 0.5
        assert bright.sum() * 8 > 500, "falx, sinus, veins, choroid plexus or pituitary present (mm^3)"
        assert not case.seg[bright].any(), "normal structures are not labelled"
        wm = case.brain_mask & (case.tissue["wm"] > 0.9)
        t1c = case.sequences["t1c"]
        assert t1c[bright & case.brain_mask].mean() > t1c[wm].mean()
        checked += 1
    assert checked


def test_2d_views_cover_all_planes_and_are_reproducible():
    case = generate_case(1, 3, SPACING, options=GeneratorOptions(metastasis_fraction=0.0))
    rng = np.random.default_rng(5)
    assert {draw_view(case, rng)[0] for _ in range(60)} == set(PLANES)
    a = render_slice(case, "coronal", "t2w", pick_slice(case, "coronal", np.random.default_rng(1)),
                     np.random.default_rng(2))[0]  # fmt: skip
    b = render_slice(case, "coronal", "t2w", pick_slice(case, "coronal", np.random.default_rng(1)),
                     np.random.default_rng(2))[0]  # fmt: skip
    assert np.array_equal(a, b)


def test_metastasis_cases_import_without_pictures(tmp_path: Path):
    out = tmp_path / "met"
    argv = ["sample-data", str(out), "--cases", "2", "--seed", "3", "--spacing", "4", "--slices-per-case", "2",
            "--metastasis-fraction", "1"]  # fmt: skip
    assert main(argv) == 0
    assert not list((out / "kaggle").glob("*/*")), "metastases are no Kaggle class"
    studies = tmp_path / "studies"
    summary = import_dataset(out, studies)
    assert summary.tumor_types == {"metastasis": 2}
    assert read_case_meta(studies, summary.case_ids[0])["tumor_type"] == "metastasis"
