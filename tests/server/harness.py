"""Test-side name for the shared server runner (lives in the library for the benchmark too)."""

import os
from pathlib import Path

from brain_tumor_dev.server_process import REPO, Server, copy_studies, free_port, isolated_env, snapshot

__all__ = ["REPO", "Server", "copy_studies", "free_port", "isolated_env", "snapshot", "tree_entries"]


def tree_entries(folder: Path) -> list[str]:
    """Every path under ``folder`` (relative, sorted); a folder removed while it is listed is skipped.

    The server removes its per-request temp folders just after answering, so a listing can race
    with a removal: ``os.walk`` skips a vanished folder where ``Path.rglob`` raises.
    """
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        found += [str((Path(root) / n).relative_to(folder)) for n in dirs + files]
    return sorted(found)
