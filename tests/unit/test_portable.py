"""Absolute paths leave a sidecar as folder names; everything else passes unchanged."""

from __future__ import annotations

import pytest

from brain_tumor_mri.networks.portable import portable_meta, portable_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/data/hospital/cohort-smith/studies", "studies"),
        ("/data/hospital/studies/", "studies"),
        ("C:\\Users\\smith\\studies", "studies"),
        ("calibrate segmentation /srv/a b/studies --split all", "calibrate segmentation a b/studies --split all"),
        ("train classification '/srv/my studies' --init /srv/w/c.pt", "train classification 'my studies' --init c.pt"),
        ("train segmentation --replay=/srv/old --seed 3", "train segmentation --replay=old --seed 3"),
        ("relative/studies", "relative/studies"),
        ("fitted on 40 cases (val split), it's fine", "fitted on 40 cases (val split), it's fine"),
        ("none", "none"),
        ("", ""),
    ],
)  # fmt: skip
def test_portable_text(text, expected):
    assert portable_text(text) == expected


def test_portable_meta_walks_every_value_and_keeps_the_shape():
    meta = {
        "version": "20261205-abc", "sha256": "ff" * 32, "patch": [64, 64, 64], "bf16": True, "init": None,
        "calibration": {"fitted_on": {"studies": "/srv/x/val-studies", "n": 12, "split": "val"}},
        "history": [{"command": "brain-tumor train segmentation /srv/x/studies"}],
    }  # fmt: skip
    assert portable_meta(meta) == {
        "version": "20261205-abc", "sha256": "ff" * 32, "patch": [64, 64, 64], "bf16": True, "init": None,
        "calibration": {"fitted_on": {"studies": "val-studies", "n": 12, "split": "val"}},
        "history": [{"command": "brain-tumor train segmentation studies"}],
    }  # fmt: skip
    assert meta["calibration"]["fitted_on"]["studies"] == "/srv/x/val-studies"  # the input is not changed
