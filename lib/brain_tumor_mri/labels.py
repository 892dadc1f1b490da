"""The one place that defines sequences, segmentation labels and tumour classes.

Internal segmentation convention (same numbers as BraTS 2023 and contiguous 1..3, which
is what 3D Slicer maps to segments): 0 background, 1 necrotic / non-enhancing tumour core
(NCR), 2 peritumoural edema (ED / SNFH), 3 enhancing tumour (ET). Every dataset-specific
numbering is converted here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "SEQUENCES",
    "SEQUENCE_NAMES",
    "DISPLAY_SEQUENCE",
    "SEG_LABELS",
    "SEG_LABEL_NAMES",
    "REGIONS",
    "TUMOR_CLASSES",
    "UNCERTAIN_ANSWER",
    "OTHER_ANSWER",
    "LABEL_MAPS",
    "convert_labels",
    "seg_label_value",
]

#: Sequence keys in network channel order (BraTS 2023 suffixes).
SEQUENCES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
SEQUENCE_NAMES: dict[str, str] = {
    "t1n": "T1 (native)",
    "t1c": "T1 contrast-enhanced",
    "t2w": "T2",
    "t2f": "FLAIR",
}
#: The sequence stored as the datastore image, i.e. the volume Slicer shows and labels.
DISPLAY_SEQUENCE = "t2f"

#: Internal segmentation label values.
SEG_LABELS: dict[str, int] = {"necrotic_core": 1, "edema": 2, "enhancing_tumor": 3}
SEG_LABEL_NAMES: dict[int, str] = {v: k for k, v in SEG_LABELS.items()}

#: Other names a segment may carry (Slicer display names, BraTS abbreviations), normalised by
#: ``seg_label_value``: lower case, spaces and dashes as underscores.
SEG_LABEL_ALIASES: dict[str, str] = {
    "necrotic_core": "necrotic_core",
    "necrosis": "necrotic_core",
    "necrotic_tumor_core": "necrotic_core",
    "necrotic_tumour_core": "necrotic_core",
    "ncr": "necrotic_core",
    "netc": "necrotic_core",
    "edema": "edema",
    "oedema": "edema",
    "peritumoral_edema": "edema",
    "ed": "edema",
    "snfh": "edema",
    "enhancing_tumor": "enhancing_tumor",
    "enhancing_tumour": "enhancing_tumor",
    "enhancing_lesion": "enhancing_tumor",
    "et": "enhancing_tumor",
}


def seg_label_value(name: str) -> int | None:
    """Internal label value of a segment name ("Enhancing tumour", "edema", "NCR"), else None."""
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    alias = SEG_LABEL_ALIASES.get(key)
    return SEG_LABELS[alias] if alias else None


#: BraTS evaluation regions as sets of internal label values.
REGIONS: dict[str, tuple[int, ...]] = {
    "whole_tumor": (1, 2, 3),
    "tumor_core": (1, 3),
    "enhancing_tumor": (3,),
}

#: Tumour-type classes in classifier output order.
TUMOR_CLASSES: tuple[str, ...] = ("glioma", "meningioma", "pituitary", "no_tumor")

#: Classification answers besides the classes: ``uncertain`` when the answer is low-confidence
#: (the probabilities and ``best_guess`` are still given), ``other`` when the case shows a
#: pattern outside the classes (several separate lesions, metastasis-like).
UNCERTAIN_ANSWER = "uncertain"
OTHER_ANSWER = "other"

#: Aliases seen in public 2D datasets' class folder names -> internal class.
CLASS_ALIASES: dict[str, str] = {
    "glioma": "glioma",
    "glioma_tumor": "glioma",
    "meningioma": "meningioma",
    "meningioma_tumor": "meningioma",
    "pituitary": "pituitary",
    "pituitary_tumor": "pituitary",
    "notumor": "no_tumor",
    "no_tumor": "no_tumor",
    "no": "no_tumor",
    "normal": "no_tumor",
}

#: Source label value -> internal label value, per dataset convention.
LABEL_MAPS: dict[str, dict[int, int]] = {
    # BraTS 2017-2021: 1 NCR/NET, 2 ED, 4 ET.
    "brats2021": {0: 0, 1: 1, 2: 2, 4: 3},
    # BraTS 2023+: 1 NETC, 2 SNFH, 3 ET (BraTS 2024 adds 4 = resection cavity, not a tumour
    # compartment here, so it is mapped to background).
    "brats2023": {0: 0, 1: 1, 2: 2, 3: 3},
    "brats2024": {0: 0, 1: 1, 2: 2, 3: 3, 4: 0},
    # Medical Segmentation Decathlon Task01: 1 edema, 2 non-enhancing tumour, 3 enhancing.
    "msd": {0: 0, 1: 2, 2: 1, 3: 3},
    # Already internal (labels saved from Slicer).
    "internal": {0: 0, 1: 1, 2: 2, 3: 3},
}

#: Decathlon Task01 4D channel order, as internal sequence keys.
MSD_CHANNEL_ORDER: tuple[str, ...] = ("t2f", "t1n", "t1c", "t2w")


def class_from_folder(name: str) -> str:
    """Map a class folder name (e.g. Kaggle's ``glioma_tumor``) to an internal class."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in CLASS_ALIASES:
        raise ValueError(f"unknown tumour class folder {name!r}; expected one of {sorted(CLASS_ALIASES)}")
    return CLASS_ALIASES[key]


def convert_labels(label: np.ndarray, convention: str, *, source: str = "label") -> np.ndarray:
    """Convert a label array from ``convention`` to internal values (uint8).

    Raises ``ValueError`` naming ``source`` and the offending values when the array holds
    values the convention does not define (or non-integer values).
    """
    if convention not in LABEL_MAPS:
        raise ValueError(f"unknown label convention {convention!r}; expected one of {sorted(LABEL_MAPS)}")
    mapping: Mapping[int, int] = LABEL_MAPS[convention]
    arr = np.asarray(label)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{source}: label contains NaN or Inf values")
    rounded = np.rint(arr)
    if np.any(np.abs(arr - rounded) > 1e-3):
        raise ValueError(f"{source}: label contains non-integer values")
    values = np.unique(rounded.astype(np.int64))
    unknown = sorted(int(v) for v in values if int(v) not in mapping)
    if unknown:
        raise ValueError(
            f"{source}: unknown label values {unknown} for the {convention} convention (allowed: {sorted(mapping)})"
        )
    lut = np.zeros(max(max(mapping), int(values.max(initial=0))) + 1, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[rounded.astype(np.int64)]


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of a BraTS evaluation region in an internal-convention label."""
    return np.isin(label, REGIONS[region])


#: Network output channels of the segmentation model, in order.
REGION_CHANNELS: tuple[str, ...] = ("whole_tumor", "tumor_core", "enhancing_tumor")


def label_to_regions(label):
    """Internal label (..., x, y, z) -> stacked region masks (3, x, y, z); numpy or torch."""
    wt = label > 0
    tc = (label == 1) | (label == 3)
    et = label == 3
    stack = getattr(wt, "new_empty", None)
    if stack is not None:  # torch
        import torch

        return torch.stack([wt, tc, et]).to(torch.float32)
    return np.stack([wt, tc, et]).astype(np.float32)


def regions_to_label(probs, threshold: float = 0.5) -> np.ndarray:
    """Region probabilities (3, ...) -> internal label (uint8), nested WT > TC > ET."""
    p = np.asarray(probs)
    wt = p[0] > threshold
    tc = wt & (p[1] > threshold)
    et = tc & (p[2] > threshold)
    out = np.zeros(p.shape[1:], dtype=np.uint8)
    out[wt] = SEG_LABELS["edema"]
    out[tc] = SEG_LABELS["necrotic_core"]
    out[et] = SEG_LABELS["enhancing_tumor"]
    return out
