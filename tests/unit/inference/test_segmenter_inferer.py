"""Full-volume pass vs Gaussian-blended sliding window: they agree, and the choice follows sidecar and budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor_mri.inference.inferer import (
    FULL,
    SLIDING,
    InfererSpec,
    choose,
    estimate_full_pass_mb,
    mirrored_mean,
    parse_mirror_axes,
    run_network,
)
from brain_tumor_mri.inference.segmenter import Segmenter
from brain_tumor_mri.networks.checkpoint import save_model
from brain_tumor_mri.networks.factory import SEG_DEFAULTS, build_segmentation_network
from brain_tumor_mri.networks.store import ModelStore
from tests.helpers.segmentation import SMALL_NET, SPACING, synthetic_case


def test_sliding_window_agrees_with_one_full_pass() -> None:
    """A network with a small receptive field: windows blended with Gaussian weights give the full-pass output."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 3, 3, padding=1))
    x = torch.randn(1, 4, 40, 36, 44)
    spec = InfererSpec(SLIDING, (16, 16, 16), 0.5)
    with torch.inference_mode():
        full = torch.sigmoid(run_network(net, x, FULL, spec))
        windows = torch.sigmoid(run_network(net, x, SLIDING, spec))
        misplaced = torch.sigmoid(run_network(net, torch.roll(x, 1, dims=2), FULL, spec))
    assert windows.shape == full.shape
    # window edges see zero padding instead of the neighbours, but carry little Gaussian weight (MONAI
    # clamps the smallest weights, so corners of the volume keep a small error)
    assert float((windows - full).abs().mean()) < 0.005
    assert float(((windows > 0.5) == (full > 0.5)).float().mean()) > 0.97
    # the same checks catch a one-voxel misplacement
    assert float((misplaced - full).abs().mean()) > 0.02
    assert float(((misplaced > 0.5) == (full > 0.5)).float().mean()) < 0.8


def test_choice_follows_sidecar_and_memory_budget() -> None:
    auto = InfererSpec("auto", (96, 96, 96), 0.5)
    brats_2mm, brats_1mm = (96, 112, 96), (160, 192, 160)
    assert estimate_full_pass_mb(SEG_DEFAULTS, brats_2mm, False) < estimate_full_pass_mb(SEG_DEFAULTS, brats_1mm, False)
    assert estimate_full_pass_mb(SEG_DEFAULTS, brats_1mm, True) < 2048  # the default budget: one pass at 1 mm
    assert choose(auto, SEG_DEFAULTS, brats_1mm, False, budget_mb=2048) == FULL
    assert choose(auto, SEG_DEFAULTS, brats_1mm, False, budget_mb=100) == SLIDING
    assert choose(auto, SEG_DEFAULTS, (64, 64, 64), False, budget_mb=1) == FULL  # one window covers it anyway
    assert InfererSpec.from_meta({}) == InfererSpec(FULL)  # sidecars from before: always one full pass
    assert choose(InfererSpec.from_meta({}), SEG_DEFAULTS, brats_1mm, False, budget_mb=1) == FULL


def _weights(tmp: Path, inferer: dict | None) -> Path:
    meta = {"kind": "segmentation", "network": SMALL_NET, "spacing": SPACING}
    if inferer is not None:
        meta["inferer"] = inferer
    torch.manual_seed(1)
    save_model(build_segmentation_network(**SMALL_NET), tmp / "seg.pt", meta)
    return tmp / "seg.pt"


def test_segmenter_picks_the_inferer_from_sidecar_and_budget(tmp_path: Path) -> None:
    stack, _ = synthetic_case(0, size=40)
    affine = np.diag([SPACING] * 3 + [1.0])
    legacy = _weights(tmp_path / "a", None)
    tiny_budget = 0.001
    seg = Segmenter(ModelStore("segmentation", legacy, legacy, torch.device("cpu")), 2.0, False, tiny_budget)
    assert seg.segment(stack, affine).inferer == FULL  # shipped-style sidecar: unchanged behaviour
    new = _weights(tmp_path / "b", {"mode": "auto", "roi": [32, 32, 32], "overlap": 0.5})
    seg = Segmenter(ModelStore("segmentation", new, new, torch.device("cpu")), 2.0, False, tiny_budget)
    windowed = seg.segment(stack, affine)
    assert windowed.inferer == SLIDING and windowed.label.shape == stack.shape[1:]
    seg.memory_mb = 4096
    whole = seg.segment(stack, affine)
    assert whole.inferer == FULL and whole.probs.shape == windowed.probs.shape
    assert 0.0 <= float(windowed.probs.min()) and float(windowed.probs.max()) <= 1.0


def test_mirror_axes_in_the_sidecar() -> None:
    spec = InfererSpec.from_meta({"inferer": {"mode": "full", "tta_mirror_axes": [2, 0]}})
    assert spec.mirror_axes == (0, 2)
    assert spec.to_meta()["tta_mirror_axes"] == [0, 2]
    assert InfererSpec.from_meta({"inferer": spec.to_meta()}) == spec
    assert InfererSpec.from_meta({}).mirror_axes == ()  # sidecars from before: the plain pass only
    assert "tta_mirror_axes" not in InfererSpec(FULL).to_meta()
    for bad in ([3], [0, 0], ["x"], [-1]):
        with pytest.raises(ValueError, match="tta_mirror_axes"):
            parse_mirror_axes(bad)


def test_mirrored_mean_maps_every_pass_back() -> None:
    """Each mirrored pass is mirrored back before averaging: checked with a map that is not mirror-symmetric."""
    torch.manual_seed(0)
    image = torch.rand(2, 5, 6, 7)
    ramp = torch.arange(5, dtype=torch.float32).view(1, 5, 1, 1) + 1.0  # grows along axis 0

    def skewed(x: torch.Tensor) -> torch.Tensor:
        return x[:1] * ramp

    assert torch.equal(mirrored_mean(skewed, image, ()), skewed(image))
    # identity pass: image * ramp; axis-0 pass mirrored back: image * flipped ramp
    expected = image[:1] * (ramp + torch.flip(ramp, dims=[1])) / 2
    assert torch.allclose(mirrored_mean(skewed, image, (0,)), expected)
    # along an axis the map does not depend on, mirroring changes nothing
    assert torch.allclose(mirrored_mean(skewed, image, (1, 2)), skewed(image))


def test_segmenter_averages_the_sidecars_mirrors(tmp_path: Path) -> None:
    stack, _ = synthetic_case(0, size=40)
    affine = np.diag([SPACING] * 3 + [1.0])
    weights = _weights(tmp_path, {"mode": "full", "tta_mirror_axes": [0, 1, 2]})
    seg = Segmenter(ModelStore("segmentation", weights, weights, torch.device("cpu")), 2.0, False)
    image = seg.prepare(stack, affine).image
    plain = seg.forward(image)
    passes = [plain] + [seg.forward(image, flips=(a,)) for a in range(3)]
    served = seg.probabilities(image)
    assert torch.allclose(served, torch.stack(passes).mean(0), atol=1e-6)
    assert float((served - plain).abs().max()) > 1e-3  # a random network is not mirror-symmetric: the mean differs
    calls: list[tuple[int, ...]] = []
    forward = seg.forward
    seg.forward = lambda x, **kw: calls.append(tuple(x.shape)) or forward(x, **kw)  # type: ignore[method-assign]
    seg.segment(stack, affine)
    assert len(calls) == 4  # the plain pass and one per mirrored axis
    seg.mirror_axes = ()  # the override (what the post-processing fit sets)
    calls.clear()
    seg.segment(stack, affine)
    assert len(calls) == 1
