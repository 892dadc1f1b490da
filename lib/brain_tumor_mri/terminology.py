"""Display names, colours and standard codes of the segmentation labels.

One table (``SEGMENT_TERMS``, keyed like ``labels.SEG_LABELS``) feeds every writer that
describes segments to other software: DICOM SEG segment descriptions, the TID 1500 volume
report, and the segment metadata of Slicer ``.seg.nrrd`` files, so a segment is called and
coloured the same everywhere.

Codes follow DICOM PS3.16 CID 7168 / 7169 ("Brain Lesion Segmentation Type With / Without
Necrosis"), the value sets DICOM defines for brain-tumour sub-regions:

* necrotic core: SNOMED CT ``6574001`` "Necrosis" (CID 7168);
* edema: SNOMED CT ``79654002`` "Edema" (CID 7169);
* enhancing tumour: NCI Thesaurus ``C113842`` "Enhancing Lesion" (CID 7169). SNOMED CT has
  no concept for an enhancing lesion, and CID 7169 itself uses the NCIt code, so that is
  the standard code to write;
* category of all three: SNOMED CT ``49755003`` "Morphologically Altered Structure"
  (CID 7150), as in 3D Slicer's terminology lists.

Colours for necrosis and edema are the ``recommendedDisplayRGBValue`` of those codes in 3D
Slicer's terminology ("DICOM master list" and "General Anatomy list"). Slicer has no entry
for an enhancing lesion; we use a saturated yellow, the colour BraTS figures usually give
the enhancing tumour, which stays distinct from the other two.
"""

from __future__ import annotations

from dataclasses import dataclass

from .labels import SEG_LABELS


@dataclass(frozen=True)
class Code:
    """A coded concept: value, coding scheme designator (``SCT``, ``NCIt``, ``DCM``) and meaning."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class SegmentTerm:
    """How one label value is named, coloured and coded outside the app."""

    key: str  # internal key, as in labels.SEG_LABELS
    value: int  # internal label value (also the DICOM segment number and Slicer label value)
    name: str  # what a radiologist reads
    color: tuple[int, int, int]  # sRGB, 0..255
    category: Code
    type: Code


MORPHOLOGICALLY_ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")

SEGMENT_TERMS: dict[str, SegmentTerm] = {
    "necrotic_core": SegmentTerm(
        "necrotic_core", SEG_LABELS["necrotic_core"], "Necrotic core", (216, 191, 216),
        MORPHOLOGICALLY_ALTERED, Code("6574001", "SCT", "Necrosis"),
    ),
    "edema": SegmentTerm(
        "edema", SEG_LABELS["edema"], "Edema", (140, 224, 228),
        MORPHOLOGICALLY_ALTERED, Code("79654002", "SCT", "Edema"),
    ),
    "enhancing_tumor": SegmentTerm(
        "enhancing_tumor", SEG_LABELS["enhancing_tumor"], "Enhancing tumour", (255, 214, 0),
        MORPHOLOGICALLY_ALTERED, Code("C113842", "NCIt", "Enhancing Lesion"),
    ),
}  # fmt: skip

#: Terms in label-value order (1, 2, 3).
ORDERED_TERMS: tuple[SegmentTerm, ...] = tuple(sorted(SEGMENT_TERMS.values(), key=lambda t: t.value))

#: 3D Slicer's name of the terminology context the codes above come from.
SLICER_CONTEXT = "Segmentation category and type - DICOM master list"
SLICER_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def slicer_terminology_entry(term: SegmentTerm) -> str:
    """The ``TerminologyEntry`` tag value 3D Slicer stores per segment (context~category~type~...).

    Format of ``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry``: context name,
    category, type, type modifier, anatomic context, region, region modifier, separated by
    ``~``; each code as ``scheme^value^meaning`` (empty parts stay as ``^^``).
    """

    def code(c: Code | None) -> str:
        return f"{c.scheme}^{c.value}^{c.meaning}" if c else "^^"

    return "~".join(
        [
            SLICER_CONTEXT,
            code(term.category),
            code(term.type),
            code(None),
            SLICER_ANATOMIC_CONTEXT,
            code(None),
            code(None),
        ]
    )


def cielab_dicom(rgb: tuple[int, int, int]) -> list[int]:
    """sRGB (0..255) -> DICOM ``RecommendedDisplayCIELabValue`` (L*, a*, b* scaled to 0..65535).

    sRGB is linearised, converted to CIE XYZ with the D65 white point, then to CIE L*a*b*;
    DICOM encodes L* in 0..100 and a*, b* in -128..127 linearly onto 0..65535 (PS3.3 C.10.7.1.1).
    """
    lin = [(c / 255.0) / 12.92 if c / 255.0 <= 0.04045 else ((c / 255.0 + 0.055) / 1.055) ** 2.4 for c in rgb]
    r, g, b = lin
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1.0 / 3.0) if t > (6.0 / 29.0) ** 3 else t / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0

    lum, a_star, b_star = 116.0 * f(y) - 16.0, 500.0 * (f(x) - f(y)), 200.0 * (f(y) - f(z))
    return [
        int(round(max(0.0, min(100.0, lum)) / 100.0 * 65535)),
        int(round((max(-128.0, min(127.0, a_star)) + 128.0) / 255.0 * 65535)),
        int(round((max(-128.0, min(127.0, b_star)) + 128.0) / 255.0 * 65535)),
    ]
