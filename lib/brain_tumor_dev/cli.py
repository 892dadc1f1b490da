"""``brain-tumor-dev``: developer commands (benchmarks, simulations) that need a source checkout."""

from __future__ import annotations

import sys

from brain_tumor_mri.cli import main as run_cli

COMMANDS: dict[str, tuple[str, str]] = {
    "benchmark": ("brain_tumor_dev.benchmark", "measure inference speed and memory against a baseline"),
    "bench-pacs": ("brain_tumor_dev.bench_pacs", "time to first segmentation of a study from a PACS, cold and warm"),
    "simulate-active-learning": ("brain_tumor_dev.simulate_al", "simulated annotation loop per strategy"),
    "al-archive": ("brain_tumor_dev.al_pool", "write a site-like archive (uneven domains and tumour types) for AL"),
    "fuzz": ("brain_tumor_dev.fuzz", "schema-driven fuzzing of a live server (schemathesis): no 5xx, datastore intact"),
    "adapt-curve": ("brain_tumor_dev.adapt_curve", "site adaptation: Dice on a new source vs corrections"),
    "soak": ("brain_tumor_dev.soak", "mixed load on a real server: resources flat, no label lost"),
}


def main(argv: list[str] | None = None) -> int:
    """Run one developer command (same conventions as ``brain-tumor``)."""
    return run_cli(argv, COMMANDS, prog="brain-tumor-dev", description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
