"""Content hashes of files: one streaming sha256 for weights, cache keys, labels and images."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20  # read 1 MiB at a time: volumes and weights never sit in memory twice


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()
