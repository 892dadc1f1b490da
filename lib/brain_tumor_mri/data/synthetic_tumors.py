"""Tumour placement, mass effect and label geometry for the synthetic generator.

Each tumour type is planned in output world coordinates (mm) before the anatomy is
sampled, because its mass effect displaces the anatomy; its labels are drawn afterwards
against the displaced tissue maps (glioma edema follows the white matter it sits in).
Labels follow the internal convention of ``labels.SEG_LABELS``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..labels import SEG_LABELS
from .synthetic_fields import Template, box_slices, smooth_noise

logger = logging.getLogger(__name__)

NCR = SEG_LABELS["necrotic_core"]
ED = SEG_LABELS["edema"]
ET = SEG_LABELS["enhancing_tumor"]


@dataclass(frozen=True)
class TumourPlan:
    """Where a tumour sits and how big it is, in output world mm."""

    kind: str
    centre: np.ndarray  # centre of the tumour body
    radii: np.ndarray  # ellipsoid semi-axes of the enhancing outer surface (x, y, z)
    mass_amp: float  # peak radial displacement of the surrounding tissue (mm)
    mass_width: float  # Gaussian width of that displacement (mm)
    reach: float = 0.0  # glioma: how far edema spreads beyond the core (mm)
    ring: float = 0.0  # glioma: enhancing ring thickness (mm)
    base: np.ndarray | None = None  # meningioma: dural base point on the brain surface
    normal: np.ndarray | None = None  # meningioma: outward normal at the base
    necrosis: bool = False  # meningioma/pituitary: has a small necrotic or cystic core
    edema_rim: float = 0.0  # meningioma: thickness of the thin edema rim (0 = none)

    @property
    def extent(self) -> float:
        """Half-size (mm) of a box that holds every label of this tumour."""
        return float(self.radii.max()) * 1.35 + self.reach + self.edema_rim + 4.0


def plan_tumour(kind: str, rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray):
    """Choose location and size of a ``kind`` tumour (None for no_tumor)."""
    if kind == "glioma":
        return _plan_glioma(rng, template, flip, scale)
    if kind == "meningioma":
        return _plan_meningioma(rng, template, flip, scale)
    if kind == "pituitary":
        return _plan_pituitary(rng)
    if kind == "no_tumor":
        return None
    raise ValueError(f"unknown tumour type {kind!r}")


def _to_output(point: np.ndarray, flip: float, scale: np.ndarray) -> np.ndarray:
    """Template mm -> output mm under the case's left-right flip and scaling (warp ignored)."""
    return np.array([flip * point[0], point[1], point[2]], dtype=np.float64) * scale


def _plan_glioma(rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray) -> TumourPlan:
    """Intra-axial hemispheric white-matter tumour: necrosis, enhancing ring, wide edema."""
    site = template.wm_sites[rng.integers(len(template.wm_sites))] + rng.uniform(-1.5, 1.5, 3)
    radius = rng.uniform(11.0, 19.0)
    radii = radius * rng.uniform(0.85, 1.15, 3)
    return TumourPlan(
        kind="glioma",
        centre=_to_output(site, flip, scale),
        radii=radii,
        mass_amp=0.55 * radius,
        mass_width=radius + 8.0,
        reach=rng.uniform(10.0, 24.0),
        ring=rng.uniform(2.5, 6.0),
    )


def _plan_meningioma(rng: np.random.Generator, template: Template, flip: float, scale: np.ndarray) -> TumourPlan:
    """Extra-axial dural-based dome on the convexity or parasagittal surface."""
    sites, normals = template.surface_sites, template.surface_normals
    if rng.random() < 0.35:  # parasagittal, next to the falx
        keep = np.flatnonzero((np.abs(sites[:, 0]) < 20) & (sites[:, 2] > 35))
        pick = keep[rng.integers(len(keep))] if len(keep) else rng.integers(len(sites))
    else:
        pick = rng.integers(len(sites))
    base = _to_output(sites[pick], flip, scale)
    normal = np.array([flip * normals[pick, 0], normals[pick, 1], normals[pick, 2]])
    radius = rng.uniform(14.0, 28.0)
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
        edema_rim=float(rng.uniform(1.0, 2.0)) if rng.random() < 0.4 else 0.0,
    )


def _plan_pituitary(rng: np.random.Generator) -> TumourPlan:
    """Sellar mass in the midline at the skull base with suprasellar extension."""
    rxy = rng.uniform(7.0, 12.0)
    rz = rng.uniform(9.0, 16.0)
    centre = np.array([rng.uniform(-1.0, 1.0), rng.uniform(-8.0, 0.0), -38.0 + 0.9 * rz])
    return TumourPlan(
        kind="pituitary",
        centre=centre,
        radii=np.array([rxy, rxy * rng.uniform(0.85, 1.1), rz]),
        mass_amp=0.25 * rz,
        mass_width=rz + 6.0,
        necrosis=bool(rng.random() < 0.35),
    )


def mass_effect(plan: TumourPlan, coords: np.ndarray, axes: tuple[np.ndarray, ...]) -> None:
    """Push tissue away from the tumour: shift sampling points towards its centre, in place.

    ``coords`` (3, X, Y, Z) holds output mm of each voxel; a voxel at distance r samples
    the anatomy from r - A*exp(-r^2 / 2L^2) (radially), so tissue moves outward.
    """
    box = box_slices(axes, plan.centre, 3.0 * plan.mass_width)
    local = coords[(slice(None),) + box]
    rel = local - plan.centre.astype(np.float32)[:, None, None, None]
    r = np.sqrt(np.sum(rel**2, axis=0)) + 1e-3
    shift = plan.mass_amp * np.exp(-0.5 * (r / plan.mass_width) ** 2) / r
    local -= rel * shift[None]


