"""The one preprocessing definition for tumour-type classification, per input kind.

2D (a greyscale slice from PNG/JPEG or a 2D NIfTI/NRRD): crop to the non-background
bounding box made square, resize to ``size`` x ``size``, z-score over the foreground.
3D (a four-sequence case): the segmentation preprocessing (``prepare_case``: RAS,
isotropic resampling, brain crop, per-sequence z-score) at a coarse spacing, then the
brain box is scaled to fit and centred in a ``size``^3 cube. Inference and training both
call these functions, with the settings stored in the model's sidecar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..imageio import InputError, load_volume, open_nifti
from ..layout import IMAGE_EXTS_2D
from .preprocess import prepare_case

logger = logging.getLogger(__name__)

SIZE_2D = 128
SIZE_3D = 48
SPACING_3D = 4.0  # mm; a 48^3 cube at 4 mm spans 192 mm, a whole adult brain
MIN_SIDE = 16  # pixels: smaller images carry no usable anatomy
MIN_SIDE_3D = 8  # voxels per axis at the input resolution
MAX_PIXELS_2D = 50_000_000
_NIFTI_EXTS = (".nii", ".nii.gz")
#: Version of this module's output (on top of ``preprocess.PREPROCESS_VERSION`` for 3D).
#: Bump it with any change that alters a prepared image: training cache keys include it.
CLASS_PREPROCESS_VERSION = 1
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L"


@dataclass(frozen=True)
class ClassPreprocess:
    """Settings of one input kind, stored in (and read back from) the weights sidecar."""

    input_kind: str  # "2d" | "3d"
    size: int
    spacing_mm: float | None = None

    @classmethod
    def default(cls, input_kind: str) -> ClassPreprocess:
        """The shipped settings: 2D 128 px; 3D 48^3 at 4 mm."""
        if input_kind == "2d":
            return cls("2d", SIZE_2D)
        if input_kind == "3d":
            return cls("3d", SIZE_3D, SPACING_3D)
        raise ValueError(f"unknown input kind {input_kind!r}; expected '2d' or '3d'")

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ClassPreprocess:
        """Read the settings back from a weights sidecar."""
        kind = str(meta["input_kind"])
        spacing = meta.get("spacing_mm")
        return cls(kind, int(meta["input_size"]), None if spacing is None else float(spacing))

    def to_meta(self) -> dict[str, Any]:
        """Sidecar keys: input_kind, input_size, spacing_mm."""
        return {"input_kind": self.input_kind, "input_size": self.size, "spacing_mm": self.spacing_mm}


def _shape_of(path: Path) -> tuple[int, ...]:
    """Array shape from the header only (NIfTI/NRRD), so kind detection stays cheap."""
    try:
        if path.name.lower().endswith(".nrrd"):
            import nrrd

            return tuple(int(n) for n in nrrd.read_header(str(path))["sizes"])
        return tuple(int(n) for n in open_nifti(path).shape)
    except Exception as exc:
        raise InputError(f"{path.name}: not an image or unreadable ({type(exc).__name__}: {exc})") from exc


def input_kind_of(path: str | Path) -> str:
    """``"2d"`` for PNG/JPEG or a 2D NIfTI/NRRD, ``"3d"`` for a 3D volume; else InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: file not found")
    name = path.name.lower()
    if name.endswith(IMAGE_EXTS_2D):
        return "2d"
    if name.endswith(_NIFTI_EXTS + (".nrrd",)):
        shape = _shape_of(path)
        real = [n for n in shape if n > 1]
        if len(real) in (2, 3):
            return f"{len(real)}d"
        raise InputError(f"{path.name}: unexpected dimensions {shape}; expected a 2D image or a 3D volume")
    _open_pil(path).close()  # unknown suffix (e.g. an upload): accept what PIL can decode
    return "2d"


def _open_pil(path: Path):
    """Open and fully decode an image with PIL, mapping every failure to InputError."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        if img.width * img.height > MAX_PIXELS_2D:
            raise InputError(f"{path.name}: {img.width}x{img.height} pixels, more than the {MAX_PIXELS_2D:,} accepted")
        img.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path.name}: not an image or unreadable ({type(exc).__name__}: {exc})") from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path.name}: image too large ({exc})") from exc
    return img


def _pil_to_array(img: Any) -> np.ndarray:
    """PIL image -> numpy; opaque alpha is dropped, palettes and odd modes become RGB."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "RGBA", "PA"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() == alpha.max():  # constant alpha carries no information
            img = img.convert("L" if img.mode == "LA" else "RGB")
    elif img.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32)


