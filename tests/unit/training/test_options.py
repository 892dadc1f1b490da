"""One options object: from the server's parsed config plus the request, or from the CLI's flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from brain_tumor_mri.commands import train as train_cli
from brain_tumor_mri.commands.train_common import options_from_args
from brain_tumor_mri.config import AppConfig
from brain_tumor_mri.training.options import TrainOptions
from brain_tumor_mri.training.request import parse_train_request

SERVER_CONF = {"seed": "5", "train_amp": "false", "bf16": "off", "seg_spacing": "1.5",
               "allow_missing_sequences": "true", "train_epochs": "7", "train_domain_random": "0.25",
               "train_cache_dir": "/tmp/x-cache", "train_workers": "0", "train_patch": "64"}  # fmt: skip


def test_server_config_and_request_reach_the_options(tmp_path: Path) -> None:
    cfg = AppConfig.from_conf(SERVER_CONF, None, tmp_path)
    request = parse_train_request("segmentation", {"max_epochs": "3", "init": "none", "model": "segmentation"})
    opts = TrainOptions.from_config(cfg, "segmentation", request)
    assert (opts.seed, opts.amp, opts.bf16, opts.spacing, opts.allow_missing) == (5, False, "off", 1.5, True)
    assert (opts.domain_random, opts.cache_dir, opts.workers, opts.patch) == (0.25, Path("/tmp/x-cache"), 0, 64)
    assert opts.epochs == 3 and opts.init == "none"  # the request overrides the server's defaults
    assert TrainOptions.from_config(cfg, "segmentation", {}).epochs == 7
    assert opts.patch_size(1.5) == (64, 64, 64)
    assert TrainOptions.from_config(AppConfig.from_conf({}, None, tmp_path), "segmentation").patch_size(1.0) == (
        128, 128, 128)  # fmt: skip


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_and_defaults_match_the_server(tmp_path: Path) -> None:
    args = _cli(["segmentation", str(tmp_path), "--init", "none"])
    server = TrainOptions.from_config(AppConfig.from_conf({}, None, tmp_path), "segmentation", {"init": "none"})
    assert options_from_args(args, "segmentation") == server  # no flag: exactly the server's defaults
    args = _cli(["segmentation", str(tmp_path), "--init", "none", "--spacing", "1", "--patch", "112", "--no-amp",
                 "--domain-random", "0", "--replay", str(tmp_path), "--replay-fraction", "0.3"])  # fmt: skip
    opts = options_from_args(args, "segmentation")
    assert (opts.spacing, opts.patch, opts.amp, opts.domain_random) == (1.0, 112, False, 0.0)
    assert opts.replay_studies == tmp_path.resolve() and opts.replay_fraction == 0.3
    alone = options_from_args(_cli(["segmentation", str(tmp_path), "--replay", str(tmp_path)]), "segmentation")
    assert alone.replay_fraction == AppConfig.from_conf({}, None, tmp_path).train_replay_fraction > 0  # not 0: a no-op
    assert "--spacing 1.0 --patch 112" in opts.to_command()
    cls = options_from_args(_cli(["classification", str(tmp_path), "--kind", "3d", "--spacing", "3"]), "classification")
    assert cls.kinds == ("3d",) and cls.class_spacing == 3.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"patch": 40}, "multiple of 16"),
        ({"epochs": 0}, "epochs 0"),
        ({"replay_fraction": 0.5}, "needs replay_studies"),
        ({"schedule": "step"}, "schedule 'step'"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, change: dict, message: str) -> None:
    opts = TrainOptions.from_config(AppConfig.from_conf({}, None, tmp_path), "segmentation")
    with pytest.raises(ValueError, match=message):
        opts.replace(**change).checked()


def test_bad_conf_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_patch"):
        AppConfig.from_conf({"train_patch": "40"}, None, tmp_path)
    with pytest.raises(ValueError, match="train_domain_random"):
        AppConfig.from_conf({"train_domain_random": "-1"}, None, tmp_path)
