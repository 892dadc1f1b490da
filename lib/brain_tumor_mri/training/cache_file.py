"""The on-disk format of one preprocessed case, written atomically and verified on read.

A file is ``MAGIC``, a 4-byte little-endian header length, a JSON header (cache key, case
id, array names/dtypes/shapes/offsets, CRC-32 of the payload, free-form meta) and the raw
arrays. A reader checks the magic, the header, the exact file size and the CRC, so a
truncated or corrupted file raises ``CacheCorrupt`` and is rebuilt, never trusted.
A writer fills a temporary file beside the target, fsyncs it and renames it into place:
a reader sees the old file, the complete new one, or none -- never part of one, whether
the writer finishes, fails (a full disk is a ``CacheError`` naming the folder) or is
killed (its temporary file is removed by the next run, ``remove_orphans``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MAGIC = b"BTCASE01"
SUFFIX = ".btc"
_TMP_MARK = ".tmp-"
_HEAD = struct.Struct("<I")


class CacheCorrupt(ValueError):
    """A cache file that is truncated, damaged or for another key; it is rebuilt."""


class CacheError(OSError):
    """The cache cannot be written (full disk, no permission); names the folder and the fix."""


@dataclass
class CacheEntry:
    """One preprocessed case: named arrays plus metadata (e.g. missing sequences)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes the arrays take in memory."""
        return sum(int(a.nbytes) for a in self.arrays.values())


def _header(key: str, case_id: str, entry: CacheEntry) -> tuple[dict[str, Any], list[bytes]]:
    """The JSON header and the payload chunks of ``entry``."""
    chunks, arrays, offset, crc = [], [], 0, 0
    for name, array in entry.arrays.items():
        data = np.ascontiguousarray(array).tobytes()
        arrays.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset,
                       "nbytes": len(data)})  # fmt: skip
        crc = zlib.crc32(data, crc)
        offset += len(data)
        chunks.append(data)
    header = {"key": key, "case_id": case_id, "arrays": arrays, "payload": offset, "crc32": crc, "meta": entry.meta}
    return header, chunks


def temp_name(path: Path) -> Path:
    """The temporary file a writer on this host and process fills before the rename."""
    return path.with_name(f".{path.name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}")


def write_entry(path: Path, key: str, case_id: str, entry: CacheEntry) -> int:
    """Atomically write ``entry`` to ``path``; returns the file size. ``CacheError`` on failure."""
    header, chunks = _header(key, case_id, entry)
    head = json.dumps(header, sort_keys=True).encode("utf-8")
    tmp = temp_name(path)
    size = len(MAGIC) + _HEAD.size + len(head) + header["payload"]
    try:
        with open(tmp, "wb") as fp:
            fp.write(MAGIC + _HEAD.pack(len(head)) + head)
            for chunk in chunks:
                fp.write(chunk)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                exc.errno, f"training cache {path.parent}: disk full while writing case {case_id} "
                f"({size / 1e6:.1f} MB); free space there or point train_cache_dir / --cache-dir elsewhere",
            ) from exc  # fmt: skip
        raise CacheError(exc.errno, f"training cache {path.parent}: cannot write case {case_id}: {exc}") from exc
    return size


def _parse_header(blob: bytes | bytearray, path: Path) -> tuple[dict[str, Any], int]:
    """Header dict and payload start of a file's bytes; ``CacheCorrupt`` if malformed."""
    if len(blob) < len(MAGIC) + _HEAD.size or bytes(blob[: len(MAGIC)]) != MAGIC:
        raise CacheCorrupt(f"{path.name}: not a cache file or truncated header")
    (n,) = _HEAD.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _HEAD.size
    if len(blob) < start + n:
        raise CacheCorrupt(f"{path.name}: truncated header")
    try:
        header = json.loads(bytes(blob[start : start + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CacheCorrupt(f"{path.name}: damaged header ({exc})") from exc
    return header, start + n


def peek(path: Path, key: str) -> int:
    """Cheap check (header and size only) that ``path`` is a complete file for ``key``; its size."""
    try:
        with open(path, "rb") as fp:
            blob = fp.read(64 * 1024)
            size = os.fstat(fp.fileno()).st_size
    except OSError as exc:
        raise CacheCorrupt(f"{path.name}: unreadable ({exc})") from exc
    header, start = _parse_header(blob, path)
    if header.get("key") != key:
        raise CacheCorrupt(f"{path.name}: written for another key")
    if size != start + int(header.get("payload", -1)):
        raise CacheCorrupt(f"{path.name}: size {size} does not match its header (truncated?)")
    return size


def read_entry(path: Path, key: str) -> CacheEntry:
    """Read and fully verify ``path`` (magic, header, key, size, CRC-32); ``CacheCorrupt`` if not sound."""
    try:
        with open(path, "rb") as fp:
            blob = bytearray(os.fstat(fp.fileno()).st_size)
            fp.readinto(blob)
    except OSError as exc:
        raise CacheCorrupt(f"{path.name}: unreadable ({exc})") from exc
    header, start = _parse_header(blob, path)
    if header.get("key") != key:
        raise CacheCorrupt(f"{path.name}: written for another key")
    payload = memoryview(blob)[start:]
    if len(payload) != int(header.get("payload", -1)):
        raise CacheCorrupt(f"{path.name}: {len(payload)} payload bytes, header says {header.get('payload')}")
    if zlib.crc32(payload) != header.get("crc32"):
        raise CacheCorrupt(f"{path.name}: checksum mismatch (damaged file)")
    arrays = {}
    for a in header["arrays"]:
        chunk = payload[a["offset"] : a["offset"] + a["nbytes"]]
        arrays[a["name"]] = np.frombuffer(chunk, dtype=np.dtype(a["dtype"])).reshape(a["shape"])
    return CacheEntry(arrays, dict(header.get("meta", {})))


def remove_orphans(folder: Path) -> int:
    """Delete temporary files this host's dead writers left behind (a killed run); returns how many."""
    mark = f"{_TMP_MARK}{socket.gethostname()}-"
    removed = 0
    for tmp in folder.glob(f".*{SUFFIX}{_TMP_MARK}*"):
        tail = tmp.name.rpartition(mark)[2] if mark in tmp.name else ""
        if not tail.isdigit() or _alive(int(tail)):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
