"""``brain-tumor import``: every source layout lands in the datastore layout; bad input changes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brain_tumor_mri import layout
from brain_tumor_mri.cli import main as cli_main
from brain_tumor_mri.data.importers import import_dataset
from brain_tumor_mri.imageio import InputError

SHAPE = (8, 9, 7)
AFFINE = np.array([[0.0, -1.2, 0.0, 90.0], [1.1, 0.0, 0.0, -120.5], [0.0, 0.0, 2.0, -60.0], [0.0, 0.0, 0.0, 1.0]])
BRATS21 = {"t2f": "flair", "t1n": "t1", "t1c": "t1ce", "t2w": "t2"}


def _volume(seed: int, shape=SHAPE) -> np.ndarray:
    """Integer-valued intensities, distinct per sequence."""
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.int16)


def _label(values=(0, 1, 2, 4)) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        lab[i * 2 : i * 2 + 2] = v
    return lab


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def make_brats2021(root: Path, case_id: str, seed: int = 0, *, seg: bool = True) -> dict[str, np.ndarray]:
    """A BraTS 2017-2021 case folder; returns the volumes written by internal key."""
    vols = {key: _volume(seed + i) for i, key in enumerate(BRATS21)}
    for key, suffix in BRATS21.items():
        _save(root / case_id / f"{case_id}_{suffix}.nii.gz", vols[key])
    if seg:
        _save(root / case_id / f"{case_id}_seg.nii.gz", _label((0, 1, 2, 4)))
    return vols


def make_brats2023(root: Path, case_id: str, seed: int = 0, *, labels=(0, 1, 2, 3)) -> dict[str, np.ndarray]:
    """A BraTS 2023+ case folder; returns the volumes written by internal key."""
    vols = {key: _volume(seed + i) for i, key in enumerate(("t1n", "t1c", "t2w", "t2f"))}
    for key, data in vols.items():
        _save(root / case_id / f"{case_id}-{key}.nii.gz", data)
    _save(root / case_id / f"{case_id}-seg.nii.gz", _label(labels))
    return vols


def make_msd(root: Path) -> np.ndarray:
    """A tiny Decathlon Task01: two training cases, one test case; returns BRATS_001's 4D image."""
    (root / "dataset.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"name": "BRATS", "modality": {"0": "FLAIR"}}))
    first = None
    for n, folder in ((1, "imagesTr"), (2, "imagesTr"), (3, "imagesTs")):
        data = np.stack([_volume(10 * n + c) for c in range(4)], axis=-1)
        _save(root / folder / f"BRATS_00{n}.nii.gz", data)
        if folder == "imagesTr":
            _save(root / "labelsTr" / f"BRATS_00{n}.nii.gz", _label((0, 1, 2, 3)))
        first = data if first is None else first
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS resource fork")
    return first


def make_kaggle(root: Path) -> None:
    """Kaggle class folders under Training/ and Testing/, RGB JPEGs and greyscale PNGs."""
    rgb = np.random.default_rng(0).integers(0, 255, size=(12, 10, 3)).astype(np.uint8)
    for split, cls, name in (("Training", "glioma_tumor", "image(1).jpg"), ("Testing", "glioma_tumor", "image(1).jpg")):
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / split / cls / name)
    (root / "Training" / "no_tumor").mkdir(parents=True)
    Image.fromarray(rgb[..., 0]).save(root / "Training" / "no_tumor" / "n1.png")


