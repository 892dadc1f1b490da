"""The segmentation training cases: read, checked and preprocessed into cache entries.

Every case is read with the same readers and ``prepare_case`` the server uses at
inference, so training never sees data prepared differently from what the served model
will get. An entry holds the image as float16 (z-scored values; half the disk and I/O of
float32, ~1e-3 relative rounding), the label as uint8 and the foreground coordinates the
patch sampler centres patches on (``sampler.foreground_coords``).
"""

from __future__ import annotations

import functools
import logging
import zlib

import numpy as np

from ..imageio import InputError, load_sequences, load_volume
from ..labels import convert_labels
from ..transforms.preprocess import PREPROCESS_VERSION, prepare_case
from .cache import CacheFamily
from .cache_file import CacheEntry
from .cases import CaseSpec
from .sampler import FG_PER_LABEL, foreground_coords

logger = logging.getLogger(__name__)


def read_labelled_case(
    spec: CaseSpec, allow_missing: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(stack, affine, missing sequences, internal-convention label) of one labelled case; errors name the case."""
    label_path = spec.file("label")
    if label_path is None:
        raise InputError(f"case {spec.case_id}: no final label")
    try:
        stack, affine, missing = load_sequences(spec.sequences, allow_missing=allow_missing)
        label_raw, _ = load_volume(label_path)
    except InputError as exc:
        raise InputError(f"case {spec.case_id}: {exc}") from exc
    if label_raw.shape != stack.shape[1:]:
        raise InputError(
            f"case {spec.case_id}: label shape {label_raw.shape} differs from image shape {stack.shape[1:]}"
        )
    label = convert_labels(label_raw, "internal", source=f"case {spec.case_id} label {label_path.name}")
    return stack, affine, missing, label


def build_seg_entry(spec: CaseSpec, spacing: float, allow_missing: bool) -> CacheEntry:
    """Read, check and preprocess one labelled case; errors name the case."""
    stack, affine, missing, label = read_labelled_case(spec, allow_missing)
    prepared = prepare_case(stack, affine, spacing, label)
    assert prepared.label is not None  # a label was passed in
    lab = prepared.label.numpy()
    arrays = {
        "image": prepared.image.numpy().astype(np.float16),
        "label": lab,
        "fg": foreground_coords(lab, zlib.crc32(spec.case_id.encode("utf-8"))),
    }
    return CacheEntry(arrays, {"missing": list(missing), "window": list(lab.shape)})


def seg_family(spacing: float, allow_missing: bool) -> CacheFamily:
    """The cache family of segmentation cases prepared at ``spacing`` mm."""
    params = {"spacing": float(spacing), "allow_missing": bool(allow_missing), "preprocess": PREPROCESS_VERSION,
              "storage": "float16", "fg_per_label": FG_PER_LABEL}  # fmt: skip
    builder = functools.partial(build_seg_entry, spacing=float(spacing), allow_missing=bool(allow_missing))
    return CacheFamily(f"seg-{spacing:g}mm", params, builder)