def load_image_2d_raw(path: str | Path) -> np.ndarray:
    """Read a 2D image as decoded: float32 (H, W) or (H, W, C) (colour kept, for the input checks)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: file not found")
    if path.name.lower().endswith(_NIFTI_EXTS + (".nrrd",)):
        data, _ = load_volume(path, ndim=None, max_voxels=MAX_PIXELS_2D)
        data = np.squeeze(data)
        if data.ndim != 2:
            raise InputError(
                f"{path.name}: expected a 2D image, got a {data.ndim}D volume of shape {tuple(data.shape)}; "
                "send 3D volumes as a four-sequence case"
            )
        return np.asarray(data, dtype=np.float32)
    with _open_pil(path) as img:
        return _pil_to_array(img)


def load_image_2d(path: str | Path) -> np.ndarray:
    """Read a 2D image (PNG/JPEG/other PIL format, or NIfTI/NRRD) as float32 (H, W) grey."""
    return to_grey(load_image_2d_raw(path), Path(path).name)


def to_grey(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Check an (H, W) / (H, W, 1|3) array and return it as float32 (H, W) grey."""
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr @ _LUMA
    elif arr.ndim == 3:
        raise InputError(f"{name}: image has {arr.shape[-1]} channels; expected greyscale or RGB")
    elif arr.ndim != 2:
        raise InputError(f"{name}: unexpected dimensions {tuple(arr.shape)}; expected a 2D image")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: image contains NaN or Inf pixels")
    h, w = arr.shape
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{name}: image is {w}x{h} pixels, too small; at least {MIN_SIDE}x{MIN_SIDE} needed")
    if float(arr.max()) - float(arr.min()) <= 1e-6 * max(1.0, abs(float(arr.max()))):
        raise InputError(f"{name}: image is empty (all pixels have the same value)")
    return np.ascontiguousarray(arr)


def _square_box(mask: np.ndarray) -> tuple[int, int, int]:
    """(top, left, side) of a square around the mask's bounding box plus a 3% margin, centred on it."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(r1 - r0, c1 - c0, MIN_SIDE)
    side += 2 * max(2, round(0.03 * side))
    return (r0 + r1 - side) // 2, (c0 + c1 - side) // 2, side


def _crop_square(arr: np.ndarray, top: int, left: int, side: int, fill: float) -> np.ndarray:
    """Square window of ``arr`` (may extend past the edges, filled with ``fill``)."""
    out = np.full((side, side), fill, dtype=np.float32)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + side, arr.shape[0]), min(left + side, arr.shape[1])
    out[r0 - top : r1 - top, c0 - left : c1 - left] = arr[r0:r1, c0:c1]
    return out


def prepare_image(grey: np.ndarray, size: int = SIZE_2D, name: str = "image") -> torch.Tensor:
    """Grey (H, W) array -> normalised (1, size, size): crop to foreground, resize, z-score."""
    grey = to_grey(grey, name)
    lo = float(grey.min())
    hi = float(np.percentile(grey[grey > lo], 99.5))  # over non-minimum pixels: border-size invariant
    threshold = lo + 0.1 * (hi - lo)
    mask = grey > threshold
    top, left, side = _square_box(mask)
    square = torch.from_numpy(_crop_square(grey, top, left, side, lo))
    x = F.interpolate(square[None, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    fg = x > threshold
    vals = x[fg] if int(fg.sum()) > 1 else x.flatten()
    std = float(vals.std())
    if std <= 1e-6:
        raise InputError(f"{name}: image is empty after cropping (no contrast in the foreground)")
    return ((x - vals.mean()) / std).clamp(-5.0, 5.0).contiguous()


def prepare_image_file(path: str | Path, spec: ClassPreprocess | None = None) -> torch.Tensor:
    """Load and preprocess a 2D image file -> (1, size, size)."""
    spec = spec or ClassPreprocess.default("2d")
    return prepare_image(load_image_2d(path), spec.size, Path(path).name)


def fit_cube(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, x, y, z) with zero background -> brain box scaled to fit, centred in size^3."""
    nz = (image != 0).any(dim=0)
    if bool(nz.any()):
        idx = [torch.nonzero(nz.any(dim=tuple(d for d in range(3) if d != a))).flatten() for a in range(3)]
        image = image[:, idx[0][0] : idx[0][-1] + 1, idx[1][0] : idx[1][-1] + 1, idx[2][0] : idx[2][-1] + 1]
    longest = max(image.shape[1:])
    if longest > size:
        shape = tuple(max(1, round(n * size / longest)) for n in image.shape[1:])
        image = F.interpolate(image[None], size=shape, mode="trilinear", align_corners=False)[0]
    pads: list[int] = []
    for n in reversed(image.shape[1:]):
        before = (size - n) // 2
        pads += [before, size - n - before]
    return F.pad(image, pads).contiguous()


def prepare_case_3d(stack: np.ndarray, affine: np.ndarray, spec: ClassPreprocess | None = None) -> torch.Tensor:
    """A (4, x, y, z) case -> (4, size, size, size) via the shared segmentation preprocessing."""
    spec = spec or ClassPreprocess.default("3d")
    stack = np.asarray(stack)
    if stack.ndim != 4 or stack.shape[0] != 4:
        raise InputError(f"case: expected four sequences as (4, x, y, z), got shape {tuple(stack.shape)}")
    if min(stack.shape[1:]) < MIN_SIDE_3D:
        raise InputError(f"case: volume of shape {tuple(stack.shape[1:])} is too small (< {MIN_SIDE_3D} per axis)")
    prepared = prepare_case(stack.astype(np.float32, copy=False), affine, float(spec.spacing_mm or SPACING_3D))
    return fit_cube(prepared.image, spec.size)
