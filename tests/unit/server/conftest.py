"""Fixtures for the in-process server adapter tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.activelearning import TINY_NETWORK


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """Random-init tiny U-Net weights with a sidecar, as training would publish them."""
    import torch

    from brain_tumor_mri.networks.checkpoint import save_model
    from brain_tumor_mri.networks.factory import build_segmentation_network
    from tests.helpers.activelearning import segmentation_meta

    torch.manual_seed(0)
    net = build_segmentation_network(**TINY_NETWORK)
    path = tmp_path / "weights" / "segmentation.pt"
    save_model(net, path, segmentation_meta(TINY_NETWORK, 3.0))
    return path
