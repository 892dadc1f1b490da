"""Reading the real brains the generator builds on, offline, into one common space.

Every anatomy becomes a :class:`RawAnatomy`: GM/WM/brain-mask maps on an axis-aligned 1 mm
RAS grid in (approximately) MNI space, plus its T1 where the generator needs it. Sources:

- ``mni152``: nilearn's bundled MNI152 2009 template (GM/WM probability maps, brain mask);
  an average of 152 adults, already in MNI space.
- ``colin27``: Debian ``mricron-data``'s Colin27 (``ch2.nii.gz`` head with scalp and skull,
  ``ch2bet.nii.gz`` brain; BSD-3-clause); one adult scanned 27 times, registered to MNI.
  GM/WM/CSF come from this project's own tissue model (``tissue_model``).
- ``itk_t1``: Debian ``insighttoolkit5-examples``' real T1 head (``KmeansTest_T1UCharRaw``,
  128x128x62 at 2x2x3 mm with a skull-strip label map; Apache-2.0); a single acquisition
  of a different adult, aligned here to the MNI brain by matching the brain masks' first
  and second moments (centroid and covariance), then classified like Colin27.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg, ndimage

from .tissue_model import largest_component, partial_volume_maps

logger = logging.getLogger(__name__)

MRICRON_DIR = Path("/usr/share/mricron/templates")
ITK_DATA_DIR = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
COLIN_HEAD = MRICRON_DIR / "ch2.nii.gz"
COLIN_BRAIN = MRICRON_DIR / "ch2bet.nii.gz"
ITK_T1 = ITK_DATA_DIR / "KmeansTest_T1UCharRaw.nii.gz"
ITK_BRAIN = ITK_DATA_DIR / "KmeansTest_T1RawSkullStrip.nii.gz"
#: Debian package that ships each file, named in the error when it is missing.
PACKAGE_OF: dict[Path, str] = {
    COLIN_HEAD: "mricron-data",
    COLIN_BRAIN: "mricron-data",
    ITK_T1: "insighttoolkit5-examples",
    ITK_BRAIN: "insighttoolkit5-examples",
}


class AnatomyUnavailable(RuntimeError):
    """A real anatomy's files are not installed (names the Debian package to install)."""


@dataclass(frozen=True)
class RawAnatomy:
    """Tissue maps of one real brain on a 1 mm RAS grid in MNI-like space."""

    name: str
    maps: np.ndarray  # (3, X, Y, Z) float32: gm, wm, brain mask (0..1)
    origin: np.ndarray  # world mm of voxel (0, 0, 0)


def require(path: Path) -> Path:
    """``path`` if it exists, else an error that names the package that installs it."""
    if not path.is_file():
        package = PACKAGE_OF.get(path, "?")
        raise AnatomyUnavailable(
            f"{path} is missing: install the Debian package {package} "
            f"(apt-get install -y --no-install-recommends {package}; ./dev.sh setup does it)"
        )
    return path


def _load_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI volume reoriented to RAS (closest canonical) as float32, and its affine."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(require(path))))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


@functools.lru_cache(maxsize=None)
def load_raw(name: str) -> RawAnatomy:
    """The maps of anatomy ``name`` (computed once per process)."""
    loaders = {"mni152": _mni152, "colin27": _colin27, "itk_t1": _itk_t1}
    if name not in loaders:
        raise ValueError(f"unknown anatomy {name!r}; expected one of {sorted(loaders)}")
    raw = loaders[name]()
    logger.debug("anatomy %s: maps %s, brain %.0f mL", name, raw.maps.shape[1:], raw.maps[2].sum() / 1000)
    return raw


def _mni152() -> RawAnatomy:
    """nilearn's MNI152 2009 GM/WM probability maps and brain mask (1 mm, MNI space)."""
    from nilearn import datasets

    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    mask = (np.asarray(mask_img.dataobj) > 0).astype(np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32) * mask
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32) * mask
    affine = np.asarray(mask_img.affine)
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise RuntimeError("unexpected MNI152 template orientation; expected 1 mm RAS voxels")
    return RawAnatomy("mni152", np.stack([gm, wm, mask]), affine[:3, 3].astype(np.float32))


