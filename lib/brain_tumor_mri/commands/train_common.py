"""Options and helpers every ``brain-tumor train`` target shares.

Kept apart from ``train`` (which dispatches to the targets) so a target module can use
them without importing the dispatcher that imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..config import AppConfig

logger = logging.getLogger(__name__)


def app_config(studies: str | Path) -> AppConfig:
    """The default config for ``studies`` (shipped weights from ``$BRAIN_TUMOR_WEIGHTS_DIR`` or the checkout)."""
    return AppConfig.from_conf({}, None, studies)


def add_common_arguments(
    p: argparse.ArgumentParser,
    weights_name: str,
    *,
    out_is_dir: bool = False,
    batch_size: int = 2,
    batch_unit: str = "patches",
    lr_help: str = "learning rate (default: config train_lr)",
) -> None:
    """Options every training target shares (data, schedule, output, device)."""
    out_help = f"publish {'into DIR' if out_is_dir else 'to'} (default: STUDIES/model/{weights_name})"
    p.add_argument("studies", type=Path, metavar="STUDIES", help="datastore folder (MONAI Label studies)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: config train_epochs)")
    p.add_argument("--lr", type=float, help=lr_help)
    p.add_argument("--init", default="auto", metavar="WEIGHTS|auto|none",
                   help="weights to fine-tune; auto = the currently served model; none = from scratch")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="DIR" if out_is_dir else "WEIGHTS", help=out_help)
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="metrics, curves (default: STUDIES/model/runs/...)")
    p.add_argument("--seed", type=int, help="random seed (default: config seed)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default: config device)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), help="bf16 autocast on the CPU (default: auto)")
    p.add_argument("--val-fraction", type=float, help="validation split by case (default: config)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: config)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"{batch_unit} per step (default: {batch_size})")
    p.add_argument("--max-minutes", type=float, default=0.0, help="wall-time budget; the best epoch so far is kept")


def resolve_init(choice: str, published: Path, shipped: Path) -> Path | None:
    """``auto`` -> published, else shipped, else None; ``none`` -> None; else that file."""
    if choice == "none":
        return None
    if choice == "auto":
        return next((p for p in (published, shipped) if p.is_file() and p.with_suffix(".json").is_file()), None)
    path = Path(choice)
    if not path.is_file():
        raise ValueError(f"--init {choice}: weights file not found")
    return path


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[Callable[[], bool]]:
    """A ``should_stop`` that turns SIGTERM into a clean stop (nothing is published)."""
    state = {"stop": False}

    def handle(signum: int, frame: Any) -> None:
        """Remember the request; the run checks it between steps."""
        logger.warning("stop requested (signal %d); finishing without publishing", signum)
        state["stop"] = True

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, handle) if in_main else None
    try:
        yield lambda: state["stop"]
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
