"""Classification cache entries: each case prepared by exactly the functions inference uses.

``classify_preprocess`` with the settings that go into the weights' sidecar; stored as
float16 (~1e-3 relative rounding, far below what the augmentation changes).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from ..imageio import InputError, load_sequences
from ..transforms.classify_preprocess import (
    CLASS_PREPROCESS_VERSION,
    ClassPreprocess,
    prepare_case_3d,
    prepare_image_file,
)
from ..transforms.preprocess import PREPROCESS_VERSION
from .cache import CacheFamily
from .cache_file import CacheEntry
from .cases import CaseSpec

logger = logging.getLogger(__name__)


def build_class_entry(case: CaseSpec, spec: ClassPreprocess) -> CacheEntry:
    """The preprocessed input of one classification case, as float16."""
    if spec.input_kind == "2d":
        path = case.file("image")
        if path is None:
            raise InputError(f"{case.case_id}: no image")
        image = prepare_image_file(path, spec)
    else:
        try:
            stack, affine, _ = load_sequences(case.sequences, allow_missing=False)
        except InputError as exc:
            raise InputError(f"case {case.case_id}: {exc}") from exc
        image = prepare_case_3d(stack, affine, spec)
    return CacheEntry({"image": image.numpy().astype(np.float16)})


def class_family(spec: ClassPreprocess) -> CacheFamily:
    """The cache family of classification inputs prepared with ``spec``."""
    params = {**spec.to_meta(), "class_preprocess": CLASS_PREPROCESS_VERSION, "storage": "float16"}
    if spec.input_kind == "3d":
        params["preprocess"] = PREPROCESS_VERSION
    name = f"class{spec.input_kind}-{spec.size}" + (f"-{spec.spacing_mm:g}mm" if spec.spacing_mm else "")
    return CacheFamily(
        name, params, functools.partial(build_class_entry, spec=spec), hashed_roles=(), skip_unreadable=True
    )