def snapshot(folder: Path) -> dict[str, str]:
    """Recursive listing of ``folder`` with a hash of every file."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def test_brats2021_nested_with_and_without_seg(tmp_path):
    src = tmp_path / "src" / "MICCAI_BraTS2020_TrainingData"
    vols = make_brats2021(src, "BraTS20_Training_001")
    make_brats2021(src, "BraTS20_Training_002", seed=5, seg=False)
    studies = tmp_path / "studies"
    summary = import_dataset(tmp_path / "src", studies, tumor_type="glioma")
    assert summary.imported == {"3d": 2, "2d": 0} and summary.labelled == 1
    assert summary.tumor_types == {"glioma": 2}
    assert layout.list_cases(studies, "3d") == ["BraTS20_Training_001", "BraTS20_Training_002"]
    flair, affine = _nifti(studies / "BraTS20_Training_001.nii.gz")
    np.testing.assert_array_equal(flair, vols["t2f"])
    np.testing.assert_allclose(affine, AFFINE, atol=1e-5)
    case = layout.resolve_case(studies / "BraTS20_Training_001.nii.gz")
    assert case.missing == []
    for key in ("t1n", "t1c", "t2w"):
        np.testing.assert_array_equal(_nifti(case.sequences[key])[0], vols[key])
    label, label_affine = _nifti(studies / "labels" / "final" / "BraTS20_Training_001.nii.gz")
    assert label.dtype == np.uint8 and label.shape == SHAPE
    np.testing.assert_array_equal(label, _label((0, 1, 2, 3)))  # 4 -> 3
    np.testing.assert_allclose(label_affine, AFFINE, atol=1e-5)
    assert layout.final_label_path(studies, "BraTS20_Training_002") is None
    meta = case.meta
    assert meta["kind"] == "3d" and meta["tumor_type"] == "glioma" and meta["source"] == "brats2021"
    assert meta["sequences"] == ["t1n", "t1c", "t2w", "t2f"]
    assert Path(meta["source_path"]) == (src / "BraTS20_Training_001").absolute()
    assert not (studies / "datastore_v2.json").exists()


def test_generator_layout_brats2023_and_kaggle_with_tumor_types_csv(tmp_path):
    src = tmp_path / "src"
    vols = make_brats2023(src / "brats", "BraTS-GLI-00001-000")
    make_brats2023(src / "brats", "BraTS-MEN-00002-000", seed=3)
    (src / "brats" / "tumor_types.csv").write_text("case_id,tumor_type\nBraTS-MEN-00002-000,meningioma\n")
    make_kaggle(src / "kaggle")
    studies = tmp_path / "studies"
    summary = import_dataset(src, studies, tumor_type="glioma")
    assert summary.imported == {"3d": 2, "2d": 3} and summary.labelled == 2
    assert summary.tumor_types == {"glioma": 3, "meningioma": 1, "no_tumor": 1}
    assert layout.read_case_meta(studies, "BraTS-MEN-00002-000")["tumor_type"] == "meningioma"
    assert layout.read_case_meta(studies, "BraTS-GLI-00001-000")["source"] == "brats2023"
    np.testing.assert_array_equal(_nifti(studies / "BraTS-GLI-00001-000.nii.gz")[0], vols["t2f"])
    label = _nifti(layout.final_label_path(studies, "BraTS-GLI-00001-000"))[0]
    np.testing.assert_array_equal(label, _label((0, 1, 2, 3)))
    assert layout.list_cases(studies, "2d") == [
        "glioma-testing-image_1_",
        "glioma-training-image_1_",
        "no_tumor-training-n1",
    ]


def test_kaggle_pngs_are_greyscale_with_class(tmp_path):
    make_kaggle(tmp_path / "src")
    studies = tmp_path / "studies"
    import_dataset(tmp_path / "src", studies, layout="kaggle")
    for case_id, cls in (("glioma-training-image_1_", "glioma"), ("no_tumor-training-n1", "no_tumor")):
        with Image.open(studies / f"{case_id}.png") as img:
            assert img.format == "PNG" and img.mode == "L" and img.size == (10, 12)
        meta = layout.read_case_meta(studies, case_id)
        assert meta == {
            "kind": "2d",
            "tumor_type": cls,
            "source": "kaggle",
            "source_path": meta["source_path"],
        }
        assert Path(meta["source_path"]).is_file()
    with Image.open(studies / "no_tumor-training-n1.png") as img:
        expected = np.random.default_rng(0).integers(0, 255, size=(12, 10, 3)).astype(np.uint8)[..., 0]
        np.testing.assert_array_equal(np.asarray(img), expected)


def test_msd_split_into_sequences_and_labels_converted(tmp_path):
    first = make_msd(tmp_path / "Task01_BrainTumour")
    studies = tmp_path / "studies"
    summary = import_dataset(tmp_path / "Task01_BrainTumour", studies)
    assert summary.imported["3d"] == 3 and summary.labelled == 2
    assert layout.list_cases(studies) == ["BRATS_001", "BRATS_002", "BRATS_003"]
    flair, affine = _nifti(studies / "BRATS_001.nii.gz")
    np.testing.assert_array_equal(flair, first[..., 0])  # MSD channel 0 is FLAIR
    np.testing.assert_allclose(affine, AFFINE, atol=1e-5)
    case = layout.resolve_case(studies / "BRATS_001.nii.gz")
    for channel, key in ((1, "t1n"), (2, "t1c"), (3, "t2w")):
        np.testing.assert_array_equal(_nifti(case.sequences[key])[0], first[..., channel])
    label = _nifti(layout.final_label_path(studies, "BRATS_001"))[0]
    np.testing.assert_array_equal(label, _label((0, 2, 1, 3)))  # MSD 1 -> 2, 2 -> 1
    assert layout.final_label_path(studies, "BRATS_003") is None
    assert case.meta["source"] == "msd" and case.meta["tumor_type"] is None


def test_brats2024_convention_maps_resection_cavity(tmp_path):
    make_brats2023(tmp_path / "src", "BraTS-GLI-00009-100", labels=(0, 1, 3, 4))
    with pytest.raises(InputError, match=r"BraTS-GLI-00009-100-seg.nii.gz: unknown label values \[4\]"):
        import_dataset(tmp_path / "src", tmp_path / "studies")
    import_dataset(tmp_path / "src", tmp_path / "studies", label_convention="brats2024")
    label = _nifti(layout.final_label_path(tmp_path / "studies", "BraTS-GLI-00009-100"))[0]
    np.testing.assert_array_equal(label, _label((0, 1, 3, 0)))


def test_reimport_is_idempotent_and_conflicts_refused(tmp_path):
    src = tmp_path / "src"
    make_brats2021(src, "case1")
    studies = tmp_path / "studies"
    import_dataset(src, studies)
    before = snapshot(studies)
    again = import_dataset(src, studies)
    assert again.total == 0 and again.skipped == 1
    assert snapshot(studies) == before
    _save(src / "case1" / "case1_flair.nii.gz", _volume(99))
    with pytest.raises(ValueError, match="case1.nii.gz: case 'case1' is already in .* with different content"):
        import_dataset(src, studies)
    assert snapshot(studies) == before


def _missing_sequence(case: Path) -> None:
    (case / "bad_t1ce.nii.gz").unlink()


def _shape_mismatch(case: Path) -> None:
    _save(case / "bad_t2.nii.gz", _volume(1, shape=(8, 9, 6)))


def _affine_mismatch(case: Path) -> None:
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0
    _save(case / "bad_t2.nii.gz", _volume(1), shifted)


def _label_five(case: Path) -> None:
    _save(case / "bad_seg.nii.gz", _label((0, 1, 5, 4)))


def _corrupt(case: Path) -> None:
    (case / "bad_t1.nii.gz").write_bytes(np.random.default_rng(1).bytes(3000))


def _truncated(case: Path) -> None:
    raw = (case / "bad_flair.nii.gz").read_bytes()
    (case / "bad_flair.nii.gz").write_bytes(raw[: len(raw) // 2])


BAD_INPUTS = [
    (_missing_sequence, r"bad: missing sequence\(s\) t1c"),
    (_shape_mismatch, r"bad_t2.nii.gz\): shape \(8, 9, 6\) differs"),
    (_affine_mismatch, r"bad_t2.nii.gz\): affine differs"),
    (_label_five, r"bad_seg.nii.gz: unknown label values \[5\]"),
    (_corrupt, r"bad_t1.nii.gz: cannot read image"),
    (_truncated, r"bad_flair.nii.gz: cannot read image"),
]


@pytest.fixture()
def populated(tmp_path) -> tuple[Path, Path]:
    """A datastore holding one good imported case, and a second source with a good case."""
    make_brats2021(tmp_path / "first", "good0")
    studies = tmp_path / "ds" / "studies"
    import_dataset(tmp_path / "first", studies)
    src = tmp_path / "second"
    make_brats2021(src, "good1", seed=7)
    make_brats2021(src, "bad", seed=3)
    return src, studies


@pytest.mark.parametrize("spoil, message", BAD_INPUTS, ids=[f.__name__.strip("_") for f, _ in BAD_INPUTS])
def test_bad_input_raises_and_leaves_studies_unchanged(populated, spoil, message):
    src, studies = populated
    spoil(src / "bad")
    before = snapshot(studies)
    with pytest.raises(ValueError, match=message):
        import_dataset(src, studies)
    assert snapshot(studies) == before
    assert sorted(p.name for p in studies.parent.iterdir()) == ["studies"]  # no staging left behind


def test_cli_exit_codes(populated, caplog):
    src, studies = populated
    _label_five(src / "bad")
    before = snapshot(studies)
    assert cli_main(["import", str(src), str(studies)]) == 2
    assert "unknown label values [5]" in caplog.text
    assert snapshot(studies) == before
    (src / "bad" / "bad_seg.nii.gz").unlink()
    assert cli_main(["import", str(src), str(studies), "--tumor-type", "glioma"]) == 0
    assert layout.list_cases(studies) == ["bad", "good0", "good1"]
    assert layout.read_case_meta(studies, "good1")["tumor_type"] == "glioma"


def test_empty_source_and_duplicate_ids(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no BraTS, MSD or Kaggle data found"):
        import_dataset(tmp_path / "empty", tmp_path / "studies")
    make_brats2021(tmp_path / "dup" / "a", "case1")
    make_brats2021(tmp_path / "dup" / "b", "case1")
    with pytest.raises(ValueError, match="case id 'case1' is also used by"):
        import_dataset(tmp_path / "dup", tmp_path / "studies")
    assert not (tmp_path / "studies").exists()


def test_corrupt_2d_image_names_the_file(tmp_path):
    make_kaggle(tmp_path / "src")
    (tmp_path / "src" / "Training" / "notumor").mkdir()
    (tmp_path / "src" / "Training" / "notumor" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"garbage" * 20)
    with pytest.raises(InputError, match="broken.jpg: cannot read image"):
        import_dataset(tmp_path / "src", tmp_path / "studies")
    assert not (tmp_path / "studies").exists()


def test_unlabelled_keeps_truth_as_reference_tag(tmp_path):
    src, studies = tmp_path / "src", tmp_path / "studies"
    for i, cid in enumerate(("C-1", "C-2", "C-3")):
        make_brats2023(src, cid, seed=10 * i)
    summary = import_dataset(src, studies, unlabelled=2)
    assert summary.labelled == 1
    assert layout.final_label_path(studies, "C-1") is not None
    for cid in ("C-2", "C-3"):
        assert layout.final_label_path(studies, cid) is None
        ref = layout.reference_label_dir(studies) / f"{cid}.nii.gz"
        assert np.array_equal(_nifti(ref)[0], _label((0, 1, 2, 3)))
    before = snapshot(studies)
    assert import_dataset(src, studies, unlabelled=2).total == 0
    assert snapshot(studies) == before
    with pytest.raises(ValueError, match="expected a count >= 0"):
        import_dataset(src, tmp_path / "other", unlabelled=-1)
