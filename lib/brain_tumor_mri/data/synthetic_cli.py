"""``brain-tumor sample-data``: write synthetic multi-sequence tumour cases and 2D pictures."""

from __future__ import annotations

import argparse
import logging
import shlex

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sample-data``: output folder, case count, seed, voxel size, 2D pictures."""
    parser.add_argument("out_dir", metavar="DIR", help="output folder (brats/, kaggle/, README.md)")
    parser.add_argument("--cases", type=int, default=8, help="number of 3D cases (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data (default 0)")
    parser.add_argument(
        "--spacing", type=float, default=1.0, help="isotropic voxel size in mm over the BraTS field of view (default 1)"
    )
    parser.add_argument("--slices-per-case", type=int, default=4, help="2D Kaggle-style PNGs per case (default 4)")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset described by ``args``; bad values raise ``ValueError`` (exit 2)."""
    from .synthetic import write_dataset

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    command = " ".join(
        [
            "brain-tumor sample-data",
            shlex.quote(str(args.out_dir)),
            f"--cases {args.cases}",
            f"--seed {args.seed}",
            f"--spacing {args.spacing:g}",
            f"--slices-per-case {args.slices_per_case}",
        ]
    )
    logger.info("generating %d synthetic case(s) into %s", args.cases, args.out_dir)
    write_dataset(args.out_dir, args.cases, args.seed, args.spacing, args.slices_per_case, command=command)
    return 0
