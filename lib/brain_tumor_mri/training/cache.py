"""Preprocessed training cases cached on disk, one file per case, reused across runs.

A case's cache key is a SHA-256 over the preprocessing parameters (including the code
version constants of the preprocessing), the case id and its source files: name, size
and modification time of every file, plus the content hash of the ground-truth label, so
a corrected label saved from Slicer always gets a new key and is re-preprocessed, while
unchanged cases are reused by later runs. Entries live in one folder per preprocessing
family (``<cache>/<family>/<origin>-<case>__<key>.btc``), so e.g. 1 mm and 2 mm caches
coexist; a case's superseded entries are removed when its new one is written.

``ensure`` makes sure every case of a run has a sound entry, building the missing ones
(in parallel worker processes when asked) before the first training step; ``load``
verifies each read and rebuilds an entry that turns out damaged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hashing import file_sha256
from ..imageio import InputError
from .cache_file import SUFFIX, CacheCorrupt, CacheEntry, peek, read_entry, remove_orphans, write_entry
from .cases import CaseSpec

logger = logging.getLogger(__name__)

#: Builds one case's entry from its spec (reads and preprocesses its files).
Builder = Callable[[CaseSpec], CacheEntry]


@dataclass(frozen=True)
class CacheFamily:
    """One preprocessing: a readable folder name, the parameters it depends on, its builder."""

    name: str
    params: dict[str, Any]
    builder: Builder
    hashed_roles: tuple[str, ...] = ("label",)  # files whose content (not just stat) enters the key
    skip_unreadable: bool = False  # leave out (and log) cases that cannot be read, instead of failing

    @property
    def folder(self) -> str:
        """Folder name: the readable name plus a short hash of the parameters."""
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode("utf-8")).hexdigest()[:8]
        return f"{self.name}-{digest}"


def signature(spec: CaseSpec) -> tuple[tuple[str, int, int, int], ...]:
    """(role, size, mtime_ns, inode) of every source file: cheap 'did anything change' check."""
    out = []
    for role, path in spec.files:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"case {spec.case_id}: {role} file {Path(path).name} is unreadable ({exc})") from exc
        out.append((role, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


@dataclass(frozen=True)
class CachedRef:
    """A case with a sound cache entry: where it is, its key, size and source signature."""

    spec: CaseSpec
    key: str
    path: Path
    nbytes: int
    signature: tuple[tuple[str, int, int, int], ...]


@dataclass
class CacheReport:
    """What ``ensure`` found and did, for the log, ``result.json`` and the benchmark."""

    folder: str
    hits: int = 0
    built: int = 0
    rebuilt: int = 0  # damaged or truncated entries replaced
    seconds: float = 0.0
    entries_mb: float = 0.0  # this run's entries
    folder_mb: float = 0.0  # everything in the family folder
    in_memory: bool = False
    notes: list[str] = field(default_factory=list)


def _one_thread() -> None:
    """Start of a forked build worker: one compute thread (the workers run in parallel, and an
    OpenMP pool inherited through fork would deadlock the child's first parallel region)."""
    import torch

    torch.set_num_threads(1)


class CaseCache:
    """The cache folder of one preprocessing family."""

    def __init__(self, root: str | Path, family: CacheFamily) -> None:
        self.family = family
        self.dir = Path(root) / family.folder
        self.dir.mkdir(parents=True, exist_ok=True)
        removed = remove_orphans(self.dir)
        if removed:
            logger.info("removed %d partial cache file(s) left by an interrupted run in %s", removed, self.dir)

    def key(self, spec: CaseSpec) -> str:
        """The cache key of ``spec`` now (stats of its files, content hash of hashed roles)."""
        files = []
        for (role, size, mtime, _), (_, path) in zip(signature(spec), spec.files):
            item: list[Any] = [role, Path(path).name, size, mtime]
            if role in self.family.hashed_roles:
                item.append(file_sha256(path))
            files.append(item)
        blob = {"params": self.family.params, "family": self.family.name, "case": spec.case_id, "files": files}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode("utf-8")).hexdigest()

    def path(self, spec: CaseSpec, key: str) -> Path:
        """Where the entry of ``spec`` with ``key`` lives."""
        return self.dir / f"{spec.origin_tag}-{spec.case_id}__{key[:24]}{SUFFIX}"

    def build(self, spec: CaseSpec, key: str) -> int:
        """Preprocess ``spec``, write its entry atomically, drop its superseded ones; the file size.

        With ``skip_unreadable`` a case that cannot be read is logged and left without an
        entry (size 0) instead of raising ``InputError``.
        """
        path = self.path(spec, key)
        try:
            entry = self.family.builder(spec)
        except InputError as exc:
            if not self.family.skip_unreadable:
                raise
            logger.warning("skipping %s: %s", spec.case_id, exc)
            return 0
        size = write_entry(path, key, spec.case_id, entry)
        stem = f"{spec.origin_tag}-{spec.case_id}"
        for old in self.dir.glob(f"{stem}__*{SUFFIX}"):
            if old != path and old.name.rpartition("__")[0] == stem:
                old.unlink(missing_ok=True)
        return size

    def load(self, ref: CachedRef) -> CacheEntry:
        """The verified entry of ``ref``; a damaged file is rebuilt (and logged), never used."""
        try:
            return read_entry(ref.path, ref.key)
        except CacheCorrupt as exc:
            logger.warning("cache entry of %s is damaged (%s); rebuilding it", ref.spec.case_id, exc)
            self.build(ref.spec, ref.key)
            return read_entry(ref.path, ref.key)

    def refresh(self, ref: CachedRef) -> CachedRef:
        """``ref`` itself while its source files are unchanged, else a ref to a rebuilt entry.

        Called before every read, so a label corrected while a run goes on is never
        trained on in its old form.
        """
        sig = signature(ref.spec)
        if sig == ref.signature:
            return ref
        key = self.key(ref.spec)
        path = self.path(ref.spec, key)
        try:
            size = peek(path, key)
        except CacheCorrupt:
            logger.info("case %s changed since the run started; re-preprocessing it", ref.spec.case_id)
            size = self.build(ref.spec, key)
        return CachedRef(ref.spec, key, path, size, sig)

    def folder_bytes(self) -> int:
        """Size of every entry in this family's folder."""
        return sum(p.stat().st_size for p in self.dir.glob(f"*{SUFFIX}"))

    def ensure(
        self, specs: list[CaseSpec], workers: int = 0, should_stop: Callable[[], bool] | None = None,
        build_share: tuple[int, int] = (0, 1),
    ) -> tuple[list[CachedRef], CacheReport]:  # fmt: skip
        """Refs to sound entries of ``specs``, building what is missing or damaged.

        ``build_share=(i, n)``: this process builds only every n-th missing case from the
        i-th (the processes of one node split the work); the caller synchronises and calls
        again to pick up the others' entries. A stop request ends the build between cases.
        """
        t0 = time.monotonic()
        report = CacheReport(str(self.dir))
        keys, todo = {}, []
        for spec in specs:
            key = keys[spec] = self.key(spec)
            path = self.path(spec, key)
            if path.exists():
                try:
                    peek(path, key)
                    report.hits += 1
                    continue
                except CacheCorrupt as exc:
                    logger.warning("rebuilding the cache entry of %s: %s", spec.case_id, exc)
                    report.rebuilt += 1
            todo.append(spec)
        mine = todo[build_share[0] :: build_share[1]]
        if mine:
            logger.info("preprocessing %d of %d case(s) into %s", len(mine), len(specs), self.dir)
            self._build_all(mine, keys, workers, should_stop)
            report.built = len(mine)
        refs = []
        for spec in specs:
            path = self.path(spec, keys[spec])
            try:
                refs.append(CachedRef(spec, keys[spec], path, peek(path, keys[spec]), signature(spec)))
            except CacheCorrupt:
                if should_stop is not None and should_stop():
                    break
                if build_share[1] == 1 and not self.family.skip_unreadable:
                    raise
        report.seconds = round(time.monotonic() - t0, 2)
        report.entries_mb = round(sum(r.nbytes for r in refs) / 1e6, 1)
        report.folder_mb = round(self.folder_bytes() / 1e6, 1)
        return refs, report

    def _build_all(
        self, specs: list[CaseSpec], keys: dict[CaseSpec, str], workers: int, should_stop: Callable[[], bool] | None
    ) -> None:
        """Build entries in this process, or in ``workers`` forked processes."""
        stop = should_stop or (lambda: False)
        if workers <= 1 or len(specs) == 1:
            for i, spec in enumerate(specs, 1):
                if stop():
                    return
                self.build(spec, keys[spec])
                logger.debug("preprocessed %s (%d/%d)", spec.case_id, i, len(specs))
            return
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_one_thread) as pool:
            pending: set[Future[int]] = {pool.submit(self.build, s, keys[s]) for s in specs}
            try:
                while pending and not stop():
                    done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for fut in done:
                        fut.result()  # re-raises a worker's InputError / CacheError here
            finally:
                for fut in pending:  # on a stop or an error: skip what has not started
                    fut.cancel()
