"""Finding cases in public dataset layouts (BraTS 2017-2021, BraTS 2023+, MSD Task01, Kaggle).

Discovery only lists files and assigns ids, tumour types and label conventions; reading,
validating and converting the voxels is left to :mod:`brain_tumor_mri.data.importers`.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..labels import SEQUENCES, TUMOR_CLASSES, class_from_folder
from ..layout import IMAGE_EXTS_2D, IMAGE_EXTS_3D, split_image_name, validate_case_id

logger = logging.getLogger(__name__)

BRATS2021 = "brats2021"
BRATS2023 = "brats2023"
MSD = "msd"
KAGGLE = "kaggle"
LAYOUTS: tuple[str, ...] = (BRATS2021, BRATS2023, MSD, KAGGLE)

#: File-name suffix -> internal sequence key (or "seg"), and the separator before it.
BRATS_SUFFIXES: dict[str, tuple[str, dict[str, str]]] = {
    BRATS2021: ("_", {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}),
    BRATS2023: ("-", {"t2f": "t2f", "t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "seg": "seg"}),
}
#: The label convention each 3D layout's ground truth uses unless told otherwise.
DEFAULT_CONVENTIONS: dict[str, str] = {BRATS2021: "brats2021", BRATS2023: "brats2023", MSD: "msd"}
TUMOR_TYPES_CSV = "tumor_types.csv"
SPLIT_FOLDERS = frozenset({"train", "training", "test", "testing", "val", "valid", "validation"})
MAX_DEPTH = 3
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
#: Tumour types recorded in case metadata although no classifier class covers them (the
#: synthetic generator's multi-lesion cases); classification training skips them.
OTHER_TUMOR_TYPES: tuple[str, ...] = ("metastasis",)


@dataclass(frozen=True)
class SourceCase:
    """One case found in a source: where its files are and what the datastore should record."""

    case_id: str
    kind: str  # "3d" or "2d"
    source: str  # layout name
    source_path: Path
    sequences: dict[str, Path] = field(default_factory=dict)  # 3D, one file per sequence
    stacked: Path | None = None  # MSD: one 4D file holding all sequences
    label: Path | None = None
    convention: str | None = None
    tumor_type: str | None = None


def sanitize_case_id(raw: str) -> str:
    """Turn a file or folder name into a datastore-safe case id (letters, digits, ``._-``)."""
    cleaned = _UNSAFE_ID_CHARS.sub("_", raw.strip())
    cleaned = re.sub(r"\.{2,}", ".", cleaned).lstrip("._-")
    return validate_case_id(cleaned)


def normalise_tumor_type(value: str | None, *, source: str = "tumour type") -> str | None:
    """Map a tumour type (or class-folder alias) to ``TUMOR_CLASSES`` or ``OTHER_TUMOR_TYPES``; empty -> None."""
    if value is None or value.strip().lower() in ("", "none", "null", "unknown"):
        return None
    if value in TUMOR_CLASSES or value in OTHER_TUMOR_TYPES:
        return value
    try:
        return class_from_folder(value)
    except ValueError:
        raise ValueError(f"{source}: unknown tumour type {value!r}; expected one of {list(TUMOR_CLASSES)}") from None


def _visible(folder: Path) -> list[Path]:
    """Sorted entries of ``folder`` without hidden files (e.g. macOS ``._`` resource forks)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _has_ext(path: Path, exts: tuple[str, ...]) -> bool:
    """Whether ``path`` is a file with one of the (lower-case) extensions."""
    return path.is_file() and path.name.lower().endswith(exts)


def brats_files(folder: Path, layout: str) -> dict[str, Path]:
    """Sequence key (or "seg") -> file, for the files in ``folder`` named like ``layout``."""
    sep, suffixes = BRATS_SUFFIXES[layout]
    found: dict[str, Path] = {}
    for path in _visible(folder):
        if not _has_ext(path, IMAGE_EXTS_3D):
            continue
        stem, _ = split_image_name(path)
        head, got_sep, suffix = stem.rpartition(sep)
        key = suffixes.get(suffix.lower()) if got_sep and head else None
        if key is None:
            continue
        if key in found:
            raise ValueError(f"{folder}: both {found[key].name} and {path.name} look like the {key} file")
        found[key] = path
    return found


