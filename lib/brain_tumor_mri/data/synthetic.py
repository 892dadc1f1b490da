"""Synthetic multi-sequence brain-tumour MRI cases built on the MNI152 template (not patient data).

A case is the real MNI152 brain (nilearn's bundled template) with per-case anatomy
(smooth random warp, scaling, left-right flip, tumour mass effect), a glioma, meningioma,
pituitary tumour or none, tissue-based T1n/T1c/T2w/FLAIR intensities and scanner effects
(blur, bias field, Rician noise, global scaling). Everything is drawn from
``SeedSequence([seed, index])``, so a case is reproducible on its own, byte for byte.

Output geometry: the BraTS field of view (240x240x155 mm, RAS, see ``synthetic_fields``)
at any isotropic spacing, generated directly at that resolution. The brain is skull
stripped (background exactly 0) as in BraTS; ``slices2d`` adds a skull for 2D pictures.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..imageio import save_nifti
from ..labels import SEG_LABELS, SEQUENCES, TUMOR_CLASSES
from .synthetic_fields import Grid, Template, load_template, output_grid, smooth_noise
from .synthetic_tumors import TumourPlan, draw_labels, mass_effect, plan_tumour

logger = logging.getLogger(__name__)

__all__ = ["SyntheticCase", "case_id_for", "tumor_type_for", "generate_case", "write_case", "write_dataset"]

#: Mean intensity of (white matter, grey matter, CSF) per sequence.
TISSUE_INTENSITY: dict[str, tuple[float, float, float]] = {
    "t1n": (880.0, 600.0, 180.0),
    "t1c": (900.0, 620.0, 200.0),
    "t2w": (420.0, 660.0, 1400.0),
    "t2f": (560.0, 700.0, 130.0),
}
#: Lesion intensity per tumour type, label and sequence (in ``SEQUENCES`` order).
_NCR, _ED, _ET = SEG_LABELS["necrotic_core"], SEG_LABELS["edema"], SEG_LABELS["enhancing_tumor"]
_EDEMA = (640.0, 650.0, 1050.0, 1150.0)
LESION_INTENSITY: dict[str, dict[int, tuple[float, float, float, float]]] = {
    "glioma": {_NCR: (260.0, 280.0, 1300.0, 650.0), _ED: _EDEMA, _ET: (620.0, 1550.0, 900.0, 950.0)},
    "meningioma": {_NCR: (350.0, 380.0, 1100.0, 600.0), _ED: _EDEMA, _ET: (590.0, 1500.0, 760.0, 800.0)},
    "pituitary": {_NCR: (300.0, 320.0, 1350.0, 500.0), _ED: _EDEMA, _ET: (600.0, 1300.0, 720.0, 760.0)},
}
#: World-mm box that holds the (warped, scaled) brain and any tumour; outside is background.
_BRAIN_BOX_MM = ((-88.0, 88.0), (-123.0, 89.0), (-80.0, 90.0))


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


@dataclass(frozen=True)
class _Anatomy:
    """Per-case anatomical variation."""

    flip: float  # -1 mirrors left-right
    scale: np.ndarray  # per-axis brain size factor
    warp_mm: float  # std of the smooth displacement field


def case_id_for(index: int) -> str:
    """BraTS-style id of synthetic case ``index`` (``BraTS-SYN-00003-000``)."""
    return f"BraTS-SYN-{index:05d}-000"


def tumor_type_for(index: int, seed: int) -> str:
    """Tumour type of case ``index``: each block of four cases holds every class once, shuffled by seed."""
    order = np.random.default_rng([seed, index // len(TUMOR_CLASSES), 7919]).permutation(len(TUMOR_CLASSES))
    return TUMOR_CLASSES[int(order[index % len(TUMOR_CLASSES)])]


def generate_case(index: int, seed: int, spacing: float = 1.0, *, keep_tissue: bool = False) -> SyntheticCase:
    """Generate case ``index`` of the dataset drawn with ``seed`` at ``spacing`` mm, in memory."""
    grid = output_grid(spacing)
    template = load_template(grid.spacing)
    kind = tumor_type_for(index, seed)
    rng_anat, rng_plan, rng_label, rng_scan = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(4)
    )
    anatomy = _Anatomy(
        flip=-1.0 if rng_anat.random() < 0.5 else 1.0,
        scale=rng_anat.uniform(0.94, 1.05, 3),
        warp_mm=float(rng_anat.uniform(1.5, 3.5)),
    )
    plan = plan_tumour(kind, rng_plan, template, anatomy.flip, anatomy.scale)
    box, axes = _brain_box(grid)
    tissue = _sample_tissue(template, _sampling_points(rng_anat, axes, anatomy, plan, template))
    seg_box = draw_labels(plan, rng_label, axes, tissue, grid.spacing)
    images, fg = _render(rng_scan, tissue, seg_box, kind, axes, grid.spacing)
    case = SyntheticCase(
        case_id=case_id_for(index),
        tumor_type=kind,
        sequences={k: _embed(grid, box, v, np.float32) for k, v in images.items()},
        seg=_embed(grid, box, seg_box, np.uint8),
        affine=grid.affine.copy(),
        brain_mask=_embed(grid, box, fg, bool),
        spacing=grid.spacing,
    )
    if keep_tissue:
        gm, wm, mask = tissue
        probs = {"gm": gm, "wm": wm, "csf": np.clip(mask - gm - wm, 0.0, 1.0)}
        case.tissue = {k: _embed(grid, box, v, np.float32) for k, v in probs.items()}
    return case


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
    plan: TumourPlan | None,
    template: Template,
) -> np.ndarray:
    """Template voxel coordinates (3, X, Y, Z) that each output voxel takes its tissue from."""
    shape = tuple(len(a) for a in axes)
    pts = np.empty((3,) + shape, dtype=np.float32)
    for a in range(3):
        pts[a] = axes[a].reshape([-1 if k == a else 1 for k in range(3)])
    if plan is not None:
        mass_effect(plan, pts, axes)
    for a in range(3):
        pts[a] -= anatomy.warp_mm * smooth_noise(rng, axes, 40.0)
        pts[a] /= np.float32(anatomy.scale[a])
    pts[0] *= np.float32(anatomy.flip)
    pts -= template.origin.astype(np.float32)[:, None, None, None]
    return pts


def _sample_tissue(template: Template, points: np.ndarray) -> np.ndarray:
    """Trilinear GM, WM and mask values of the template at ``points`` -> (3, X, Y, Z).

    The mask is sampled everywhere, GM and WM only where the mask is non-zero (about a
    third of the box), which is most of the cost of a case at 1 mm.
    """
    gm_map, wm_map, mask_map = template.maps
    opts = dict(order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32)
    out = np.zeros((3,) + points.shape[1:], dtype=np.float32)
    out[2] = ndimage.map_coordinates(mask_map, points, **opts)
    inside = out[2] > 0
    where = points[:, inside]
    out[0][inside] = ndimage.map_coordinates(gm_map, where, **opts)
    out[1][inside] = ndimage.map_coordinates(wm_map, where, **opts)
    return out


def _render(
    rng: np.random.Generator,
    tissue: np.ndarray,
    seg: np.ndarray,
    kind: str,
    axes: tuple[np.ndarray, ...],
    spacing: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tissue + lesion intensities with scanner effects for every sequence; also the foreground."""
    gm, wm, mask = tissue
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    fg = (mask > 0.5) | (seg > 0)
    lesion = _lesion_box(seg)
    texture = None
    if lesion is not None:
        texture = 1.0 + 0.07 * smooth_noise(rng, tuple(a[s] for a, s in zip(axes, lesion)), 4.0)
    images = {}
    for s_idx, key in enumerate(SEQUENCES):
        jitter = rng.uniform(0.94, 1.06, 3).astype(np.float32)
        wm_i, gm_i, csf_i = np.asarray(TISSUE_INTENSITY[key], dtype=np.float32) * jitter
        img = wm * wm_i + gm * gm_i + csf * csf_i
        if lesion is not None and texture is not None:
            _paint_lesion(img[lesion], seg[lesion], texture, LESION_INTENSITY[kind], s_idx, rng)
        images[key] = _scanner(rng, img, fg, axes, spacing, float(wm_i))
    return images, fg


