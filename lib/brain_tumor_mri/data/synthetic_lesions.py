"""Label geometry of planned lesions, drawn against the case's displaced tissue maps.

Labels follow the internal convention of ``labels.SEG_LABELS`` (1 necrotic / non-enhancing
core, 2 edema, 3 enhancing). Intra-axial lesions (gliomas, metastases) grow edema along the
white matter they sit in; several lesions of one case are merged with core labels winning
over edema.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..labels import SEG_LABELS
from .synthetic_fields import box_slices, smooth_noise
from .synthetic_tumors import TumourPlan

logger = logging.getLogger(__name__)

NCR = SEG_LABELS["necrotic_core"]
ED = SEG_LABELS["edema"]
ET = SEG_LABELS["enhancing_tumor"]


def draw_labels(
    plans: list[TumourPlan] | TumourPlan | None,
    rng: np.random.Generator,
    axes: tuple[np.ndarray, ...],
    tissue: np.ndarray,
    spacing: float,
) -> np.ndarray:
    """Label volume (uint8, shape of ``tissue[0]``) of all planned lesions on the displaced anatomy."""
    if plans is None:
        plans = []
    elif isinstance(plans, TumourPlan):
        plans = [plans]
    seg = np.zeros(tissue.shape[1:], dtype=np.uint8)
    for plan in plans:
        box = box_slices(axes, plan.centre, plan.extent)
        sub_axes = tuple(a[s] for a, s in zip(axes, box))
        sub_tissue = tissue[(slice(None),) + box]
        if plan.kind == "meningioma":
            lesion = _meningioma_labels(plan, rng, sub_axes, sub_tissue, spacing)
        elif plan.kind == "pituitary":
            lesion = _pituitary_labels(plan, rng, sub_axes, spacing)
        else:
            lesion = _intra_axial_labels(plan, rng, sub_axes, sub_tissue, spacing)
        current = seg[box]
        write = (lesion > 0) & ((current == 0) | ((current == ED) & (lesion != ED)))
        current[write] = lesion[write]
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


def _white_matter_edema(
    plan: TumourPlan,
    rng: np.random.Generator,
    axes: tuple[np.ndarray, ...],
    tissue: np.ndarray,
    dist: np.ndarray,
    core: np.ndarray,
    spacing: float,
) -> np.ndarray:
    """Edema fingers reaching ``plan.reach`` mm along the white matter, connected to ``core``."""
    gm, wm, mask = tissue[:3]
    radius = float(plan.radii.mean())
    rim = max(2.0, 1.2 * spacing) / radius
    frac = (dist - 1.0) * radius / max(plan.reach, 1e-3)  # 0 at the tumour surface, 1 at the reach
    fingers = wm * (1.0 + 0.6 * smooth_noise(rng, axes, 7.0))
    edema = (dist < 1.0 + rim) | ((frac < 1.0) & (fingers > 0.35 + 0.5 * frac))
    edema &= (mask > 0.5) & (mask - gm - wm < 0.5)
    comps, _ = ndimage.label(edema | core)
    keep = np.unique(comps[core])
    return np.isin(comps, keep[keep > 0]) & ~core


def _intra_axial_labels(
    plan: TumourPlan, rng: np.random.Generator, axes: tuple[np.ndarray, ...], tissue: np.ndarray, spacing: float
) -> np.ndarray:
    """Glioma or metastasis: enhancing ring (or solid / non-enhancing core) with white-matter edema."""
    radius = float(plan.radii.mean())
    dist = _shape_distance(rng, axes, plan.centre, plan.radii, 0.2 if plan.style != "metastasis" else 0.1)
    core = dist < 1.0
    if not core.any():  # coarse grid smaller than the lesion: keep its centre voxel
        core = dist <= dist.min()
    seg = np.where(_white_matter_edema(plan, rng, axes, tissue, dist, core, spacing), ED, 0).astype(np.uint8)
    if plan.enhancing:
        seg[core] = ET
        if plan.necrosis:
            ring = max(plan.ring, 1.8 * spacing) / radius
            seg[core & (dist < 1.0 - ring)] = NCR
        if not plan.necrosis or not (seg == ET).any():
            seg[core] = ET
    else:
        seg[core] = NCR  # non-enhancing tumour
    if plan.style == "lgg" and plan.enhancing:  # faint patchy enhancement inside a non-enhancing core
        seg[core] = NCR
        patch = core & (smooth_noise(rng, axes, 5.0) > 1.1)
        seg[patch if patch.any() else core & (dist <= dist[core].min())] = ET
    return seg


def _meningioma_labels(
    plan: TumourPlan, rng: np.random.Generator, axes: tuple[np.ndarray, ...], tissue: np.ndarray, spacing: float
) -> np.ndarray:
    """Homogeneously enhancing dome flattened against the dura; no, rim or vasogenic edema."""
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
    if plan.reach > 0 and tumour.any():
        seg[_white_matter_edema(plan, rng, axes, tissue, dist, tumour, spacing) & inward] = ED
    seg[tumour] = ET
    if plan.necrosis:  # small central necrosis half-way into the cap
        radius = float(plan.radii.mean())
        cx, cy, cz = _offsets(axes, plan.base - plan.normal * 0.35 * radius)
        seg[tumour & (cx**2 + cy**2 + cz**2 < (0.22 * radius) ** 2)] = NCR
    return seg


def _pituitary_labels(
    plan: TumourPlan, rng: np.random.Generator, axes: tuple[np.ndarray, ...], spacing: float
) -> np.ndarray:
    """Enhancing sellar/suprasellar mass, sometimes with a cystic core, no edema."""
    dist = _shape_distance(rng, axes, plan.centre, plan.radii, 0.07)
    seg = np.where(dist < 1.0, ET, 0).astype(np.uint8)
    if not seg.any():
        seg[dist <= dist.min()] = ET
    if plan.necrosis:
        seg[dist < 0.4] = NCR
    return seg
