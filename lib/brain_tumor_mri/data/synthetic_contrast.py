"""Per-case tissue and lesion intensities for every sequence: SynthSeg-style domain randomisation.

Models trained on one fixed contrast fail on other scanners, so (after Billot et al. 2023,
SynthSeg) each case draws its intensities from wide ranges instead of fixed values:

- ``standard`` domain: every class's mean, relative to white matter, is drawn from a wide
  range that keeps each sequence's usual ordering (T1: WM > GM > CSF; T2: CSF bright;
  FLAIR: CSF dark, edema bright; T1c = T1 plus enhancement of tumour, vessels, choroid
  plexus and pituitary).
- ``wild`` domain: every class mean is independent and uniform (any ordering), as in SynthSeg,
  except the relations that *define* the tumour labels: on T1c the enhancing tumour is
  brighter than every non-enhancing tissue and the core, and on T2 / FLAIR the edema is
  brighter than normal white and grey matter. SynthSeg can randomise everything because its
  labels are anatomical; tumour sub-regions are defined by these contrasts, and a case that
  breaks them would teach the network that its own labels have no image evidence.
- ``mixed`` (the default): standard, with each sequence wild with probability 0.12.

A scanner ``profile`` makes a pool "mostly one site": named sites draw their contrast once
from the wide ranges (a fixed seed per site) and vary little around it; ``random`` redraws
everything per case. The profile also sets the acquisition (see ``synthetic_scanner``).
"""

from __future__ import annotations

import logging
import zlib

import numpy as np

from ..labels import SEQUENCES

logger = logging.getLogger(__name__)

DOMAINS: tuple[str, ...] = ("standard", "wild", "mixed")
#: Intensity classes, in the order of the arrays ``draw_contrast`` returns.
CLASSES: tuple[str, ...] = ("wm", "gm", "csf", "vessel", "plexus", "edema", "enhancing", "core")
CORE_STYLES: tuple[str, ...] = ("necrotic", "cystic", "solid")
_WILD_SEQUENCE_P = 0.12
_SITE_SPREAD = 0.06  # within-site relative variation of a named profile's contrast

# Ranges of each class mean relative to white matter, per sequence ("standard" domain).
_T1 = {"gm": (0.55, 0.85), "csf": (0.12, 0.45), "vessel": (0.3, 1.1), "plexus": (0.6, 0.9), "edema": (0.5, 0.8)}
_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "t1n": {**_T1, "enhancing": (0.55, 0.9)},
    "t1c": {**_T1, "vessel": (1.25, 2.4), "plexus": (1.2, 2.0), "enhancing": (1.3, 2.3)},
    "t2w": {
        "gm": (1.15, 1.7),
        "csf": (2.0, 4.0),
        "vessel": (0.15, 0.6),
        "plexus": (1.0, 1.6),
        "edema": (1.5, 2.6),
        "enhancing": (1.1, 2.0),
    },
    "t2f": {
        "gm": (1.05, 1.45),
        "csf": (0.1, 0.5),
        "vessel": (0.2, 0.7),
        "plexus": (0.9, 1.5),
        "edema": (1.4, 2.4),
        "enhancing": (1.1, 1.9),
    },
}
_CORE: dict[str, dict[str, tuple[float, float]]] = {
    "necrotic": {"t1n": (0.3, 0.6), "t1c": (0.3, 0.6), "t2w": (1.8, 3.2), "t2f": (0.8, 1.8)},
    "cystic": {"t1n": (0.15, 0.4), "t1c": (0.15, 0.4), "t2w": (2.2, 3.8), "t2f": (0.3, 1.0)},
    "solid": {"t1n": (0.5, 0.75), "t1c": (0.5, 0.8), "t2w": (1.5, 2.4), "t2f": (1.3, 2.0)},
}
#: Extra-axial / sellar tumours are grey-matter-like outside T1c (multiplies the GM level).
_ISO_GM = ("meningioma", "pituitary")
#: Base white-matter level per sequence before the scanner's arbitrary global scaling.
_WM_LEVEL = {"t1n": 900.0, "t1c": 900.0, "t2w": 450.0, "t2f": 550.0}


