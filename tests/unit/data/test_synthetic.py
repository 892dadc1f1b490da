"""Synthetic data generator: geometry, determinism, tumour anatomy, contrasts, files and CLI."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from brain_tumor_mri.cli import main
from brain_tumor_mri.data.slices2d import KAGGLE_FOLDERS, pick_slice, render_slice
from brain_tumor_mri.data.synthetic import GeneratorOptions, case_id_for, generate_case, tumor_type_for
from brain_tumor_mri.data.synthetic_fields import output_grid
from brain_tumor_mri.labels import SEG_LABELS, SEQUENCES, TUMOR_CLASSES, class_from_folder

SPACING = 3.0
NCR, ED, ET = SEG_LABELS["necrotic_core"], SEG_LABELS["edema"], SEG_LABELS["enhancing_tumor"]
#: Plausible contrasts, a clean scanner (mild bias, thin slices) and no metastases: the
#: classic per-type and contrast-ordering checks below.
STANDARD = GeneratorOptions(domain="standard", metastasis_fraction=0.0, profiles=(("site_a", 1.0),))


@pytest.fixture(scope="module")
def cases():
    """Two cases of every tumour type (seeds 3 and 4, indices 0..3), with tissue maps."""
    out = {}
    for seed in (3, 4):
        for index in range(len(TUMOR_CLASSES)):
            case = generate_case(index, seed, SPACING, keep_tissue=True, options=STANDARD)
            out.setdefault(case.tumor_type, []).append(case)
    return out


def _high_grade(cases):
    """High-grade gliomas of the fixture plus extra seeds' (the fixture may draw low-grade ones)."""
    found = [c for c in cases["glioma"] if c.meta["lesions"][0]["style"] == "hgg"]
    seed = 100
    while len(found) < 2:
        for index in range(4):
            if tumor_type_for(index, seed, 0.0) == "glioma":
                case = generate_case(index, seed, SPACING, keep_tissue=True, options=STANDARD)
                if case.meta["lesions"][0]["style"] == "hgg":
                    found.append(case)
        seed += 1
    return found


def _world(case, mask):
    """World mm of the centroid of ``mask``."""
    com = ndimage.center_of_mass(mask)
    return (case.affine @ np.r_[com, 1.0])[:3]


def test_types_are_balanced_per_block_of_four():
    for seed in (0, 3, 11):
        for block in range(3):
            kinds = {tumor_type_for(block * 4 + k, seed, metastasis_fraction=0.0) for k in range(4)}
            assert kinds == set(TUMOR_CLASSES)
            # with metastases, they take some slots; the rest keep their block's class
            for k in range(4):
                kind = tumor_type_for(block * 4 + k, seed)
                assert kind in ("metastasis", tumor_type_for(block * 4 + k, seed, metastasis_fraction=0.0))


def test_geometry_and_dtypes(cases):
    grid = output_grid(SPACING)
    for group in cases.values():
        for case in group:
            assert tuple(case.sequences) == SEQUENCES
            for arr in case.sequences.values():
                assert arr.shape == grid.shape == case.seg.shape and arr.dtype == np.float32
                assert np.array_equal(arr, np.rint(arr)) and 0 <= arr.min() and arr.max() <= 32000  # int16 on disk
            assert case.seg.dtype == np.uint8 and set(np.unique(case.seg)) <= {0, NCR, ED, ET}
            np.testing.assert_allclose(case.affine, grid.affine)
    assert output_grid(1.0).shape == (240, 240, 155)


def test_same_seed_same_arrays_other_seed_differs():
    a, b, c = generate_case(1, 21, 4.0), generate_case(1, 21, 4.0), generate_case(1, 22, 4.0)
    for key in SEQUENCES:
        assert a.sequences[key].tobytes() == b.sequences[key].tobytes()
        assert not np.array_equal(a.sequences[key], c.sequences[key])
    assert a.seg.tobytes() == b.seg.tobytes() and a.case_id == case_id_for(1)


def test_background_is_zero_and_brain_is_not(cases):
    for group in cases.values():
        for case in group:
            assert 150_000 < case.brain_mask.sum() * SPACING**3 < 2_500_000  # brain volume in mm^3
            for arr in case.sequences.values():
                assert not arr[~case.brain_mask].any()
                assert (arr[case.brain_mask] > 0).mean() > 0.99


def test_glioma_compartments(cases):
    for case in _high_grade(cases):
        seg = case.seg
        counts = {lab: int((seg == lab).sum()) for lab in (NCR, ED, ET)}
        assert all(counts.values()) and counts[ED] > max(counts[NCR], counts[ET])
        whole_ml = (seg > 0).sum() * SPACING**3 / 1000
        assert 2 < whole_ml < 200  # the generator draws 0.5-200 mL tumours
        ncr = seg == NCR
        shell = ndimage.binary_dilation(ncr) & ~ncr
        assert (seg[shell] == ET).mean() > 0.95, "necrosis must sit inside the enhancing ring"
        assert abs(_world(case, seg > 0)[0]) > 8, "glioma lies in one hemisphere"
        assert case.tissue["wm"][seg == ED].mean() > case.tissue["wm"][case.brain_mask].mean()


