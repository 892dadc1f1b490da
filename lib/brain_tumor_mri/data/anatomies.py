"""The real anatomies the generator can build a case on, and choosing among them.

Each case is drawn on one real brain (see ``anatomy_sources`` for what each is and its
licence). Training on several brains and holding one out measures how a model copes with
an anatomy it never saw: ``select_anatomies(include, exclude)`` is the one place that turns
a caller's choice (``--anatomies``, ``--exclude-anatomy``) into the list a dataset uses.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy_sites import Sites, enhancing_maps, find_sites
from .anatomy_sources import load_raw

logger = logging.getLogger(__name__)

#: name -> one-line description (source and licence) used in READMEs and errors.
ANATOMIES: dict[str, str] = {
    "mni152": "MNI152 2009 template brain (nilearn's bundled copy; average of 152 adults)",
    "colin27": "Colin27 (Debian mricron-data ch2/ch2bet, BSD-3-clause; one adult, 27 averaged scans)",
    "itk_t1": "ITK example T1 head (Debian insighttoolkit5-examples KmeansTest_T1UCharRaw, Apache-2.0; one adult)",
}
#: Anatomies whose real scalp, skull and face the 2D pictures use.
HEAD_ANATOMY = "colin27"


@dataclass(frozen=True)
class Template:
    """Everything the generator samples from one anatomy, prefiltered for an output spacing.

    ``maps`` holds (gm, wm, mask, vessel, plexus, support) on the anatomy's 1 mm RAS grid:
    vessel and plexus are the normal enhancing structures of ``anatomy_sites``; support
    (1 within 4 mm of anything non-zero) tells the sampler where the other maps can be.
    """

    name: str
    maps: np.ndarray  # (6, X, Y, Z) float32
    origin: np.ndarray  # world mm of voxel (0, 0, 0)
    sites: Sites

    @property
    def wm_sites(self) -> np.ndarray:
        """Deep white-matter glioma centres (world mm)."""
        return self.sites.wm_sites

    @property
    def surface_sites(self) -> np.ndarray:
        """Convexity points for meningioma bases (world mm)."""
        return self.sites.surface_sites

    @property
    def surface_normals(self) -> np.ndarray:
        """Outward unit normals at ``surface_sites``."""
        return self.sites.surface_normals


def select_anatomies(
    include: Iterable[str] | str | None = None, exclude: Iterable[str] | str | None = None
) -> tuple[str, ...]:
    """Anatomy names to use: ``include`` (default: all) minus ``exclude``, in registry order.

    Both accept a list or a comma-separated string; unknown names and an empty result are
    errors, so a typo can never silently train on the held-out brain.
    """
    wanted = _names(include) or list(ANATOMIES)
    dropped = _names(exclude)
    chosen = tuple(n for n in ANATOMIES if n in wanted and n not in dropped)
    if not chosen:
        raise ValueError(f"no anatomy left after including {wanted} and excluding {dropped}")
    return chosen


def _names(value: Iterable[str] | str | None) -> list[str]:
    """Parse and validate anatomy names."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [s.strip().lower() for s in items if s and s.strip()]
    unknown = [n for n in names if n not in ANATOMIES]
    if unknown:
        raise ValueError(f"unknown anatomy {', '.join(unknown)}; expected some of {', '.join(ANATOMIES)}")
    return names


@functools.lru_cache(maxsize=None)
def _full_maps(name: str) -> tuple[np.ndarray, np.ndarray, Sites]:
    """1 mm (gm, wm, mask, vessel, plexus, support) maps, origin and tumour sites of ``name``."""
    raw = load_raw(name)
    sites = find_sites(raw.maps, raw.origin)
    extra = enhancing_maps(raw.maps, raw.origin, sites)
    anything = ((raw.maps[2] > 0) | (extra > 0).any(axis=0)).astype(np.uint8)
    support = ndimage.maximum_filter(anything, size=9).astype(np.float32)
    return np.concatenate([raw.maps, extra, support[None]]), raw.origin, sites


@functools.lru_cache(maxsize=8)
def load_anatomy(name: str, spacing: float = 1.0) -> Template:
    """Anatomy ``name`` prefiltered (anti-aliased) for sampling at ``spacing`` mm, cached."""
    maps, origin, sites = _full_maps(name)
    if spacing > 1.2:
        sigma = 0.42 * float(np.sqrt(spacing**2 - 1.0))
        maps = np.stack([ndimage.gaussian_filter(m, sigma, truncate=3.0) for m in maps])
    return Template(name=name, maps=maps, origin=origin, sites=sites)
