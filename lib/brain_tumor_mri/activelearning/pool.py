"""The candidate pool for "Next sample": unlabelled 3D cases not handed out recently.

Only 3D cases are served (2D classification images cannot be segmented). A case served
to one annotator is reserved for a while so a second annotator asking at the same time
gets a different one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..layout import IMAGE_EXTS_3D, read_case_meta


class Reservations:
    """Thread-safe in-memory reservations with a time-to-live."""

    def __init__(self, ttl_s: float = 600.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}

    def active(self) -> set[str]:
        now = time.monotonic()
        with self._lock:
            self._until = {k: t for k, t in self._until.items() if t > now}
            return set(self._until)

    def reserve(self, case_id: str) -> None:
        with self._lock:
            self._until[case_id] = time.monotonic() + self.ttl_s


def is_3d_case(studies: Path, datastore: Any, image_id: str) -> bool:
    """True for a 3D case (by its case.json, else by the image file's extension)."""
    meta = read_case_meta(studies, image_id) if _safe_id(image_id) else {}
    if meta.get("kind"):
        return meta["kind"] == "3d"
    name = str(datastore.get_image_info(image_id).get("name", ""))
    return name.lower().endswith(IMAGE_EXTS_3D)


def _safe_id(image_id: str) -> bool:
    return "/" not in image_id and "\\" not in image_id and ".." not in image_id and bool(image_id)


def candidates(studies: Path, datastore: Any, request: dict[str, Any], reservations: Reservations) -> list[str]:
    """Unlabelled 3D case ids, minus reserved ones, in a stable (sorted) order."""
    unlabeled = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
    reserved = reservations.active()
    return sorted(i for i in unlabeled if i not in reserved and is_3d_case(studies, datastore, i))
