"""Bounded admission for inference: a few run, a few wait, the rest get a clean 503.

MONAI Label runs inference inside the request; without a bound, a burst of requests
piles up memory (each holds its volume) until the server falls over.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from fastapi import HTTPException


class Admission:
    """Allow ``concurrency`` running and ``max_queue`` waiting; refuse the rest with 503."""

    def __init__(self, concurrency: int, max_queue: int) -> None:
        self._run = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._inside = 0
        self._limit = concurrency + max_queue

    @contextlib.contextmanager
    def slot(self, what: str) -> Iterator[None]:
        with self._lock:
            if self._inside >= self._limit:
                raise HTTPException(
                    status_code=503, detail=f"{what}: server busy ({self._inside} requests in progress); retry shortly"
                )
            self._inside += 1
        try:
            with self._run:
                yield
        finally:
            with self._lock:
                self._inside -= 1
