"""``brain-tumor``: the command line for everything a user runs outside Slicer.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``--help``
stays fast and a torch-free command does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "sample-data": ("brain_tumor_mri.data.synthetic_cli", "generate synthetic multi-sequence tumour cases"),
    "import": ("brain_tumor_mri.data.importers", "build a MONAI Label datastore from BraTS/MSD/Kaggle data"),
    "segment": ("brain_tumor_mri.commands.segment", "segment BraTS-layout case folders offline"),
    "evaluate": ("brain_tumor_mri.commands.evaluate", "Dice, HD95, IoU, sensitivity, specificity per BraTS region"),
    "classify": ("brain_tumor_mri.commands.classify", "classify 3D cases or 2D images offline"),
    "calibrate": ("brain_tumor_mri.commands.calibrate", "fit temperature scaling and OOD thresholds into a sidecar"),
    "train": ("brain_tumor_mri.commands.train", "train or fine-tune a model from a datastore"),
}


def main(
    argv: list[str] | None = None,
    commands: dict[str, tuple[str, str]] | None = None,
    prog: str = "brain-tumor",
    description: str | None = None,
) -> int:
    """Parse ``argv``, run the chosen sub-command; exit code 2 on bad input (``ValueError``)."""
    commands = COMMANDS if commands is None else commands
    parser = argparse.ArgumentParser(prog=prog, description=description or __doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if a in commands), None)
    for name, (module, help_) in commands.items():
        p = sub.add_parser(name, help=help_)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    command = importlib.import_module(commands[args.command][0])
    try:
        return int(command.run(args) or 0)
    except ValueError as exc:  # bad input: a clear message, no traceback
        logging.getLogger(prog).error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
