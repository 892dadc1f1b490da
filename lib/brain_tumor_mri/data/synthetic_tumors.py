"""Tumour planning for the synthetic generator: which lesions, where, how big, what they look like.

Lesions are planned in output world coordinates (mm) before the anatomy is sampled, because
their mass effect displaces the anatomy; their labels are drawn afterwards against the
displaced tissue maps (``synthetic_lesions``). A case holds one or several lesions:

- ``glioma``: high grade (necrotic or cystic core in an enhancing ring, infiltrative edema
  along the white matter), low grade (non-enhancing solid core labelled 1, little or no
  enhancement, modest T2/FLAIR infiltration) or a "butterfly" glioma crossing the midline
  through the corpus callosum.
- ``meningioma``: extra-axial dural-based dome, no edema, a thin rim or vasogenic edema.
- ``pituitary``: sellar mass with suprasellar extension, sometimes cystic.
- ``metastasis`` (not a classifier class): 2-5 small ring- or solidly enhancing lesions at the
  grey-white junction, each with vasogenic edema.

Whole-tumour volumes span about 0.5-200 mL (a metastasis lesion 0.5-30 mL with its edema).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .anatomies import Template
from .synthetic_fields import box_slices

logger = logging.getLogger(__name__)

#: Every tumour type the generator draws; ``metastasis`` is outside ``labels.TUMOR_CLASSES``.
TUMOR_KINDS: tuple[str, ...] = ("glioma", "meningioma", "pituitary", "metastasis", "no_tumor")


@dataclass(frozen=True)
class TumourPlan:
    """Where one lesion sits, how big it is and how it looks, in output world mm."""

    kind: str
    centre: np.ndarray  # centre of the tumour body
    radii: np.ndarray  # ellipsoid semi-axes of the outer tumour surface (x, y, z)
    mass_amp: float  # peak radial displacement of the surrounding tissue (mm)
    mass_width: float  # Gaussian width of that displacement (mm)
    reach: float = 0.0  # how far edema spreads beyond the tumour along white matter (mm)
    ring: float = 0.0  # enhancing ring thickness (mm); 0 = solid enhancement
    base: np.ndarray | None = None  # meningioma: dural base point on the brain surface
    normal: np.ndarray | None = None  # meningioma: outward normal at the base
    necrosis: bool = False  # has a necrotic or cystic core
    edema_rim: float = 0.0  # meningioma: thickness of a thin edema rim (0 = none)
    style: str = ""  # hgg, lgg, butterfly, metastasis, meningioma, pituitary
    enhancing: bool = True  # low-grade gliomas: False (core is non-enhancing tumour)

    @property
    def extent(self) -> float:
        """Half-size (mm) of a box that holds every label of this tumour."""
        return float(self.radii.max()) * 1.35 + self.reach + self.edema_rim + 4.0


def plan_tumours(
    kind: str, rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray
) -> list[TumourPlan]:
    """All lesions of a ``kind`` case (empty for ``no_tumor``)."""
    if kind == "glioma":
        return [_plan_glioma(rng, template, flip, scale)]
    if kind == "meningioma":
        return [_plan_meningioma(rng, template, flip, scale)]
    if kind == "pituitary":
        return [_plan_pituitary(rng, template, flip, scale)]
    if kind == "metastasis":
        return _plan_metastases(rng, template, flip, scale)
    if kind == "no_tumor":
        return []
    raise ValueError(f"unknown tumour type {kind!r}; expected one of {', '.join(TUMOR_KINDS)}")


def plan_tumour(kind: str, rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray):
    """The first lesion of a ``kind`` case, or None (kept for callers of the single-lesion API)."""
    plans = plan_tumours(kind, rng, template, flip, scale)
    return plans[0] if plans else None


def core_style(plans: list[TumourPlan], rng: np.random.Generator) -> str:
    """How the case's label-1 core looks: ``necrotic``, ``cystic`` or ``solid`` (non-enhancing)."""
    if not plans:
        return "necrotic"
    style = plans[0].style
    if style == "lgg":
        return "solid" if rng.random() < 0.8 else "cystic"
    if style == "pituitary":
        return "cystic" if rng.random() < 0.5 else "necrotic"
    return "cystic" if rng.random() < 0.25 else "necrotic"


def _to_output(point: np.ndarray, flip: float, scale: np.ndarray) -> np.ndarray:
    """Template mm -> output mm under the case's left-right flip and scaling (warp ignored)."""
    return np.array([flip * point[0], point[1], point[2]], dtype=np.float64) * scale


def _pick(rng: np.random.Generator, sites: np.ndarray) -> np.ndarray:
    """A random site, jittered within its 3 mm lattice cell."""
    return sites[rng.integers(len(sites))] + rng.uniform(-1.5, 1.5, 3)


def _plan_glioma(rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray) -> TumourPlan:
    """High-grade (55 %), low-grade (30 %) or butterfly (15 %) glioma."""
    u = rng.random()
    if u < 0.15 and len(template.sites.callosal_sites):
        return _plan_butterfly(rng, template, flip, scale)
    low = u < 0.45
    site = _pick(rng, template.wm_sites)
    radius = rng.uniform(10.0, 22.0) if low else rng.uniform(8.0, 21.0)
    return TumourPlan(
        kind="glioma",
        centre=_to_output(site, flip, scale),
        radii=radius * rng.uniform(0.8, 1.2, 3),
        mass_amp=(0.3 if low else 0.55) * radius,
        mass_width=radius + 8.0,
        reach=rng.uniform(3.0, 10.0) if low else rng.uniform(6.0, 22.0),
        ring=rng.uniform(2.5, 6.0),
        necrosis=not low,
        style="lgg" if low else "hgg",
        enhancing=(not low) or rng.random() < 0.35,
    )