def _colin27() -> RawAnatomy:
    """Colin27's brain (ch2bet) classified into soft GM/WM/CSF by the partial-volume model."""
    brain, affine = _load_ras(COLIN_BRAIN)
    mask = ndimage.binary_fill_holes(largest_component(brain > 0))
    gm, wm, _ = partial_volume_maps(brain, mask)
    return RawAnatomy("colin27", np.stack([gm, wm, mask.astype(np.float32)]), affine[:3, 3].astype(np.float32))


def colin_head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colin27's whole-head T1 (ch2), its brain mask (ch2bet > 0) and the world mm origin."""
    head, affine = _load_ras(COLIN_HEAD)
    brain, _ = _load_ras(COLIN_BRAIN)
    mask = ndimage.binary_fill_holes(largest_component(brain > 0))
    return head, mask, affine[:3, 3].astype(np.float32)


def _itk_t1() -> RawAnatomy:
    """The ITK example head: brain from its skull-strip labels, aligned to MNI, classified."""
    t1, affine = _load_ras(ITK_T1)
    labels, _ = _load_ras(ITK_BRAIN)
    brain = ndimage.binary_fill_holes(largest_component(labels >= 5))
    ref = load_raw("mni152")
    src_to_ref = moment_alignment(brain, affine, ref.maps[2] > 0.5, ref.origin)
    shape = ref.maps.shape[1:]
    out_t1 = resample_to_grid(t1, affine, src_to_ref, shape, ref.origin, order=1)
    out_mask = resample_to_grid(brain.astype(np.float32), affine, src_to_ref, shape, ref.origin, order=1) > 0.5
    out_mask = ndimage.binary_fill_holes(largest_component(out_mask))
    gm, wm, _ = partial_volume_maps(out_t1, out_mask, smooth_vox=0.8)
    return RawAnatomy("itk_t1", np.stack([gm, wm, out_mask.astype(np.float32)]), ref.origin.copy())


def _moments(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-mm centroid and covariance of a boolean mask."""
    idx = np.argwhere(mask).astype(np.float64)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    centre = world.mean(axis=0)
    return centre, np.cov((world - centre).T)


def moment_alignment(
    src_mask: np.ndarray, src_affine: np.ndarray, ref_mask: np.ndarray, ref_origin: np.ndarray
) -> np.ndarray:
    """4x4 world->world affine taking the source brain onto the reference brain.

    Matches centroids and covariances with the symmetric map ``C_ref^1/2 C_src^-1/2``
    (no free rotation, so a roughly RAS-aligned head is only scaled, sheared a little and
    shifted, never flipped).
    """
    ref_affine = np.eye(4)
    ref_affine[:3, 3] = ref_origin
    c_src, cov_src = _moments(src_mask, src_affine)
    c_ref, cov_ref = _moments(ref_mask, ref_affine)
    lin = np.real(linalg.sqrtm(cov_ref) @ linalg.inv(linalg.sqrtm(cov_src)))
    out = np.eye(4)
    out[:3, :3] = lin
    out[:3, 3] = c_ref - lin @ c_src
    return out


def resample_to_grid(
    data: np.ndarray,
    src_affine: np.ndarray,
    src_to_ref: np.ndarray,
    shape: tuple[int, ...],
    ref_origin: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """``data`` resampled onto a 1 mm RAS grid (``shape`` at ``ref_origin``) under ``src_to_ref``."""
    ref_affine = np.eye(4)
    ref_affine[:3, 3] = ref_origin
    vox = np.linalg.inv(src_affine) @ np.linalg.inv(src_to_ref) @ ref_affine  # ref voxel -> src voxel
    return ndimage.affine_transform(
        data.astype(np.float32), vox[:3, :3], vox[:3, 3], output_shape=shape, order=order, mode="constant", cval=0.0
    )
