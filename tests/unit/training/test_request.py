"""Training-request parsing: every key checked, bad values named, blanks mean default."""

from __future__ import annotations

import pytest

from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.training.request import parse_train_request


def test_valid_request_is_parsed_to_typed_values():
    req = {"max_epochs": "5", "lr": 0.001, "val_fraction": "0.25", "patience": 3, "init": "None", "seed": "7",
           "model": "segmentation", "gpus": "all", "local_rank": 0}  # fmt: skip
    assert parse_train_request("segmentation", req) == {
        "max_epochs": 5, "lr": 0.001, "val_fraction": 0.25, "patience": 3, "init": "none", "seed": 7,
    }  # fmt: skip


def test_blank_values_mean_default():
    assert parse_train_request("classification", {"max_epochs": "", "lr": None}) == {}
    assert parse_train_request("segmentation", None) == {}


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"max_epochs": -1}, r"max_epochs -1: expected an integer in \[1, 10000\]"),
        ({"max_epochs": 2.5}, r"max_epochs 2\.5: expected an integer"),
        ({"max_epochs": True}, r"max_epochs True: expected an integer"),
        ({"max_epochs": [1]}, r"max_epochs \[1\]: expected an integer"),
        ({"lr": 0}, r"lr 0: expected a number in \(0\.0, 1\.0\]"),
        ({"lr": "nan"}, r"lr 'nan': expected a number"),
        ({"lr": "fast"}, r"lr 'fast': expected a number"),
        ({"val_fraction": 0.95}, r"val_fraction 0\.95"),
        ({"init": "/etc/passwd"}, r"init '/etc/passwd': expected 'auto'"),
        ({"multi_gpu": "maybe"}, r"multi_gpu 'maybe': expected true or false"),
        ({"epochs": 3}, r"unknown key\(s\) \['epochs'\] for segmentation"),
    ],
)
def test_bad_values_are_named(request_, message):
    with pytest.raises(InputError, match=message):
        parse_train_request("segmentation", request_)


def test_request_must_be_an_object():
    with pytest.raises(InputError, match="expected a JSON object"):
        parse_train_request("segmentation", ["max_epochs", 3])  # type: ignore[arg-type]
