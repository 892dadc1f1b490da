"""Fixtures for the inference tests: tiny classification weights and a small four-sequence case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.classification import save_tiny_weights


@pytest.fixture()
def tiny_weights(tmp_path: Path) -> Path:
    """A weights folder holding tiny 2D and 3D classification models."""
    folder = tmp_path / "weights"
    save_tiny_weights(folder / "classification_2d.pt", "2d")
    save_tiny_weights(folder / "classification_3d.pt", "3d")
    return folder


@pytest.fixture()
def case_stack() -> tuple[np.ndarray, np.ndarray]:
    """A small four-sequence 3D case (4, 20, 22, 18) at 4 mm with a brain-like ellipsoid."""
    rng = np.random.default_rng(3)
    zz, yy, xx = np.mgrid[:20, :22, :18]
    brain = ((zz - 10) / 8) ** 2 + ((yy - 11) / 9) ** 2 + ((xx - 9) / 7) ** 2 < 1
    stack = np.stack([brain * (50 + 10 * k + rng.normal(0, 3, brain.shape)) for k in range(4)]).astype(np.float32)
    return stack, np.diag([4.0, 4.0, 4.0, 1.0])