def _plan_butterfly(rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray) -> TumourPlan:
    """Glioma spreading through the corpus callosum into both hemispheres."""
    site = _pick(rng, template.sites.callosal_sites)
    site[0] = template.sites.midline_x + rng.uniform(-3.0, 3.0)
    radii = np.array([rng.uniform(18.0, 28.0), rng.uniform(9.0, 15.0), rng.uniform(8.0, 12.0)])
    return TumourPlan(
        kind="glioma",
        centre=_to_output(site, flip, scale),
        radii=radii,
        mass_amp=0.25 * float(radii.mean()),
        mass_width=float(radii.mean()) + 8.0,
        reach=rng.uniform(6.0, 16.0),
        ring=rng.uniform(2.5, 5.0),
        necrosis=True,
        style="butterfly",
    )


def _plan_meningioma(rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray) -> TumourPlan:
    """Extra-axial dural-based dome on the convexity or parasagittal surface."""
    sites, normals = template.surface_sites, template.surface_normals
    mid = template.sites.midline_x
    if rng.random() < 0.35:  # parasagittal, next to the falx
        keep = np.flatnonzero((np.abs(sites[:, 0] - mid) < 20) & (sites[:, 2] > 35))
        pick = keep[rng.integers(len(keep))] if len(keep) else rng.integers(len(sites))
    else:
        pick = rng.integers(len(sites))
    base = _to_output(sites[pick], flip, scale)
    normal = np.array([flip * normals[pick, 0], normals[pick, 1], normals[pick, 2]])
    radius = rng.uniform(10.0, 28.0)
    vasogenic = rng.random() < 0.25
    # The dome's sphere is centred just outside the dura, so the tumour (cut flat at the
    # tangent plane) is a broad-based cap; pushing tissue away from that centre dents the
    # brain inwards instead of pushing it through the skull.
    return TumourPlan(
        kind="meningioma",
        centre=base + normal * 0.3 * radius,
        radii=radius * rng.uniform(0.9, 1.1, 3),
        mass_amp=0.6 * radius,
        mass_width=radius + 2.0,
        base=base,
        normal=normal,
        necrosis=bool(rng.random() < 0.3),
        edema_rim=float(rng.uniform(1.0, 2.0)) if (not vasogenic and rng.random() < 0.4) else 0.0,
        reach=float(rng.uniform(6.0, 18.0)) if vasogenic else 0.0,
        style="meningioma",
    )


def _plan_pituitary(rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray) -> TumourPlan:
    """Sellar mass in the midline at the skull base, micro- to macroadenoma with suprasellar extension."""
    rxy = rng.uniform(5.0, 12.0)
    rz = rng.uniform(5.0, 16.0)
    sella = template.sites.sella
    site = np.array([sella[0] + rng.uniform(-1.0, 1.0), sella[1] + rng.uniform(-5.0, 3.0), sella[2] - 4.0 + 0.9 * rz])
    return TumourPlan(
        kind="pituitary",
        centre=_to_output(site, flip, scale),
        radii=np.array([rxy, rxy * rng.uniform(0.85, 1.1), rz]),
        mass_amp=0.25 * rz,
        mass_width=rz + 6.0,
        necrosis=bool(rng.random() < 0.35),
        style="pituitary",
    )


def _plan_metastases(rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray) -> list[TumourPlan]:
    """2-5 separate small lesions at the grey-white junction, each with vasogenic edema."""
    sites = template.sites.junction_sites
    count = int(rng.integers(2, 6))
    placed: list[tuple[np.ndarray, float]] = []
    plans: list[TumourPlan] = []
    for _ in range(60 * count):
        if len(plans) == count:
            break
        site = _to_output(_pick(rng, sites), flip, scale)
        radius = float(rng.uniform(4.0, 10.0))
        reach = float(rng.uniform(4.0, 14.0))
        size = 1.25 * radius + reach
        if any(np.linalg.norm(site - c) < size + other + 8.0 for c, other in placed):
            continue  # keep lesions (and their edema) apart, as separate components
        placed.append((site, size))
        plans.append(
            TumourPlan(
                kind="metastasis",
                centre=site,
                radii=radius * rng.uniform(0.85, 1.15, 3),
                mass_amp=0.3 * radius,
                mass_width=radius + 6.0,
                reach=reach,
                ring=float(rng.uniform(1.5, 3.5)),
                necrosis=radius > 6.0,
                style="metastasis",
            )
        )
    return plans


def mass_effect(plan: TumourPlan, coords: np.ndarray, axes: tuple[np.ndarray, ...]) -> None:
    """Push tissue away from a lesion: shift sampling points towards its centre, in place.

    ``coords`` (3, X, Y, Z) holds output mm of each voxel; a voxel at distance r samples
    the anatomy from r - A*exp(-r^2 / 2L^2) (radially), so tissue moves outward.
    """
    box = box_slices(axes, plan.centre, 3.0 * plan.mass_width)
    local = coords[(slice(None),) + box]
    rel = local - plan.centre.astype(np.float32)[:, None, None, None]
    r = np.sqrt(np.sum(rel**2, axis=0)) + 1e-3
    shift = plan.mass_amp * np.exp(-0.5 * (r / plan.mass_width) ** 2) / r
    local -= rel * shift[None]
