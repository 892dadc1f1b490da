"""The served weights as files: download them as a ZIP, replace them from one, safely.

A served model is one or more weights files, each a ``<name>.pt`` state dict plus its
``<name>.json`` sidecar (``networks.checkpoint``), held by a ``ModelStore`` that prefers
the datastore's published copy over the shipped one. The archive ``GET /model/{model}``
answers holds exactly the pairs that serve now, each sidecar with its absolute paths cut
to folder names (``networks.portable``: the archive is what goes to another site);
``PUT /model/{model}`` takes an archive of the same shape and publishes it only if every
pair loads the way the store will load it (``load_model``: sidecar kind and expectations,
sha256, ``torch.load(weights_only=True)``, a strict state-dict load), atomically (rename),
keeping the replaced pair under ``<studies>/model/replaced/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from ..imageio import InputError
from ..networks.checkpoint import load_model, sidecar_path
from ..networks.portable import portable_meta
from ..networks.store import ModelStore

logger = logging.getLogger(__name__)

#: largest weights or sidecar file accepted from an archive (the demo weights are ~10 MB)
MAX_MEMBER_BYTES = 512 * 1024 * 1024
#: folder (inside the published-model folder) that keeps each replaced pair
REPLACED_DIR = "replaced"


def _pair_names(store: ModelStore) -> tuple[str, str]:
    return store.published.name, sidecar_path(store.published).name


def _read_pair(weights: Path, attempts: int = 3) -> tuple[bytes, bytes]:
    """Weights and sidecar bytes that belong together (retried if a publish lands in between)."""
    for _ in range(attempts):
        meta_bytes = sidecar_path(weights).read_bytes()
        data = weights.read_bytes()
        if json.loads(meta_bytes).get("sha256") == hashlib.sha256(data).hexdigest():
            return data, meta_bytes
        time.sleep(0.2)
    raise RuntimeError(f"{weights.name} keeps changing while being read")


def weights_archive(stores: list[ModelStore]) -> bytes | None:
    """A ZIP of every weights + sidecar pair that serves now, sidecars without server paths (None when none)."""
    buffer = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buffer, "w") as archive:
        for store in stores:
            source = store.source()
            if source is None:
                continue
            data, meta = _read_pair(source)
            meta = json.dumps(portable_meta(json.loads(meta)), indent=2).encode("utf-8")
            weights_name, meta_name = _pair_names(store)
            archive.writestr(weights_name, data, compress_type=zipfile.ZIP_STORED)
            archive.writestr(meta_name, meta, compress_type=zipfile.ZIP_DEFLATED)
            count += 1
    return buffer.getvalue() if count else None


def weights_info(stores: list[ModelStore]) -> list[dict[str, Any]]:
    """What serves for each weights file: name, origin, version, sha256, size, time (no paths)."""
    out: list[dict[str, Any]] = []
    for store in stores:
        source = store.source()
        if source is None:
            out.append({"name": store.published.name, "source": None})
            continue
        meta = json.loads(sidecar_path(source).read_text(encoding="utf-8"))
        stat = source.stat()
        out.append({
            "name": source.name,
            "source": "published" if source == store.published else "shipped",
            "version": meta.get("version"),
            "sha256": meta.get("sha256"),
            "size": stat.st_size,
            "modified_time": int(stat.st_mtime),
        })  # fmt: skip
    return out


def _members(archive: zipfile.ZipFile, stores: list[ModelStore]) -> list[ModelStore]:
    """The stores the archive brings a complete pair for; InputError for anything else in it."""
    allowed = {name: store for store in stores for name in _pair_names(store)}
    names = [i.filename for i in archive.infolist() if not i.is_dir()]
    unexpected = sorted(n for n in names if n not in allowed)
    if unexpected:
        raise InputError(f"unexpected file(s) {unexpected}; the archive holds {sorted(allowed)} (as downloaded)")
    for info in archive.infolist():
        if info.file_size > MAX_MEMBER_BYTES:
            raise InputError(f"{info.filename}: {info.file_size:,} bytes, more than the {MAX_MEMBER_BYTES:,} accepted")
    chosen = []
    for store in stores:
        present = [n in names for n in _pair_names(store)]
        if any(present) and not all(present):
            raise InputError(f"{' and '.join(_pair_names(store))} must come together")
        if all(present):
            chosen.append(store)
    if not chosen:
        raise InputError(f"no weights in the archive; expected {sorted(allowed)}")
    return chosen


def _extract(archive: zipfile.ZipFile, name: str, dest: Path) -> None:
    """Copy one member out, bounded while reading (a header may understate the size)."""
    written = 0
    try:
        with archive.open(name) as src, open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > MAX_MEMBER_BYTES:
                    raise InputError(f"{name} is larger than the {MAX_MEMBER_BYTES:,} bytes accepted")
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise InputError(f"{name} is damaged in the archive ({type(exc).__name__})") from None
    except RuntimeError as exc:  # zipfile's word for an encrypted member
        raise InputError(f"{name} cannot be read from the archive ({exc})") from None


def _keep_previous(store: ModelStore, stamp: str) -> dict[str, Any] | None:
    """Hard-link (or copy) the published pair into ``replaced/<stamp>/``; its version, if any."""
    if not store.published.is_file():
        return None
    keep = store.published.parent / REPLACED_DIR / stamp
    keep.mkdir(parents=True, exist_ok=True)
    for src in (store.published, sidecar_path(store.published)):
        if src.is_file():
            try:
                os.link(src, keep / src.name)
            except OSError:
                shutil.copy2(src, keep / src.name)
    meta = json.loads(sidecar_path(store.published).read_text(encoding="utf-8"))
    return {"name": store.published.name, "version": meta.get("version"), "kept_as": f"{REPLACED_DIR}/{stamp}"}


def replace_weights(stores: list[ModelStore], upload: IO[bytes]) -> dict[str, Any]:
    """Validate and publish the weights pairs in ``upload`` (a ZIP); InputError if unfit.

    Nothing is published unless every pair in the archive loads; a store serving a model
    keeps serving it until the new pair is complete (``load_model`` refuses a half-swapped
    pair by its sha256), then reloads on its next request.
    """
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError("not a ZIP archive; upload the archive GET /model/{model} gives") from None
    with archive:
        chosen = _members(archive, stores)
        folder = chosen[0].published.parent
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=folder))
        try:
            loaded = []
            for store in chosen:
                weights_name, meta_name = _pair_names(store)
                _extract(archive, weights_name, staging / weights_name)
                _extract(archive, meta_name, staging / meta_name)
                try:
                    model = load_model(staging / weights_name, store.kind, store.expect)
                except Exception as exc:  # anything an untrusted file makes the loader raise is unfit input
                    raise InputError(f"{weights_name} does not load as a {store.kind} model: {_why(exc)}") from None
                loaded.append((store, model.meta))
            return _publish(loaded, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _why(exc: Exception) -> str:
    """A short reason for a failed load (torch's unpickler message is a page long)."""
    if isinstance(exc, pickle.UnpicklingError):
        return "not a plain state dict (torch.load with weights_only=True refused it)"
    return str(exc).split("\n")[0][:300]


def _publish(loaded: list[tuple[ModelStore, dict[str, Any]]], staging: Path) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    published, previous = [], []
    for store, meta in loaded:
        weights_name, meta_name = _pair_names(store)
        kept = _keep_previous(store, stamp)
        if kept:
            previous.append(kept)
        os.replace(staging / weights_name, store.published)
        os.replace(staging / meta_name, sidecar_path(store.published))
        published.append({"name": weights_name, "version": meta.get("version"), "sha256": meta.get("sha256")})
        logger.info("published uploaded %s weights %s (version %s)", store.kind, weights_name, meta.get("version"))
    return {"published": published, "previous": previous}