def _lesion_box(seg: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of all labels, or None for a tumour-free case."""
    found = ndimage.find_objects((seg > 0).astype(np.uint8))
    return found[0] if found else None


def _paint_lesion(
    img: np.ndarray,
    seg: np.ndarray,
    texture: np.ndarray,
    table: Mapping[int, tuple[float, ...]],
    s_idx: int,
    rng: np.random.Generator,
) -> None:
    """Replace tissue intensity by textured lesion intensity per label, in place (a view)."""
    for label, values in table.items():
        where = seg == label
        if where.any():
            img[where] = values[s_idx] * float(rng.uniform(0.93, 1.07)) * texture[where]


def _scanner(
    rng: np.random.Generator,
    img: np.ndarray,
    fg: np.ndarray,
    axes: tuple[np.ndarray, ...],
    spacing: float,
    ref: float,
) -> np.ndarray:
    """Blur, multiplicative bias, global scale and Rician noise; background set to exactly 0."""
    sigma = float(rng.uniform(0.4, 0.9)) / spacing
    if sigma >= 0.25:
        img = ndimage.gaussian_filter(img, sigma, truncate=3.0)
    bias = np.exp(np.float32(rng.uniform(0.03, 0.1)) * smooth_noise(rng, axes, 70.0))
    img = img * bias * np.float32(rng.uniform(0.85, 1.2))
    noise_sd = np.float32(rng.uniform(0.01, 0.035) * ref)
    values = img[fg]
    n1, n2 = rng.standard_normal((2, values.size), dtype=np.float32) * noise_sd
    out = np.zeros(img.shape, dtype=np.float32)
    out[fg] = np.rint(np.clip(np.sqrt((values + n1) ** 2 + n2**2), 0, 32000))
    return out


def write_case(case: SyntheticCase, brats_dir: str | Path) -> Path:
    """Write a case in the BraTS 2023 layout: ``<dir>/<id>/<id>-<seq>.nii.gz`` and ``-seg``."""
    folder = Path(brats_dir) / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    for key in SEQUENCES:
        save_nifti(folder / f"{case.case_id}-{key}.nii.gz", case.sequences[key], case.affine, np.int16)
    save_nifti(folder / f"{case.case_id}-seg.nii.gz", case.seg, case.affine, np.uint8)
    return folder


def write_dataset(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    spacing: float = 1.0,
    slices_per_case: int = 4,
    *,
    command: str | None = None,
    progress: bool = True,
) -> list[SyntheticCase]:
    """Generate and write ``n_cases`` cases (BraTS layout, Kaggle-style PNGs, README); return them.

    The returned cases are the written ones; callers that only need files can ignore them.
    """
    from tqdm import tqdm

    from .slices2d import write_slices

    if n_cases < 1:
        raise ValueError(f"--cases must be at least 1, got {n_cases}")
    if slices_per_case < 0:
        raise ValueError(f"--slices-per-case must be >= 0, got {slices_per_case}")
    out = Path(out_dir)
    brats = out / "brats"
    brats.mkdir(parents=True, exist_ok=True)
    cases, rows = [], []
    for index in tqdm(range(n_cases), desc="synthetic cases", unit="case", disable=None if progress else True):
        case = generate_case(index, seed, spacing)
        write_case(case, brats)
        write_slices(case, out / "kaggle", slices_per_case, np.random.default_rng([seed, index, 2]))
        rows.append((case.case_id, case.tumor_type))
        cases.append(case)
        logger.debug("wrote %s (%s)", case.case_id, case.tumor_type)
    with open(brats / "tumor_types.csv", "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(["case_id", "tumor_type"])
        writer.writerows(rows)
    cmd = command or (
        f"brain-tumor sample-data {out_dir} --cases {n_cases} --seed {seed} --spacing {spacing:g} "
        f"--slices-per-case {slices_per_case}"
    )
    (out / "README.md").write_text(_readme(cmd, n_cases, seed, spacing, slices_per_case), encoding="utf-8")
    logger.info("wrote %d synthetic cases to %s", n_cases, out)
    return cases


def _readme(command: str, n_cases: int, seed: int, spacing: float, slices_per_case: int) -> str:
    """The README that says what the generated folder is (synthetic, reproducible) and its layout."""
    shape = output_grid(spacing).shape
    return f"""# Synthetic brain-tumour MRI sample data

**SYNTHETIC DATA - NOT PATIENT DATA.** Every image here was generated by this project from
the MNI152 2009 template brain that ships with nilearn (tissue maps + random warp, tumour,
tissue-based MRI contrasts, bias field and noise). No scan of any person was used.

Generated with seed {seed}:

    {command}

The same command (same seed, same spacing) regenerates byte-identical volumes.

## Layout

- `brats/<id>/<id>-t1n.nii.gz`, `-t1c`, `-t2w`, `-t2f`: T1, T1 contrast-enhanced, T2, FLAIR
  ({n_cases} cases, BraTS 2023 naming, {shape[0]}x{shape[1]}x{shape[2]} voxels at {spacing:g} mm,
  RAS affine, skull-stripped: background is 0).
- `brats/<id>/<id>-seg.nii.gz`: uint8 labels, 1 necrotic core, 2 edema, 3 enhancing tumour.
- `brats/tumor_types.csv`: `case_id,tumor_type` (glioma, meningioma, pituitary, no_tumor).
- `kaggle/<class>/<id>_<n>.png`: {slices_per_case} 8-bit 2D slice(s) per case with a synthetic
  skull, in the public Kaggle class folders `glioma`, `meningioma`, `pituitary`, `notumor`.
"""
