"""Keeps the served model loaded and warm, and swaps in a newly published one.

Training publishes into ``<studies>/model/<name>.pt``; until a datastore has its own
fine-tuned model, the shipped demo weights in ``model_weights/`` serve. ``get()`` checks
file stamps (cheap) on every call and reloads only when they changed, so a retrained
model is used by the next request without restarting the server.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import torch

from ..runtime import to_memory_format
from .checkpoint import LoadedModel, load_model, model_stamp

logger = logging.getLogger(__name__)


class ModelUnavailable(RuntimeError):
    """No usable weights for a model (none published, none shipped, or none loadable)."""


class ModelStore:
    """Thread-safe holder of one model kind, preferring the datastore's published weights."""

    def __init__(
        self,
        kind: str,
        published: Path,
        shipped: Path,
        device: torch.device,
        channels_last: bool = False,
        expect: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.published = Path(published)
        self.shipped = Path(shipped)
        self.device = device
        self.channels_last = channels_last
        self.expect = expect or {}
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None
        self._key: tuple | None = None

    def source(self) -> Path | None:
        """The weights file that should serve now, or None when there is none."""
        for path in (self.published, self.shipped):
            if model_stamp(path) is not None:
                return path
        return None

    def available(self) -> bool:
        return self.source() is not None

    def get(self) -> LoadedModel:
        """The current model, (re)loaded if the serving file changed since last call."""
        path = self.source()
        if path is None:
            logger.error("no %s weights at %s or %s", self.kind, self.published, self.shipped)
            raise ModelUnavailable(
                f"no {self.kind} model is available: none trained on this datastore and none shipped"
            )
        key = (str(path), model_stamp(path))
        with self._lock:
            if self._model is None or key != self._key:
                try:
                    loaded = load_model(path, self.kind, self.expect)
                except Exception as exc:
                    if self._model is None:
                        logger.exception("cannot load %s weights %s", self.kind, path)
                        raise ModelUnavailable(
                            f"the {self.kind} model cannot be loaded ({type(exc).__name__})"
                        ) from exc
                    logger.exception("could not load %s; keeping version %s", path, self._model.version)
                    return self._model
                net = to_memory_format(loaded.network.to(self.device), self.channels_last)
                self._model = LoadedModel(network=net, meta=loaded.meta, path=loaded.path)
                self._key = key
            return self._model
