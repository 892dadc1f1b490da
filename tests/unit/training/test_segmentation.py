"""Segmentation training: datastore loading, augmentation, metrics, a tiny CPU run, publishing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor_mri.imageio import InputError, save_label, save_nifti
from brain_tumor_mri.labels import SEQUENCES
from brain_tumor_mri.networks.checkpoint import load_model, save_model
from brain_tumor_mri.networks.factory import build_segmentation_network
from brain_tumor_mri.training.metrics import EMPTY_HD95, dice, hd95, region_scores
from brain_tumor_mri.training.seg_data import labelled_case_ids, load_split, split_ids
from brain_tumor_mri.training.segmentation import SegTrainSettings, train_segmentation
from brain_tumor_mri.transforms.augment import AugmentSettings, augment, crop_or_pad, flip

SPACING = 3.0
SMALL_NET = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}
FAST_AUG = AugmentSettings(patch=(32, 32, 32))


def _synthetic_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 32^3 'brain' ball with a nested tumour (edema > core > necrosis) per sequence."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"))
    centre = rng.integers(13, 19, size=3)[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    brain = np.sqrt(((grid - 16) ** 2).sum(0)) < 14
    label = np.zeros((32, 32, 32), np.uint8)
    label[r < 7] = 2
    label[r < 4.5] = 3
    label[r < 2.5] = 1
    label[~brain] = 0
    contrast = {"t1n": (0, 0, -20, -30), "t1c": (0, 0, 10, 60), "t2w": (0, 40, 30, 20), "t2f": (0, 50, 20, 10)}
    stack = np.zeros((4, 32, 32, 32), np.float32)
    for c, key in enumerate(SEQUENCES):
        vol = 100 + np.take(np.array(contrast[key], np.float32), label) + rng.normal(0, 3, label.shape)
        stack[c] = np.where(brain, vol, 0)
    return stack, label


def _make_datastore(root: Path, n: int = 3) -> Path:
    """A datastore with ``n`` labelled 3D cases at 3 mm, laid out as ``layout`` describes."""
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    for i in range(n):
        cid = f"case-{i:02d}"
        stack, label = _synthetic_case(i)
        folder = root / "cases" / cid
        folder.mkdir(parents=True)
        (folder / "case.json").write_text(json.dumps({"kind": "3d"}), encoding="utf-8")
        for c, key in enumerate(SEQUENCES):
            target = root / f"{cid}.nii.gz" if key == "t2f" else folder / f"{key}.nii.gz"
            save_nifti(target, stack[c], affine, np.float32)
        (root / "labels" / "final").mkdir(parents=True, exist_ok=True)
        save_label(root / "labels" / "final" / f"{cid}.nii.gz", label, affine)
    return root


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_datastore(tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="module")
def split(studies: Path):
    return load_split(studies, SPACING, 0.34, seed=1)


def _settings(**kw) -> SegTrainSettings:
    base = dict(epochs=2, lr=3e-3, batch_size=2, samples_per_epoch=4, device="cpu", bf16="off",
                spacing=SPACING, network=SMALL_NET, augment=FAST_AUG, seed=0)  # fmt: skip
    return SegTrainSettings(**{**base, **kw})


def test_dataset_loader(studies, split):
    train, val, data = split
    assert labelled_case_ids(studies) == ["case-00", "case-01", "case-02"]
    assert len(train) == 2 and len(val) == 1 and data["val_cases"] == [val[0].case_id]
    for case in train + val:
        assert case.image.shape[0] == 4 and case.image.dtype == torch.float32
        assert case.label.shape == case.image.shape[1:] and case.label.dtype == torch.uint8
        assert set(torch.unique(case.label).tolist()) == {0, 1, 2, 3}
    assert split_ids(["a", "b", "c", "d"], 0.25, 5) == split_ids(["d", "c", "b", "a"], 0.25, 5)
    assert split_ids(["a", "b"], 0.01, 0)[1] != []  # at least one validation case


def test_unknown_label_values_name_the_case(tmp_path):
    root = _make_datastore(tmp_path, n=1)
    bad = np.full((32, 32, 32), 4, np.uint8)
    save_label(root / "labels" / "final" / "case-00.nii.gz", bad, np.diag([SPACING] * 3 + [1.0]))
    with pytest.raises(ValueError, match=r"case case-00.*unknown label values \[4\]"):
        load_split(root, SPACING, 0.0, 0)
    with pytest.raises(InputError, match="no 3D cases"):
        load_split(tmp_path / "empty", SPACING, 0.0, 0)


def test_augmentation_keeps_alignment_and_is_deterministic(split):
    case = split[0][0]
    # the label travels with the image: tumour voxels stay where the image is bright in t1c
    settings = AugmentSettings(patch=(48, 40, 32), affine_prob=1.0, intensity_prob=0, bias_prob=0, noise_prob=0,
                               dropout_prob=0)  # fmt: skip
    img, lab = augment(case.image, case.label, torch.Generator().manual_seed(3), settings)
    assert img.shape == (4, 48, 40, 32) and lab.shape == (48, 40, 32)
    t1c = img[1]
    assert float(t1c[lab == 3].mean()) > float(t1c[lab == 2].mean()) + 0.5
    a = augment(case.image, case.label, torch.Generator().manual_seed(7))
    b = augment(case.image, case.label, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = augment(case.image, case.label, torch.Generator().manual_seed(8))
    assert not torch.equal(a[0], c[0])


def test_flip_and_crop_move_image_and_label_together(split):
    case = split[0][0]
    img, lab = flip(case.image, case.label, [0, 2])
    assert torch.equal(img[:, :, :, :], torch.flip(case.image, [1, 3]))
    assert torch.equal(lab, torch.flip(case.label, [0, 2]))
    marker = case.image[0] * 0 + case.label.float()  # image channel equal to the label
    img, lab = crop_or_pad(marker[None], case.label, (16, 64, 24), torch.Generator().manual_seed(0), 1.0)
    assert img.shape == (1, 16, 64, 24) and torch.equal(img[0], lab.float())
    assert bool((lab > 0).any())  # foreground-centred crop hits the tumour


def test_dice_and_hd95_exact_values():
    a = np.zeros((20, 20, 20), bool)
    b = np.zeros_like(a)
    assert dice(a, b) == 1.0 and hd95(a, b) == 0.0
    b[5:7, 5:7, 5:7] = True
    assert dice(a, b) == 0.0 and hd95(a, b) == EMPTY_HD95 and hd95(b, a) == EMPTY_HD95
    a[5:7, 5:7, 5:9] = True  # 16 voxels containing b's 8
    assert dice(a, b) == pytest.approx(2 * 8 / 24)
    p = np.zeros_like(a)
    g = np.zeros_like(a)
    p[5, 5, 5], g[5, 5, 9] = True, True
    assert hd95(p, g, (1.0, 1.0, 2.0)) == pytest.approx(8.0)
    assert hd95(p, g, 0.5) == pytest.approx(2.0)


def test_region_scores_follow_brats_regions():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[2:6, 2:6, 2:6] = 2
    gt[3:5, 3:5, 3:5] = 3
    pred = gt.copy()
    pred[pred == 3] = 1  # enhancing called necrotic: WT and TC right, ET missed
    s = region_scores(pred, gt, 1.0)
    assert s["whole_tumor"] == {"dice": 1.0, "hd95": 0.0}
    assert s["tumor_core"] == {"dice": 1.0, "hd95": 0.0}
    assert s["enhancing_tumor"] == {"dice": 0.0, "hd95": EMPTY_HD95}


def test_two_epoch_run_publishes_and_logs(split, tmp_path):
    train, val, data = split
    out = tmp_path / "model" / "segmentation.pt"
    old = save_model(build_segmentation_network(**SMALL_NET), out, {"kind": "segmentation", "network": SMALL_NET})
    seen = []
    result = train_segmentation(_settings(data=data), train, val, None, out, tmp_path / "run", seen.append, None)
    assert result.status == "finished" and result.published, result.decision
    assert result.version != old["version"]
    loaded = load_model(out, "segmentation")
    assert loaded.version == result.version
    assert next(loaded.network.parameters()).dtype == torch.float32  # stored fp16, served fp32
    assert loaded.meta["storage_dtype"] == "float16"
    meta = loaded.meta
    assert meta["regions"] == ["whole_tumor", "tumor_core", "enhancing_tumor"] and meta["spacing"] == SPACING
    assert meta["training"]["n_train"] == 2 and meta["training"]["n_val"] == 1 and meta["training"]["epochs"] == 2
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and 0 <= float(rows[-1]["val_dice_mean"]) <= 1
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert any((tmp_path / "run" / "tb").iterdir())
    assert [s["epoch"] for s in seen] == [1, 2] and set(seen[0]["val_dice"]) >= {"whole_tumor", "mean"}


def test_time_budget_ends_the_run_and_still_publishes(split, tmp_path):
    train, val, _ = split
    out = tmp_path / "seg.pt"
    settings = _settings(epochs=5, max_seconds=1e-3)
    result = train_segmentation(settings, train, val, None, out, tmp_path / "r", None, None)
    assert result.status == "time_limit" and result.epochs_run == 1 and result.published and out.is_file()


def test_fine_tune_without_improvement_is_not_published(split, tmp_path):
    train, val, _ = split
    init = tmp_path / "init.pt"
    save_model(build_segmentation_network(**SMALL_NET), init, {"kind": "segmentation", "network": SMALL_NET})
    out = tmp_path / "published.pt"
    result = train_segmentation(_settings(epochs=1, lr=0.0), train, val, init, out, tmp_path / "run", None, None)
    assert result.baseline_metric is not None and result.best_metric == pytest.approx(result.baseline_metric)
    assert not result.published and "not published" in result.decision and not out.exists()


def test_stop_before_first_epoch_leaves_published_file_untouched(split, tmp_path):
    train, val, _ = split
    out = tmp_path / "segmentation.pt"
    save_model(build_segmentation_network(**SMALL_NET), out, {"kind": "segmentation", "network": SMALL_NET})
    before = (out.read_bytes(), out.with_suffix(".json").read_bytes())
    calls = iter(range(100))
    result = train_segmentation(_settings(), train, val, out, out, tmp_path / "run", None, lambda: next(calls) >= 1)
    assert result.status == "stopped" and not result.published and result.epochs_run == 0
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before


def test_cli_trains_segmentation(studies, tmp_path):
    from brain_tumor_mri.cli import main

    out, run_dir = tmp_path / "seg.pt", tmp_path / "run"
    argv = ["train", "segmentation", str(studies), "--init", "none", "--out", str(out), "--run-dir", str(run_dir),
            "--epochs", "1", "--patch", "32", "--samples-per-epoch", "2", "--device", "cpu",
            "--bf16", "off"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["published"]
    assert load_model(out, "segmentation").meta["training"]["command"].startswith("brain-tumor train segmentation")
    assert main(["train", "segmentation", str(studies), "--init", str(tmp_path / "missing.pt")]) == 2


def test_fine_tune_needs_the_initial_models_spacing(split, tmp_path):
    from brain_tumor_mri.training.segmentation import init_spacing

    train, val, _ = split
    init = tmp_path / "init.pt"
    save_model(build_segmentation_network(**SMALL_NET), init, {"kind": "segmentation", "network": SMALL_NET,
                                                               "spacing": 2.0})  # fmt: skip
    assert init_spacing(init, SPACING) == 2.0 and init_spacing(None, SPACING) == SPACING
    with pytest.raises(ValueError, match="works at 2.0 mm"):
        train_segmentation(_settings(), train, val, init, tmp_path / "out.pt", tmp_path / "run", None, None)