def _brats_layout_of(folder: Path) -> str | None:
    """The BraTS layout whose file naming ``folder`` follows, if any."""
    counts = {name: len(brats_files(folder, name)) for name in BRATS_SUFFIXES}
    best = max(counts, key=lambda name: counts[name])
    return best if counts[best] else None


def _is_msd_root(folder: Path) -> bool:
    """Whether ``folder`` looks like a Decathlon task root (dataset.json plus image folders)."""
    return (folder / "dataset.json").is_file() and any((folder / d).is_dir() for d in ("imagesTr", "imagesTs"))


def _kaggle_class_of(folder: Path) -> str | None:
    """The class of a Kaggle-style class folder holding 2D images, else None."""
    try:
        cls = class_from_folder(folder.name)
    except ValueError:
        return None
    return cls if any(_has_ext(p, IMAGE_EXTS_2D) for p in _visible(folder)) else None


def _classify(folder: Path) -> str | None:
    """Which layout ``folder`` is the unit of (an MSD root, a BraTS case, a class folder)."""
    if _is_msd_root(folder):
        return MSD
    brats = _brats_layout_of(folder)
    if brats is not None:
        return brats
    return KAGGLE if _kaggle_class_of(folder) is not None else None


def find_units(src: Path, *, layout: str | None = None, exclude: tuple[Path, ...] = ()) -> list[tuple[str, Path]]:
    """(layout, folder) for every MSD root, BraTS case folder and class folder under ``src``."""
    skip = {p.resolve() for p in exclude}
    units: list[tuple[str, Path]] = []
    pending = [(src, 0)]
    while pending:
        folder, depth = pending.pop(0)
        if folder.resolve() in skip:
            continue
        found = _classify(folder)
        if found is not None and (layout is None or found == layout):
            units.append((found, folder))
        elif found is None and depth < MAX_DEPTH:
            pending.extend((d, depth + 1) for d in _visible(folder) if d.is_dir())
    return units


