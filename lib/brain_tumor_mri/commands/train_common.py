"""The ``brain-tumor train`` options every model shares, and the ``TrainOptions`` they become.

Defaults come from the same typed ``AppConfig`` the server parses its ``--conf`` into
(here with no ``--conf``: the documented defaults), so a flag left out means exactly what
the server would use; ``options_from_args`` then applies the flags that were given.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import AppConfig
from ..training.options import TrainOptions

logger = logging.getLogger(__name__)


def add_common_arguments(p: argparse.ArgumentParser, weights_name: str, *, out_is_dir: bool = False) -> None:
    """Options every training target shares (data, schedule, output, device, data loading)."""
    out_help = f"publish {'into DIR' if out_is_dir else 'to'} (default: STUDIES/model/{weights_name})"
    p.add_argument("studies", type=Path, metavar="STUDIES", help="datastore folder (MONAI Label studies)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: config train_epochs)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the model's)")
    p.add_argument("--init", default="auto", metavar="WEIGHTS|auto|none",
                   help="weights to fine-tune; auto = the currently served model; none = from scratch")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="DIR" if out_is_dir else "WEIGHTS", help=out_help)
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="metrics, curves (default: STUDIES/model/runs/...)")
    p.add_argument("--seed", type=int, help="random seed (default: config seed)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default: config device)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), help="bf16 autocast on the CPU (default: auto)")
    p.add_argument("--no-amp", action="store_true", help="full fp32 (no bf16 on the CPU, no fp16 on a GPU)")
    p.add_argument("--val-fraction", type=float, help="validation split (default: config train_val_fraction)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: config)")
    p.add_argument("--batch-size", type=int, help="samples per step (default: auto; CPU 2 patches / 16 images)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="wall-time budget; the best epoch so far is kept")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this node: nccl on GPUs, gloo on CPU (default: 1)")  # fmt: skip
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default: half the cores, <= 8)")
    p.add_argument("--cache-dir", type=Path, help="preprocessed-case cache (default: STUDIES/model/cache)")
    p.add_argument("--cache-ram-mb", type=float, help="hold cases in RAM when they fit this (default: 1024)")
    p.add_argument("--domain-random", type=float, help="domain randomisation strength, 0 = off (default: 1)")
    p.add_argument("--replay", type=Path, metavar="STUDIES", help="second datastore mixed into every epoch")
    p.add_argument("--replay-fraction", type=float, help="share of samples drawn from --replay (default: config "
                   "train_replay_fraction, 0.25)")  # fmt: skip


#: CLI flag (argparse dest) -> options field, for flags whose value is taken as given
_FLAGS = {"epochs": "epochs", "lr": "lr", "seed": "seed", "device": "device", "bf16": "bf16",
          "val_fraction": "val_fraction", "patience": "patience", "batch_size": "batch_size", "workers": "workers",
          "cache_ram_mb": "cache_ram_mb", "domain_random": "domain_random", "nproc": "nproc",
          "max_minutes": "max_minutes", "replay_fraction": "replay_fraction", "samples_per_epoch": "samples_per_epoch",
          "fg_fraction": "fg_fraction", "schedule": "schedule", "input_size": "input_size", "cv_folds": "cv_folds",
          "adapt_minutes": "adapt_minutes"}  # fmt: skip


def options_from_args(args: argparse.Namespace, model: str) -> TrainOptions:
    """The run's options: config defaults for ``args.studies``, then every flag that was given."""
    cfg = AppConfig.from_conf({}, None, args.studies)
    opts = TrainOptions.from_config(cfg, model)
    changes = {field: getattr(args, flag) for flag, field in _FLAGS.items() if getattr(args, flag, None) is not None}
    for name in ("out", "run_dir", "cache_dir", "replay"):
        value = getattr(args, name, None)
        if value is not None:
            changes["replay_studies" if name == "replay" else name] = Path(value).resolve()
    if "replay_studies" in changes and "replay_fraction" not in changes:  # --replay alone replays at the config share
        changes["replay_fraction"] = cfg.train_replay_fraction
    changes["init"] = args.init if args.init in ("auto", "none") else str(Path(args.init).resolve())
    if args.no_amp:
        changes["amp"] = False
    if getattr(args, "allow_missing_sequences", False):
        changes["allow_missing"] = True
    if model == "segmentation" and args.patch is not None:
        changes["patch"] = args.patch
    explicit = tuple(sorted(k for k, v in changes.items() if k not in ("max_minutes", "replay_fraction") or v))
    if getattr(args, "no_adapt", False):
        changes["adapt"] = False
    if getattr(args, "spacing", None) is not None:
        changes["spacing" if model == "segmentation" else "class_spacing"] = args.spacing
    if model == "classification":
        changes["kinds"] = ("2d", "3d") if args.kind == "both" else (args.kind,)
    if model == "segmentation" and args.spacing is not None and args.init != "none":
        raise ValueError("--spacing applies to training from scratch (--init none); fine-tuning keeps the "
                         "initial model's spacing")  # fmt: skip
    return opts.replace(**changes, explicit=explicit).checked()
