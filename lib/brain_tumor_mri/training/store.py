"""Where a run reads its preprocessed cases from: the disk cache, or RAM when they fit.

``open_store`` makes sure every case has a sound cache entry and then decides: when all
entries together fit the stated RAM budget (``train_cache_ram_mb``) they are read once
and kept (DataLoader workers share them copy-on-write); otherwise each sample reads its
case from disk, so host memory does not grow with the number of cases. Either way every
read first checks that the case's files have not changed since the run started (a label
corrected meanwhile is re-preprocessed, never trained on in its old form).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .cache import CachedRef, CacheReport, CaseCache
from .cache_file import CacheEntry
from .cases import CaseSpec

logger = logging.getLogger(__name__)


class CaseStore:
    """Indexable preprocessed cases of one run (training or validation set)."""

    def __init__(
        self,
        specs: Sequence[CaseSpec],
        cache: CaseCache | None = None,
        refs: Sequence[CachedRef] = (),
        memory: Sequence[CacheEntry] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.cache = cache
        self.refs = list(refs)
        self.memory = list(memory) if memory is not None else None

    @classmethod
    def in_memory(cls, specs: Sequence[CaseSpec], entries: Sequence[CacheEntry]) -> CaseStore:
        """A store over entries made in memory (simulations, tests): no files, no checks."""
        return cls(specs, memory=entries)

    def __len__(self) -> int:
        return len(self.specs)

    def entry(self, i: int) -> CacheEntry:
        """Case ``i``'s preprocessed arrays, current with its source files."""
        if self.cache is None:
            assert self.memory is not None
            return self.memory[i]
        ref = self.cache.refresh(self.refs[i])
        if ref is not self.refs[i]:
            self.refs[i] = ref
            if self.memory is not None:
                self.memory[i] = self.cache.load(ref)
        if self.memory is not None:
            return self.memory[i]
        return self.cache.load(ref)

    @property
    def nbytes(self) -> int:
        """Bytes of all entries (on disk)."""
        return sum(r.nbytes for r in self.refs) if self.refs else sum(e.nbytes for e in self.memory or [])

    def subset(self, indices: Sequence[int]) -> CaseStore:
        """A store over some of these cases, sharing the cache (and memory) entries."""
        memory = [self.memory[i] for i in indices] if self.memory is not None else None
        refs = [self.refs[i] for i in indices] if self.refs else []
        return CaseStore([self.specs[i] for i in indices], self.cache, refs, memory)


def open_store(
    cache: CaseCache,
    specs: Sequence[CaseSpec],
    ram_budget_mb: float,
    workers: int = 0,
    should_stop: Callable[[], bool] | None = None,
    build_share: tuple[int, int] = (0, 1),
    sync: Callable[[], None] | None = None,
) -> tuple[CaseStore, CacheReport]:
    """Cache every case of ``specs`` and open them from RAM (within budget) or disk.

    ``sync`` is called between this process's share of the build and the final look-up
    (a barrier when several processes build together).
    """
    refs, report = cache.ensure(list(specs), workers, should_stop, build_share)
    if sync is not None:
        sync()
        first = report
        refs, report = cache.ensure(list(specs), 0, should_stop)
        report.built, report.rebuilt, report.seconds = first.built, first.rebuilt, first.seconds + report.seconds
        report.hits = first.hits
    store = CaseStore([r.spec for r in refs], cache, refs)
    total_mb = store.nbytes / 1e6
    if refs and total_mb <= ram_budget_mb:
        store.memory = [cache.load(r) for r in refs]
        report.in_memory = True
    report.notes.append(
        f"{len(refs)} case(s), {total_mb:.0f} MB: "
        + ("held in RAM" if report.in_memory else f"streamed from disk (RAM budget {ram_budget_mb:.0f} MB)")
    )
    logger.info("training cache %s: %d hit(s), %d built, %d rebuilt in %.1f s; %s", report.folder, report.hits,
                report.built, report.rebuilt, report.seconds, report.notes[-1])  # fmt: skip
    return store, report