def test_meningioma_is_enhancing_and_on_the_surface(cases):
    for case in cases["meningioma"]:
        tumour = case.seg > 0
        assert tumour.sum() * SPACING**3 / 1000 > 1.0
        assert (case.seg[tumour] == ET).mean() > 0.7
        assert (case.seg == ED).sum() < 0.5 * (case.seg == ET).sum()
        touching = ndimage.binary_dilation(tumour, iterations=2) & ~case.brain_mask
        assert touching.any(), "meningioma is extra-axial: it borders the outside of the brain"


def test_pituitary_is_midline_and_inferior(cases):
    for case in cases["pituitary"]:
        tumour = case.seg > 0
        x, y, z = _world(case, tumour)
        assert abs(x) < 6 and -15 < y < 8 and z < -10
        assert (case.seg[tumour] == ET).mean() > 0.7 and not (case.seg == ED).any()


def test_no_tumor_has_no_labels(cases):
    for case in cases["no_tumor"]:
        assert not case.seg.any()


def test_tissue_and_lesion_contrasts(cases):
    for group in cases.values():
        for case in group:
            healthy = case.brain_mask & (case.seg == 0)
            tissue = {k: healthy & (v > 0.9) for k, v in case.tissue.items()}
            mean = {s: {k: case.sequences[s][m].mean() for k, m in tissue.items()} for s in SEQUENCES}
            assert mean["t1n"]["wm"] > mean["t1n"]["gm"] > mean["t1n"]["csf"]
            assert mean["t2w"]["csf"] > mean["t2w"]["gm"] > mean["t2w"]["wm"]
            assert mean["t2f"]["csf"] < mean["t2f"]["wm"]
    for case in _high_grade(cases):
        wm = case.brain_mask & (case.seg == 0) & (case.tissue["wm"] > 0.9)
        edema, enh, ncr = case.seg == ED, case.seg == ET, case.seg == NCR
        seq = case.sequences
        assert seq["t2f"][edema].mean() > 1.3 * seq["t2f"][wm].mean()
        assert seq["t2w"][edema].mean() > 1.3 * seq["t2w"][wm].mean()
        assert seq["t1n"][edema].mean() < seq["t1n"][wm].mean()
        assert seq["t1c"][enh].mean() > 1.15 * seq["t1c"][wm].mean()
        # each sequence has its own arbitrary scale now: compare within a sequence
        assert seq["t1c"][ncr].mean() < seq["t1c"][wm].mean() and seq["t2w"][ncr].mean() > seq["t2w"][wm].mean()


def test_2d_picture_has_skull_outside_the_brain(cases):
    rng = np.random.default_rng(0)
    for kind in ("glioma", "no_tumor"):
        case = cases[kind][0]
        for plane in ("axial", "coronal", "sagittal"):
            picture, inside = render_slice(case, plane, "t1c", pick_slice(case, plane, rng), rng)
            assert picture.dtype == np.uint8 and picture.ndim == 2
            assert 200 <= min(picture.shape) and max(picture.shape) <= 630
            outside = ~inside
            assert (picture[outside] > 40).sum() > 0.02 * picture.size, "skull and scalp are visible"
            ring = ndimage.binary_dilation(inside, iterations=40) & outside
            assert (picture[ring] > 60).mean() > 0.1, "bright scalp fat / marrow around the brain on T1c"
            assert (picture < 20).mean() > 0.02, "air around the head"


def test_cli_writes_brats_kaggle_csv_readme(tmp_path):
    out = tmp_path / "synth"
    argv = [
        "sample-data",
        str(out),
        "--cases",
        "4",
        "--seed",
        "5",
        "--spacing",
        "4",
        "--slices-per-case",
        "2",
        "--metastasis-fraction",
        "0",
    ]
    assert main(argv) == 0
    with open(out / "brats" / "tumor_types.csv", encoding="utf-8") as fp:
        rows = list(csv.reader(fp))
    assert rows[0] == ["case_id", "tumor_type"] and len(rows) == 5
    types = dict(rows[1:])
    assert set(types.values()) == set(TUMOR_CLASSES)
    for index, case_id in enumerate(types):
        folder = out / "brats" / case_id
        imgs = [nib.load(folder / f"{case_id}-{key}.nii.gz") for key in SEQUENCES]
        seg = nib.load(folder / f"{case_id}-seg.nii.gz")
        assert seg.get_data_dtype() == np.uint8
        for img in imgs:
            assert img.shape == seg.shape and np.allclose(img.affine, seg.affine)
        expected = generate_case(index, 5, 4.0, options=GeneratorOptions(metastasis_fraction=0.0))
        assert np.array_equal(np.asarray(imgs[1].dataobj), expected.sequences[SEQUENCES[1]])
        assert np.array_equal(np.asarray(seg.dataobj), expected.seg)
    pictures = sorted(p for p in (out / "kaggle").glob("*/*") if p.suffix in (".png", ".jpg"))
    assert len(pictures) == 8 and {p.parent.name for p in pictures} == set(KAGGLE_FOLDERS.values())
    for picture in pictures:
        case_id = picture.stem.rsplit("_", 1)[0]
        assert class_from_folder(picture.parent.name) == types[case_id]
        with Image.open(picture) as im:
            im.load()  # decodable, JPEG or PNG
            assert im.mode == "L" and im.format == {".jpg": "JPEG", ".png": "PNG"}[picture.suffix]
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "--seed 5" in readme and "MNI152" in readme


def test_cli_rejects_bad_values(tmp_path):
    assert main(["sample-data", str(tmp_path / "x"), "--cases", "0"]) == 2
    assert main(["sample-data", str(tmp_path / "x"), "--spacing", "20"]) == 2
