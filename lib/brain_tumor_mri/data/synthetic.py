"""Synthetic multi-sequence brain-tumour MRI cases built on real anatomies (not patient data).

A case is one of several real brains (``anatomies``: MNI152, Colin27, the ITK example head)
with per-case anatomy (smooth random warp, scaling, left-right flip, tumour mass effect),
a glioma, meningioma, pituitary tumour, several metastases or none, SynthSeg-style
randomised T1n/T1c/T2w/FLAIR contrasts (``synthetic_contrast``) including the normal
enhancing structures of contrast T1, and a simulated acquisition from a scanner profile
(``synthetic_scanner``: thick slices, ghosting/motion, bias, gamma, Rician noise, bit depth).

Everything is drawn from ``SeedSequence([seed, index])`` and the options, so a case is
reproducible on its own, byte for byte, from (seed, index, options).

Output geometry: the BraTS field of view (240x240x155 mm, RAS, see ``synthetic_fields``)
at any isotropic spacing, generated directly at that resolution. The brain is skull
stripped (background exactly 0) as in BraTS; ``slices2d`` puts it in a real head for 2D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..imageio import save_nifti
from ..labels import SEQUENCES, TUMOR_CLASSES
from .anatomies import ANATOMIES, Template, load_anatomy, select_anatomies
from .synthetic_contrast import check_domain
from .synthetic_fields import Grid, output_grid, smooth_noise
from .synthetic_lesions import draw_labels
from .synthetic_render import render_sequences
from .synthetic_scanner import check_profile
from .synthetic_tumors import TumourPlan, core_style, mass_effect, plan_tumours
from .synthetic_vessels import cortical_veins, keep_outside_structures

logger = logging.getLogger(__name__)

__all__ = [
    "GeneratorOptions", "SyntheticCase", "case_id_for", "tumor_type_for", "anatomy_for", "profile_for",
    "generate_case", "write_case",
]  # fmt: skip

#: Default share of multi-lesion metastasis cases (not a classifier class).
METASTASIS_FRACTION = 0.2
#: World-mm box that holds the (warped, scaled) brain and any tumour; outside is background.
_BRAIN_BOX_MM = ((-88.0, 88.0), (-123.0, 89.0), (-80.0, 90.0))


@dataclass(frozen=True)
class GeneratorOptions:
    """Dataset-level choices; the same options and seed give the same cases.

    ``profiles`` is a weighted mix of scanner profiles (``synthetic_scanner.PROFILES``), e.g.
    ``(("site_a", 0.8), ("site_b", 0.2))`` for a pool that is mostly one scanner.
    """

    anatomies: tuple[str, ...] = tuple(ANATOMIES)
    domain: str = "mixed"
    profiles: tuple[tuple[str, float], ...] = (("random", 1.0),)
    metastasis_fraction: float = METASTASIS_FRACTION

    def __post_init__(self) -> None:
        """Validate every choice up front (a bad name fails before any case is made)."""
        select_anatomies(self.anatomies)
        check_domain(self.domain)
        if not self.profiles or any(w < 0 for _, w in self.profiles) or sum(w for _, w in self.profiles) <= 0:
            raise ValueError(f"profile weights must be >= 0 and not all 0, got {self.profiles}")
        for name, _ in self.profiles:
            check_profile(name)
        if not 0.0 <= self.metastasis_fraction <= 1.0:
            raise ValueError(f"metastasis fraction must be within 0..1, got {self.metastasis_fraction}")


@dataclass
class SyntheticCase:
    """One generated case: sequences keyed by ``labels.SEQUENCES``, internal-convention seg."""

    case_id: str
    tumor_type: str
    sequences: dict[str, np.ndarray]  # float32 (x, y, z), integral values, 0 outside the head
    seg: np.ndarray  # uint8 (x, y, z), labels.SEG_LABELS values
    affine: np.ndarray  # 4x4 RAS, mm
    brain_mask: np.ndarray  # bool (x, y, z): brain plus tumour, i.e. the non-background voxels
    spacing: float
    tissue: dict[str, np.ndarray] = field(default_factory=dict)  # gm/wm/csf probabilities if asked
    anatomy: str = "mni152"
    profile: str = "random"
    domain: str = "mixed"
    meta: dict = field(default_factory=dict)  # JSON-friendly record of every choice made


@dataclass(frozen=True)
class _Anatomy:
    """Per-case anatomical variation."""

    flip: float  # -1 mirrors left-right
    scale: np.ndarray  # per-axis brain size factor
    warp_mm: float  # std of the smooth displacement field


def case_id_for(index: int) -> str:
    """BraTS-style id of synthetic case ``index`` (``BraTS-SYN-00003-000``)."""
    return f"BraTS-SYN-{index:05d}-000"


def tumor_type_for(index: int, seed: int, metastasis_fraction: float = METASTASIS_FRACTION) -> str:
    """Tumour type of case ``index``.

    A case is ``metastasis`` with probability ``metastasis_fraction`` (its own draw); the
    others follow blocks of four that hold every classifier class once, shuffled by seed.
    """
    if metastasis_fraction > 0 and np.random.default_rng([seed, index, 104729]).random() < metastasis_fraction:
        return "metastasis"
    order = np.random.default_rng([seed, index // len(TUMOR_CLASSES), 7919]).permutation(len(TUMOR_CLASSES))
    return TUMOR_CLASSES[int(order[index % len(TUMOR_CLASSES)])]


def anatomy_for(index: int, seed: int, anatomies: tuple[str, ...] = tuple(ANATOMIES)) -> str:
    """Anatomy of case ``index``: each block of ``len(anatomies)`` cases uses every one once."""
    n = len(anatomies)
    order = np.random.default_rng([seed, index // n, 7907]).permutation(n)
    return anatomies[int(order[index % n])]


def profile_for(index: int, seed: int, profiles: tuple[tuple[str, float], ...] = (("random", 1.0),)) -> str:
    """Scanner profile of case ``index``, drawn from the weighted mix ``profiles``."""
    names = [n for n, _ in profiles]
    weights = np.array([w for _, w in profiles], dtype=np.float64)
    return names[int(np.random.default_rng([seed, index, 31337]).choice(len(names), p=weights / weights.sum()))]


def generate_case(
    index: int,
    seed: int,
    spacing: float = 1.0,
    *,
    keep_tissue: bool = False,
    options: GeneratorOptions | None = None,
    anatomy: str | None = None,
    profile: str | None = None,
) -> SyntheticCase:
    """Generate case ``index`` of the dataset drawn with ``seed`` at ``spacing`` mm, in memory.

    ``anatomy`` and ``profile`` override the per-case choices that ``options`` would make.
    """
    opts = options or GeneratorOptions()
    grid = output_grid(spacing)
    name = anatomy or anatomy_for(index, seed, opts.anatomies)
    prof = check_profile(profile or profile_for(index, seed, opts.profiles))
    template = load_anatomy(select_anatomies([name])[0], grid.spacing)
    kind = tumor_type_for(index, seed, opts.metastasis_fraction)
    rng_anat, rng_plan, rng_label, rng_scan, rng_vessel = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(5)
    )
    anat = _Anatomy(
        flip=-1.0 if rng_anat.random() < 0.5 else 1.0,
        scale=rng_anat.uniform(0.92, 1.07, 3),
        warp_mm=float(rng_anat.uniform(1.5, 4.0)),
    )
    plans = plan_tumours(kind, rng_plan, template, anat.flip, anat.scale)
    box, axes = _brain_box(grid)
    tissue = _sample_tissue(template, _sampling_points(rng_anat, axes, anat, plans, template))
    seg_box = draw_labels(plans, rng_label, axes, tissue, grid.spacing)
    kept = keep_outside_structures(rng_vessel, tissue[3:5], tissue[2], kind)
    np.maximum(tissue[3], cortical_veins(rng_vessel, tissue[2], grid.spacing), out=tissue[3])
    core = core_style(plans, rng_plan)
    images, fg, render_meta = render_sequences(
        rng_scan, tissue, seg_box, kind, core, axes, grid.spacing, opts.domain, prof
    )
    case = SyntheticCase(
        case_id=case_id_for(index),
        tumor_type=kind,
        sequences={k: _embed(grid, box, v, np.float32) for k, v in images.items()},
        seg=_embed(grid, box, seg_box, np.uint8),
        affine=grid.affine.copy(),
        brain_mask=_embed(grid, box, fg, bool),
        spacing=grid.spacing,
        anatomy=template.name,
        profile=prof,
        domain=opts.domain,
    )
    case.meta = _metadata(case, plans, core, anat, kept, render_meta, seed, index)
    if keep_tissue:
        gm, wm, mask = tissue[:3]
        probs = {"gm": gm, "wm": wm, "csf": np.clip(mask - gm - wm, 0.0, 1.0)}
        case.tissue = {k: _embed(grid, box, v, np.float32) for k, v in probs.items()}
        case.tissue["enhancing_normal"] = _embed(grid, box, np.maximum(tissue[3], tissue[4]), np.float32)
    return case


def _metadata(
    case: SyntheticCase,
    plans: list[TumourPlan],
    core: str,
    anat: _Anatomy,
    kept: dict[str, bool],
    render_meta: dict,
    seed: int,
    index: int,
) -> dict:
    """What the case is made of: anatomy, profile, domain, lesions and acquisition, JSON-friendly."""
    voxel_ml = case.spacing**3 / 1000.0
    comps, n_comp = ndimage.label(case.seg > 0)
    return {
        "case_id": case.case_id, "seed": seed, "index": index, "tumor_type": case.tumor_type,
        "anatomy": case.anatomy, "profile": case.profile, "domain": case.domain,
        "lesions": [
            {"style": p.style, "centre_mm": [round(float(c), 1) for c in p.centre],
             "radius_mm": round(float(np.mean(p.radii)), 1), "enhancing": p.enhancing}
            for p in plans
        ],
        "n_lesions": len(plans), "n_components": int(n_comp), "core_style": core if plans else None,
        "whole_tumor_ml": round(float((case.seg > 0).sum() * voxel_ml), 2),
        "flip": anat.flip, "scale": [round(float(s), 3) for s in anat.scale],
        "outside_structures_kept": kept, **render_meta,
    }  # fmt: skip


def _brain_box(grid: Grid) -> tuple[tuple[slice, ...], tuple[np.ndarray, ...]]:
    """Index box of the grid that can hold brain or tumour, and its per-axis world coordinates."""
    box = tuple(slice(grid.index_of(a, lo), grid.index_of(a, hi) + 1) for a, (lo, hi) in enumerate(_BRAIN_BOX_MM))
    axes = tuple(grid.axis_mm(a, s.start, s.stop) for a, s in enumerate(box))
    return box, axes


def _embed(grid: Grid, box: tuple[slice, ...], data: np.ndarray, dtype) -> np.ndarray:
    """Place a box-sized array into a zero volume of the full grid."""
    out = np.zeros(grid.shape, dtype=dtype)
    out[box] = data
    return out


def _sampling_points(
    rng: np.random.Generator,
    axes: tuple[np.ndarray, ...],
    anatomy: _Anatomy,
    plans: list[TumourPlan],
    template: Template,
) -> np.ndarray:
    """Template voxel coordinates (3, X, Y, Z) that each output voxel takes its tissue from."""
    shape = tuple(len(a) for a in axes)
    pts = np.empty((3,) + shape, dtype=np.float32)
    for a in range(3):
        pts[a] = axes[a].reshape([-1 if k == a else 1 for k in range(3)])
    for plan in plans:
        mass_effect(plan, pts, axes)
    for a in range(3):
        pts[a] -= anatomy.warp_mm * smooth_noise(rng, axes, 40.0)
        pts[a] /= np.float32(anatomy.scale[a])
    pts[0] *= np.float32(anatomy.flip)
    pts -= template.origin.astype(np.float32)[:, None, None, None]
    return pts


def _sample_tissue(template: Template, points: np.ndarray) -> np.ndarray:
    """Trilinear (gm, wm, mask, vessel, plexus, support) of the template at ``points``.

    The support map is sampled everywhere, the others only where it is non-zero (about a
    third of the box), which is most of the cost of a case at 1 mm.
    """
    opts = dict(order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32)
    n = template.maps.shape[0]
    out = np.zeros((n,) + points.shape[1:], dtype=np.float32)
    out[n - 1] = ndimage.map_coordinates(template.maps[n - 1], points, **opts)
    inside = out[n - 1] > 0
    where = points[:, inside]
    for c in range(n - 1):
        out[c][inside] = ndimage.map_coordinates(template.maps[c], where, **opts)
    return out


def write_case(case: SyntheticCase, brats_dir: str | Path) -> Path:
    """Write a case in the BraTS 2023 layout: ``<dir>/<id>/<id>-<seq>.nii.gz`` and ``-seg``."""
    folder = Path(brats_dir) / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    for key in SEQUENCES:
        save_nifti(folder / f"{case.case_id}-{key}.nii.gz", case.sequences[key], case.affine, np.int16)
    save_nifti(folder / f"{case.case_id}-seg.nii.gz", case.seg, case.affine, np.uint8)
    return folder
