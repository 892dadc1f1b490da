"""Weights files: ``<name>.pt`` (state dict) plus ``<name>.json`` (everything to rebuild it).

The sidecar records the network kind and kwargs, preprocessing settings, label/class
names and a version; loading checks it against what the caller expects, nnU-Net style,
so weights never silently meet the wrong pipeline. Writes are atomic (temp + rename).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..hashing import file_sha256
from ..layout import atomic_write_json
from .factory import build_network

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with its sidecar metadata."""

    network: torch.nn.Module
    meta: dict[str, Any]
    path: Path

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def read_sidecar(weights: str | Path | None) -> dict[str, Any] | None:
    """The sidecar beside ``weights`` as a dict; None without weights or without a sidecar beside them."""
    if weights is None or not sidecar_path(weights).is_file():
        return None
    return json.loads(sidecar_path(weights).read_text(encoding="utf-8"))


def load_model(weights: str | Path, expect_kind: str, expect: dict[str, Any] | None = None) -> LoadedModel:
    """Load ``weights`` + sidecar and return the network in eval mode.

    The sidecar must name ``expect_kind`` and carry every ``expect`` key with exactly that
    value (a missing key is a mismatch, not a pass), and the weights file must hash to the
    sidecar's ``sha256``: a mismatch means the pair is being replaced or is corrupt, and the
    caller (``ModelStore``) keeps serving the model it has.
    """
    weights = Path(weights)
    meta_path = sidecar_path(weights)
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"weights {weights.name} or its sidecar {meta_path.name} not found")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("kind") != expect_kind:
        raise ValueError(f"{weights.name}: sidecar kind {meta.get('kind')!r}, expected {expect_kind!r}")
    for key, value in (expect or {}).items():
        if key not in meta:
            raise ValueError(f"{weights.name}: sidecar lacks {key!r} (expected {value!r})")
        if meta[key] != value:
            raise ValueError(f"{weights.name}: sidecar {key}={meta[key]!r} does not match expected {value!r}")
    if "sha256" not in meta:
        raise ValueError(f"{weights.name}: sidecar lacks the weights' sha256")
    digest = file_sha256(weights)
    if digest != meta["sha256"]:
        raise ValueError(f"{weights.name}: file does not match the sha256 in {meta_path.name} (replaced meanwhile?)")
    network = build_network(meta["kind"], meta.get("network", {}))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    network.eval()
    logger.info("loaded %s model %s (version %s)", expect_kind, weights.name, meta.get("version"))
    return LoadedModel(network=network, meta=meta, path=weights)


def save_model(network: torch.nn.Module, weights: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Atomically write state dict + sidecar; the version is derived from the content."""
    weights = Path(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp_w = weights.with_name(f".{weights.name}.tmp{os.getpid()}")
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save(state, tmp_w)
    with open(tmp_w, "rb+") as fp:
        os.fsync(fp.fileno())
    digest = file_sha256(tmp_w)
    meta = {**meta, "sha256": digest, "version": f"{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}"}
    tmp_m = sidecar_path(weights).with_name(f".{weights.stem}.json.tmp{os.getpid()}")
    tmp_m.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
    # Either order leaves an instant where a reader sees one new file and one old one;
    # ``load_model`` checks the sha256 and refuses such a pair, so the order is not critical.
    os.replace(tmp_w, weights)
    os.replace(tmp_m, sidecar_path(weights))
    logger.info("published %s (version %s)", weights, meta["version"])
    return meta


def strip_version_suffix(version: str, tag: str) -> str:
    """``version`` without a trailing ``-<tag><8 hex digits>`` (what a post-hoc fit appends)."""
    head, sep, tail = version.rpartition(f"-{tag}")
    return head if sep and len(tail) == 8 and all(ch in "0123456789abcdef" for ch in tail) else version


def write_fitted_block(
    weights: Path, kind: str, key: str, record: dict[str, Any], tag: str, digest: str, out_dir: Path | None = None,
    updates: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Put a post-hoc fit's ``record`` under ``key`` in the sidecar of ``weights``; the new sidecar.

    ``updates``: other top-level sidecar keys the fit chose together with ``record`` (the
    segmentation's test-time mirroring, in ``inferer``), written in the same atomic replace.

    In place, or beside an atomic copy of the weights in ``out_dir``. The weights file is
    never changed (its sha256 stays valid); the version becomes ``<weights version>-<tag><digest>``
    (a previous ``-<tag>`` suffix replaced, not stacked), so served answers show which fit
    they used. Refuses a pair whose weights do not match the sidecar's sha256.
    """
    load_model(weights, kind)
    meta = json.loads(sidecar_path(weights).read_text(encoding="utf-8"))
    target = weights
    if out_dir is not None and Path(out_dir).resolve() != weights.parent.resolve():
        target = Path(out_dir) / weights.name
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_atomic(weights, target)
    base = strip_version_suffix(str(meta.get("version", "unknown")), tag)
    meta.update(updates or {})
    meta[key] = {**record, "base_version": base}
    meta["version"] = f"{base}-{tag}{digest}"
    atomic_write_json(sidecar_path(target), meta)
    return meta


def promote(staged: Path, weights: Path) -> None:
    """Copy a staged weights + sidecar pair to ``weights``, each file atomically (temp + rename), weights first.

    Training writes what it publishes into its run folder first and fits post-hoc blocks
    (calibration, post-processing) there, so a server watching ``weights`` never loads the
    new network without them, and a fit that reads the initial model's sidecar still finds
    it when the initial model is the one being replaced.
    """
    staged, weights = Path(staged), Path(weights)
    if staged.resolve() == weights.resolve():
        return
    weights.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in ((staged, weights), (sidecar_path(staged), sidecar_path(weights))):
        _copy_atomic(src, dst)
    logger.info("published %s (staged in %s)", weights, staged.parent)


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a synced temp file and a rename, so readers see the old or the new file."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb+") as fp:
        os.fsync(fp.fileno())
    os.replace(tmp, dst)


def model_stamp(weights: str | Path) -> tuple[float, float] | None:
    """Modification times of weights and sidecar: a cheap 'did it change' key."""
    weights = Path(weights)
    try:
        return (weights.stat().st_mtime_ns, sidecar_path(weights).stat().st_mtime_ns)
    except FileNotFoundError:
        return None