def read_tumor_types(path: Path) -> dict[str, str | None]:
    """Read a ``case_id,tumor_type`` CSV into {case id: normalised type}."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fp:
            reader = csv.DictReader(fp)
            rows = list(reader)
            header = {name.strip() for name in reader.fieldnames or []}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read tumour types ({exc})") from exc
    if not {"case_id", "tumor_type"} <= header:
        raise ValueError(f"{path}: expected header 'case_id,tumor_type', got {sorted(header)}")
    types: dict[str, str | None] = {}
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in row.items()}
        types[(row["case_id"] or "").strip()] = normalise_tumor_type(row["tumor_type"], source=f"{path}:{line}")
    return types


class TumorTypes:
    """Per-case tumour types: the default, overridden by ``tumor_types.csv`` files."""

    def __init__(self, src: Path, default: str | None) -> None:
        """Types default to ``default``; CSVs are looked up at ``src`` and beside each case."""
        self.src = src
        self.default = default
        self._cache: dict[Path, dict[str, str | None]] = {}

    def _table(self, folder: Path) -> dict[str, str | None]:
        """The (cached) tumour-type table of ``folder``, empty when it has no CSV."""
        if folder not in self._cache:
            path = folder / TUMOR_TYPES_CSV
            self._cache[folder] = read_tumor_types(path) if path.is_file() else {}
            if path.is_file():
                logger.info("tumour types from %s (%d cases)", path, len(self._cache[folder]))
        return self._cache[folder]

    def lookup(self, case_id: str, holder: Path) -> str | None:
        """Type of ``case_id``: the CSV beside its folder, then the one at the source root."""
        for folder in (holder, self.src):
            table = self._table(folder)
            if case_id in table:
                return table[case_id]
        return self.default


def brats_case(folder: Path, layout: str, types: TumorTypes) -> SourceCase:
    """A BraTS case from its folder; a missing sequence is an error, a missing seg is not."""
    files = brats_files(folder, layout)
    missing = [s for s in SEQUENCES if s not in files]
    if missing:
        sep, suffixes = BRATS_SUFFIXES[layout]
        wanted = {v: k for k, v in suffixes.items()}
        names = ", ".join(f"*{sep}{wanted[s]}.nii.gz" for s in missing)
        raise ValueError(f"{folder}: missing sequence(s) {', '.join(missing)} (no {names} file)")
    return SourceCase(
        case_id=sanitize_case_id(folder.name),
        kind="3d",
        source=layout,
        source_path=folder,
        sequences={k: v for k, v in files.items() if k != "seg"},
        label=files.get("seg"),
        convention=DEFAULT_CONVENTIONS[layout],
        tumor_type=types.lookup(folder.name, folder.parent),
    )


def msd_cases(root: Path, types: TumorTypes) -> list[SourceCase]:
    """Decathlon Task01 cases: 4D images in imagesTr/imagesTs, labels in labelsTr."""
    cases = []
    for split in ("imagesTr", "imagesTs"):
        folder = root / split
        images = [p for p in _visible(folder) if _has_ext(p, IMAGE_EXTS_3D)] if folder.is_dir() else []
        for image in images:
            stem, _ = split_image_name(image)
            label = next((p for p in (root / "labelsTr").glob(f"{stem}.nii*") if p.is_file()), None)
            if label is None and split == "imagesTr":
                logger.warning("%s: no label in labelsTr, importing unlabelled", image)
            cases.append(
                SourceCase(
                    case_id=sanitize_case_id(stem),
                    kind="3d",
                    source=MSD,
                    source_path=image,
                    stacked=image,
                    label=label,
                    convention=DEFAULT_CONVENTIONS[MSD],
                    tumor_type=types.lookup(stem, root),
                )
            )
    return cases


def kaggle_cases(folder: Path) -> list[SourceCase]:
    """2D images of one class folder; ids ``<class>[-<split>]-<stem>``."""
    cls = _kaggle_class_of(folder)
    assert cls is not None
    split = folder.parent.name.lower()
    prefix = f"{cls}-{split}" if split in SPLIT_FOLDERS else cls
    return [
        SourceCase(
            case_id=sanitize_case_id(f"{prefix}-{split_image_name(p)[0]}"),
            kind="2d",
            source=KAGGLE,
            source_path=p,
            tumor_type=cls,
        )
        for p in _visible(folder)
        if _has_ext(p, IMAGE_EXTS_2D)
    ]


def discover(
    src: str | Path, *, layout: str | None = None, tumor_type: str | None = None, exclude: tuple[Path, ...] = ()
) -> list[SourceCase]:
    """All cases under ``src`` (every layout found, or only ``layout``), ids checked unique."""
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{src}: source folder not found")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {list(LAYOUTS)}")
    types = TumorTypes(src, normalise_tumor_type(tumor_type, source="--tumor-type"))
    cases: list[SourceCase] = []
    for unit_layout, folder in find_units(src, layout=layout, exclude=exclude):
        if unit_layout == MSD:
            cases.extend(msd_cases(folder, types))
        elif unit_layout == KAGGLE:
            cases.extend(kaggle_cases(folder))
        else:
            cases.append(brats_case(folder, unit_layout, types))
    if not cases:
        wanted = layout or "BraTS, MSD or Kaggle"
        raise ValueError(f"{src}: no {wanted} data found (looked {MAX_DEPTH} folder levels deep)")
    _check_unique(cases)
    return cases


def _check_unique(cases: list[SourceCase]) -> None:
    """Refuse two source cases that would land on the same datastore id."""
    seen: dict[str, Path] = {}
    for case in cases:
        if case.case_id in seen:
            raise ValueError(
                f"{case.source_path}: case id {case.case_id!r} is also used by {seen[case.case_id]}; "
                "rename one of them or import them separately"
            )
        seen[case.case_id] = case.source_path