def draw_labels(
    plan: TumourPlan | None, rng: np.random.Generator, axes: tuple[np.ndarray, ...], tissue: np.ndarray, spacing: float
) -> np.ndarray:
    """Label volume (uint8, shape of ``tissue[0]``) of the planned tumour on the displaced anatomy."""
    seg = np.zeros(tissue.shape[1:], dtype=np.uint8)
    if plan is None:
        return seg
    box = box_slices(axes, plan.centre, plan.extent)
    sub_axes = tuple(a[s] for a, s in zip(axes, box))
    sub_tissue = tissue[(slice(None),) + box]
    drawer = {"glioma": _glioma_labels, "meningioma": _meningioma_labels, "pituitary": _pituitary_labels}
    seg[box] = drawer[plan.kind](plan, rng, sub_axes, sub_tissue, spacing)
    return seg


def _offsets(axes: tuple[np.ndarray, ...], centre: np.ndarray) -> tuple[np.ndarray, ...]:
    """Broadcastable per-axis offsets (mm) of a grid from ``centre``."""
    return tuple(
        (a - np.float32(c)).reshape([-1 if k == i else 1 for k in range(3)])
        for i, (a, c) in enumerate(zip(axes, centre))
    )


def _shape_distance(
    rng: np.random.Generator, axes: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray, wobble: float
) -> np.ndarray:
    """Normalised ellipsoid distance (1 on the surface) perturbed by smooth noise."""
    dx, dy, dz = _offsets(axes, centre)
    dist = np.sqrt((dx / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dz / radii[2]) ** 2)
    step = max(6.0, 0.6 * float(radii.mean()))
    return (dist + wobble * smooth_noise(rng, axes, step)).astype(np.float32)


def _glioma_labels(
    plan: TumourPlan, rng: np.random.Generator, axes: tuple[np.ndarray, ...], tissue: np.ndarray, spacing: float
) -> np.ndarray:
    """Necrotic core inside an enhancing ring, with edema fingers along the white matter."""
    gm, wm, mask = tissue
    radius = float(plan.radii.mean())
    dist = _shape_distance(rng, axes, plan.centre, plan.radii, 0.2)
    ring = max(plan.ring, 1.8 * spacing) / radius
    rim = max(2.0, 1.2 * spacing) / radius
    frac = (dist - 1.0) * radius / plan.reach  # 0 at the core surface, 1 at the edema reach
    fingers = wm * (1.0 + 0.6 * smooth_noise(rng, axes, 7.0))
    edema = (dist < 1.0 + rim) | ((frac < 1.0) & (fingers > 0.35 + 0.5 * frac))
    edema &= (mask > 0.5) & (mask - gm - wm < 0.5)
    core = dist < 1.0
    comps, _ = ndimage.label(edema | core)
    keep = np.unique(comps[core])
    seg = np.where(np.isin(comps, keep[keep > 0]), ED, 0).astype(np.uint8)
    seg[core] = ET
    seg[dist < 1.0 - ring] = NCR
    return seg


def _meningioma_labels(
    plan: TumourPlan, rng: np.random.Generator, axes: tuple[np.ndarray, ...], tissue: np.ndarray, spacing: float
) -> np.ndarray:
    """Homogeneously enhancing dome flattened against the dura, a thin patchy edema rim or none."""
    assert plan.base is not None and plan.normal is not None
    dist = _shape_distance(rng, axes, plan.centre, plan.radii, 0.06)
    dx, dy, dz = _offsets(axes, plan.base)
    n = plan.normal.astype(np.float32)
    inward = (dx * n[0] + dy * n[1] + dz * n[2]) < 0.5 * spacing
    tumour = (dist < 1.0) & inward
    seg = np.zeros(dist.shape, dtype=np.uint8)
    if plan.edema_rim > 0:
        rim = plan.edema_rim / float(plan.radii.mean())  # may vanish at coarse spacing: fine
        patchy = smooth_noise(rng, axes, 10.0) > 0.0
        seg[(dist < 1.0 + rim) & inward & patchy & (tissue[2] > 0.5)] = ED
    seg[tumour] = ET
    if plan.necrosis:  # small central necrosis half-way into the cap
        radius = float(plan.radii.mean())
        cx, cy, cz = _offsets(axes, plan.base - plan.normal * 0.35 * radius)
        seg[tumour & (cx**2 + cy**2 + cz**2 < (0.22 * radius) ** 2)] = NCR
    return seg


def _pituitary_labels(
    plan: TumourPlan, rng: np.random.Generator, axes: tuple[np.ndarray, ...], tissue: np.ndarray, spacing: float
) -> np.ndarray:
    """Enhancing sellar/suprasellar mass, sometimes with a cystic core, no edema."""
    dist = _shape_distance(rng, axes, plan.centre, plan.radii, 0.07)
    seg = np.where(dist < 1.0, ET, 0).astype(np.uint8)
    if plan.necrosis:
        seg[dist < 0.4] = NCR
    return seg
