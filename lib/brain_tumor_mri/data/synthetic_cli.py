"""``brain-tumor sample-data``: write synthetic multi-sequence tumour cases and 2D pictures.

Hold-out experiments: ``--anatomies`` / ``--exclude-anatomy`` choose the real brains (leave
one anatomy out of a training set, then make a test set on it alone), ``--domain`` the
contrast randomisation, ``--profiles`` the scanner mix (``site_a:0.8,site_b:0.2`` is mostly
one scanner) and ``--start-index`` keeps a test set's case indices apart from training's.
"""

from __future__ import annotations

import argparse
import logging
import shlex

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sample-data``: output folder, case count, seed, voxel size, 2D pictures, generator choices."""
    from .anatomies import ANATOMIES
    from .synthetic import METASTASIS_FRACTION
    from .synthetic_contrast import DOMAINS
    from .synthetic_scanner import PROFILES

    parser.add_argument("out_dir", metavar="DIR", help="output folder (brats/, kaggle/, README.md)")
    parser.add_argument("--cases", type=int, default=8, help="number of 3D cases (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data (default 0)")
    parser.add_argument(
        "--spacing", type=float, default=1.0, help="isotropic voxel size in mm over the BraTS field of view (default 1)"
    )
    parser.add_argument("--slices-per-case", type=int, default=4, help="2D Kaggle-style pictures per case (default 4)")
    parser.add_argument(
        "--anatomies",
        default=None,
        metavar="A,B",
        help=f"real brains to use, comma-separated (default all: {','.join(ANATOMIES)})",
    )
    parser.add_argument(
        "--exclude-anatomy",
        action="append",
        default=[],
        metavar="A",
        help="leave this anatomy out (repeatable; for leave-one-anatomy-out training sets)",
    )
    parser.add_argument(
        "--domain",
        choices=DOMAINS,
        default="mixed",
        help="contrast randomisation: standard (plausible orderings), wild (any), mixed (default)",
    )
    parser.add_argument(
        "--profiles",
        default="random",
        metavar="NAME[:W],...",
        help=f"scanner profile mix, e.g. site_a:0.8,site_b:0.2 (profiles: {', '.join(PROFILES)}; default random)",
    )
    parser.add_argument(
        "--metastasis-fraction",
        type=float,
        default=METASTASIS_FRACTION,
        help=f"share of multi-lesion metastasis cases (default {METASTASIS_FRACTION:g})",
    )
    parser.add_argument("--start-index", type=int, default=0, help="index of the first case (default 0)")


def parse_profiles(text: str) -> tuple[tuple[str, float], ...]:
    """``site_a:0.8,site_b`` -> (("site_a", 0.8), ("site_b", 1.0))."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, weight = item.partition(":")
        try:
            out.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"--profiles: bad weight in {item!r}") from None
    if not out:
        raise ValueError("--profiles: no profile given")
    return tuple(out)


def options_from_args(args: argparse.Namespace):
    """The ``GeneratorOptions`` that ``args`` describe (ValueError on bad choices)."""
    from .anatomies import select_anatomies
    from .synthetic import GeneratorOptions

    anatomies = select_anatomies(args.anatomies, args.exclude_anatomy)
    return GeneratorOptions(
        anatomies=anatomies,
        domain=args.domain,
        profiles=parse_profiles(args.profiles),
        metastasis_fraction=args.metastasis_fraction,
    )


def run(args: argparse.Namespace) -> int:
    """Generate the dataset described by ``args``; bad values raise ``ValueError`` (exit 2)."""
    from .synthetic_dataset import write_dataset

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    options = options_from_args(args)
    parts = [
        "brain-tumor sample-data",
        shlex.quote(str(args.out_dir)),
        f"--cases {args.cases}",
        f"--seed {args.seed}",
        f"--spacing {args.spacing:g}",
        f"--slices-per-case {args.slices_per_case}",
        f"--anatomies {','.join(options.anatomies)}",
        f"--domain {options.domain}",
        f"--profiles {','.join(f'{n}:{w:g}' for n, w in options.profiles)}",
        f"--metastasis-fraction {options.metastasis_fraction:g}",
    ]
    if args.start_index:
        parts.append(f"--start-index {args.start_index}")
    logger.info("generating %d synthetic case(s) into %s", args.cases, args.out_dir)
    write_dataset(
        args.out_dir,
        args.cases,
        args.seed,
        args.spacing,
        args.slices_per_case,
        command=" ".join(parts),
        options=options,
        start_index=args.start_index,
    )
    return 0