def check_domain(domain: str) -> str:
    """``domain`` if known, else a ValueError listing the choices."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    return domain


def _site_rng(profile: str) -> np.random.Generator:
    """A generator fixed per site name, so a named site always has the same contrast."""
    return np.random.default_rng(zlib.crc32(profile.encode("utf-8")))


def _draw(rng: np.random.Generator, lo: float, hi: float, centre: float | None) -> float:
    """Uniform in [lo, hi], or tightly around a site's ``centre`` when one is given."""
    if centre is None:
        return float(rng.uniform(lo, hi))
    return float(centre * rng.uniform(1.0 - _SITE_SPREAD, 1.0 + _SITE_SPREAD))


def _standard(
    rng: np.random.Generator, seq: str, kind: str, core: str, centres: dict[str, float] | None
) -> dict[str, float]:
    """Class means relative to WM for one sequence, keeping the sequence's usual ordering."""
    ranges = {**_RANGES[seq], "core": _CORE[core][seq]}
    rel = {"wm": 1.0}
    for name, (lo, hi) in ranges.items():
        rel[name] = _draw(rng, lo, hi, None if centres is None else centres.get(name))
    if kind in _ISO_GM and seq != "t1c":
        rel["enhancing"] = rel["gm"] * float(rng.uniform(0.92, 1.12))
    return rel


def _wild(rng: np.random.Generator, seq: str) -> dict[str, float]:
    """Class means independent and uniform relative to WM (SynthSeg), label-defining relations kept."""
    rel = {name: (1.0 if name == "wm" else float(rng.uniform(0.05, 2.6))) for name in CLASSES}
    if seq == "t1c":  # enhancement defines label 3: brighter than all non-enhancing tissue
        plain = max(v for k, v in rel.items() if k not in ("vessel", "plexus", "enhancing"))
        rel["enhancing"] = plain * float(rng.uniform(1.2, 1.8))
        rel["core"] = min(rel["core"], rel["enhancing"] * float(rng.uniform(0.3, 0.8)))
    elif seq in ("t2w", "t2f"):  # T2/FLAIR hyperintensity defines edema (label 2)
        rel["edema"] = max(rel["edema"], max(rel["wm"], rel["gm"]) * float(rng.uniform(1.2, 1.7)))
    return rel


def draw_contrast(
    rng: np.random.Generator, domain: str, profile: str, kind: str, core: str
) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """Class means (in ``CLASSES`` order) per sequence, and which sequences were drawn wild.

    T1c shares T1n's draw for every class that does not enhance, so T1c stays "T1 plus
    contrast" unless one of the two is wild.
    """
    check_domain(domain)
    site = None if profile == "random" else _site_centres(profile, kind, core)
    means: dict[str, np.ndarray] = {}
    wild: dict[str, bool] = {}
    t1_rel: dict[str, float] | None = None
    for seq in SEQUENCES:
        is_wild = domain == "wild" or (domain == "mixed" and rng.random() < _WILD_SEQUENCE_P)
        rel = _wild(rng, seq) if is_wild else _standard(rng, seq, kind, core, None if site is None else site[seq])
        if seq == "t1c" and not is_wild and t1_rel is not None:
            for name in ("gm", "csf", "edema", "core"):
                rel[name] = t1_rel[name] * float(rng.uniform(0.97, 1.08))
        if seq == "t1n":
            t1_rel = None if is_wild else rel
        level = _WM_LEVEL[seq] * float(rng.uniform(0.8, 1.25))
        means[seq] = np.array([rel[name] * level for name in CLASSES], dtype=np.float32)
        wild[seq] = is_wild
    return means, wild


def _site_centres(profile: str, kind: str, core: str) -> dict[str, dict[str, float]]:
    """A named site's fixed contrast: one draw from the standard ranges per sequence."""
    rng = _site_rng(profile)
    return {seq: _standard(rng, seq, kind, core, None) for seq in SEQUENCES}
