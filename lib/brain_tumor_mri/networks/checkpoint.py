"""Weights files: ``<name>.pt`` (state dict) plus ``<name>.json`` (everything to rebuild it).

The sidecar records the network kind and kwargs, preprocessing settings, label/class
names and a version; loading checks it against what the caller expects, nnU-Net style,
so weights never silently meet the wrong pipeline. Writes are atomic (temp + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter(lambda: fp.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def load_model(weights: str | Path, expect_kind: str, expect: dict[str, Any] | None = None) -> LoadedModel:
    """Load ``weights`` + sidecar; check kind and any ``expect`` keys; return eval network."""
    weights = Path(weights)
    meta_path = sidecar_path(weights)
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"weights {weights} or its sidecar {meta_path.name} not found")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("kind") != expect_kind:
        raise ValueError(f"{weights.name}: sidecar kind {meta.get('kind')!r}, expected {expect_kind!r}")
    for key, value in (expect or {}).items():
        if key in meta and meta[key] != value:
            raise ValueError(f"{weights.name}: sidecar {key}={meta[key]!r} does not match expected {value!r}")
    network = build_network(meta["kind"], meta.get("network", {}))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    network.eval()
    logger.info("loaded %s model %s (version %s)", expect_kind, weights, meta.get("version"))
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
    digest = _sha256(tmp_w)
    meta = {**meta, "sha256": digest, "version": f"{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}"}
    tmp_m = sidecar_path(weights).with_name(f".{weights.stem}.json.tmp{os.getpid()}")
    tmp_m.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
    # Sidecar first would let a reader pair new meta with old weights; weights first means a
    # reader may see new weights with old meta for an instant, so readers check sha256.
    os.replace(tmp_w, weights)
    os.replace(tmp_m, sidecar_path(weights))
    logger.info("published %s (version %s)", weights, meta["version"])
    return meta


def model_stamp(weights: str | Path) -> tuple[float, float] | None:
    """Modification times of weights and sidecar: a cheap 'did it change' key."""
    weights = Path(weights)
    try:
        return (weights.stat().st_mtime_ns, sidecar_path(weights).stat().st_mtime_ns)
    except FileNotFoundError:
        return None
