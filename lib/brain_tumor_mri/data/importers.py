"""``brain-tumor import SRC STUDIES``: build or extend a MONAI Label datastore from public data.

Every case is read, validated and converted into a staging folder beside STUDIES first; only
when all cases are good are the files renamed into place, so a bad file leaves STUDIES as it
was. Cases already present with identical content are skipped, which makes re-runs harmless.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..imageio import (
    InputError,
    check_same_geometry,
    load_sequences,
    load_volume,
    save_label,
    save_nifti,
    storage_dtype,
)
from ..labels import DISPLAY_SEQUENCE, LABEL_MAPS, MSD_CHANNEL_ORDER, SEQUENCES, TUMOR_CLASSES, convert_labels
from ..layout import (
    CASE_META,
    atomic_write_json,
    case_dir,
    final_label_dir,
    final_label_path,
    image_path,
    reference_label_dir,
)
from .sources import LAYOUTS, SourceCase, discover

logger = logging.getLogger(__name__)

NIFTI = ".nii.gz"


@dataclass
class ImportSummary:
    """What an import added to the datastore (skipped cases are counted apart)."""

    imported: dict[str, int] = field(default_factory=lambda: {"3d": 0, "2d": 0})
    labelled: int = 0
    tumor_types: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    case_ids: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Cases written, all kinds together."""
        return sum(self.imported.values())

    def describe(self) -> str:
        """One log line with every count."""
        types = ", ".join(f"{k}: {v}" for k, v in sorted(self.tumor_types.items())) or "none"
        return (
            f"imported {self.total} case(s) ({self.imported['3d']} 3D, {self.imported['2d']} 2D), "
            f"{self.labelled} labelled, tumour types {{{types}}}; {self.skipped} already present and skipped"
        )


@dataclass(frozen=True)
class StagedCase:
    """A validated, converted case in the staging folder: its files relative to the staging root."""

    case: SourceCase
    files: tuple[Path, ...]
    labelled: bool


@contextmanager
def _naming(case: SourceCase) -> Iterator[None]:
    """Prefix any input error with the case id and the source path it came from."""
    try:
        yield
    except ValueError as exc:
        raise InputError(f"importing {case.case_id} from {case.source_path}: {exc}") from exc


def _read_3d(case: SourceCase) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The case's sequences as {key: (x, y, z) array} and their shared affine."""
    if case.stacked is None:
        stack, affine, _ = load_sequences(case.sequences)
        return dict(zip(SEQUENCES, stack)), affine
    data, affine = load_volume(case.stacked, ndim=4)
    if data.shape[-1] != len(MSD_CHANNEL_ORDER):
        raise InputError(
            f"{case.stacked.name}: expected {len(MSD_CHANNEL_ORDER)} channels on the last axis "
            f"({', '.join(MSD_CHANNEL_ORDER)}), got shape {tuple(data.shape)}"
        )
    return {key: np.ascontiguousarray(data[..., i]) for i, key in enumerate(MSD_CHANNEL_ORDER)}, affine


def _read_label(case: SourceCase, shape: tuple[int, ...], affine: np.ndarray, convention: str) -> np.ndarray:
    """The case's ground truth on the image grid, converted to internal label values."""
    assert case.label is not None
    data, label_affine = load_volume(case.label, ndim=3)
    check_same_geometry("image", shape, affine, f"label ({case.label.name})", data.shape, label_affine)
    return convert_labels(data, convention, source=case.label.name)


def _stage_3d(case: SourceCase, root: Path, convention: str | None, withhold: bool = False) -> StagedCase:
    """Validate a 3D case and write its datastore files under the staging ``root``."""
    volumes, affine = _read_3d(case)
    folder = case_dir(root, case.case_id)
    folder.mkdir(parents=True)
    files: list[Path] = []
    for key in SEQUENCES:
        if key != DISPLAY_SEQUENCE:
            files.append(save_nifti(folder / f"{key}{NIFTI}", volumes[key], affine, storage_dtype(volumes[key])))
    if case.label is not None:
        label = _read_label(case, volumes[DISPLAY_SEQUENCE].shape, affine, convention or case.convention or "internal")
        label_dir = reference_label_dir(root) if withhold else final_label_dir(root)
        label_dir.mkdir(parents=True, exist_ok=True)
        files.append(save_label(label_dir / f"{case.case_id}{NIFTI}", label, affine))
    meta = {
        "kind": "3d",
        "tumor_type": case.tumor_type,
        "source": case.source,
        "source_path": str(case.source_path),
        "sequences": list(SEQUENCES),
    }
    atomic_write_json(folder / CASE_META, meta)
    files.append(folder / CASE_META)
    flair = volumes[DISPLAY_SEQUENCE]
    files.append(save_nifti(root / f"{case.case_id}{NIFTI}", flair, affine, storage_dtype(flair)))
    return StagedCase(case, tuple(p.relative_to(root) for p in files), case.label is not None and not withhold)


def read_grey(path: Path) -> Any:
    """Open a 2D image as an 8-bit greyscale PIL image (16-bit/float rescaled to 0..255)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(img, dtype=np.float32)
                lo, hi = float(arr.min()), float(arr.max())
                scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
                return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
            return img.convert("L")
    except Exception as exc:  # PIL raises many types for corrupt or truncated files
        raise InputError(f"{path.name}: cannot read image ({type(exc).__name__}: {exc})") from exc


def _stage_2d(case: SourceCase, root: Path) -> StagedCase:
    """Convert a 2D image to greyscale PNG and write it with its case.json under ``root``."""
    grey = read_grey(case.source_path)
    folder = case_dir(root, case.case_id)
    folder.mkdir(parents=True)
    meta = {"kind": "2d", "tumor_type": case.tumor_type, "source": case.source, "source_path": str(case.source_path)}
    atomic_write_json(folder / CASE_META, meta)
    image = root / f"{case.case_id}.png"
    grey.save(image, format="PNG")
    return StagedCase(case, (folder.relative_to(root) / CASE_META, image.relative_to(root)), False)


def _digest(path: Path) -> str:
    """SHA-256 of a file, the cheap first test for identical content."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_meta(staged: Path, existing: Path) -> bool:
    """case.json files agree on every key we write, except where the source was read from."""
    ours = json.loads(staged.read_text(encoding="utf-8"))
    theirs = json.loads(existing.read_text(encoding="utf-8"))
    return all(theirs.get(k) == v for k, v in ours.items() if k != "source_path")


def _same_content(staged: Path, existing: Path) -> bool:
    """Whether an existing datastore file holds what we staged (bytes, or decoded content)."""
    if _digest(staged) == _digest(existing):
        return True
    try:
        if staged.name == CASE_META:
            return _same_meta(staged, existing)
        if staged.name.endswith(NIFTI):
            a, a_aff = load_volume(staged, ndim=3)
            b, b_aff = load_volume(existing, ndim=3)
            return a.shape == b.shape and np.allclose(a_aff, b_aff, atol=1e-3) and np.array_equal(a, b)
        return np.array_equal(np.asarray(read_grey(staged)), np.asarray(read_grey(existing)))
    except (ValueError, OSError):
        return False


def _existing(rel: Path, case_id: str, studies: Path) -> Path | None:
    """The datastore file a staged file corresponds to (any extension for image and label)."""
    if len(rel.parts) == 1:
        return image_path(studies, case_id)
    if rel.parent == final_label_dir(Path()):
        return final_label_path(studies, case_id)
    target = studies / rel
    return target if target.is_file() else None


def _plan(staged: StagedCase, root: Path, studies: Path) -> list[Path]:
    """Relative paths of the staged files still missing from STUDIES; raise on a conflict."""
    todo = []
    for rel in staged.files:
        existing = _existing(rel, staged.case.case_id, studies)
        if existing is None:
            todo.append(rel)
        elif not _same_content(root / rel, existing):
            raise ValueError(
                f"{existing}: case {staged.case.case_id!r} is already in {studies} with different content "
                f"than {staged.case.source_path}; remove it or import under another id"
            )
    return todo


def _commit(moves: list[tuple[Path, Path]]) -> None:
    """Rename staged files into place; on failure remove what was placed, so STUDIES is as before."""
    placed: list[Path] = []
    made: list[Path] = []
    try:
        for source, target in moves:
            missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
            for folder in reversed(missing):
                folder.mkdir()
                made.append(folder)
            os.replace(source, target)
            placed.append(target)
    except OSError:
        for path in reversed(placed):
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                logger.warning("could not remove %s while undoing a failed import", folder)
        raise


def _summarise(done: list[StagedCase], skipped: int) -> ImportSummary:
    """Counts per kind, labelled and per tumour type of the cases written."""
    summary = ImportSummary(skipped=skipped)
    for staged in done:
        summary.imported[staged.case.kind] += 1
        summary.labelled += int(staged.labelled)
        summary.case_ids.append(staged.case.case_id)
    summary.tumor_types = dict(Counter(s.case.tumor_type or "unknown" for s in done))
    return summary


def _stage(case: SourceCase, root: Path, label_convention: str | None, withhold: bool = False) -> StagedCase:
    """Stage one case of either kind, naming the case in any error."""
    with _naming(case):
        return _stage_3d(case, root, label_convention, withhold) if case.kind == "3d" else _stage_2d(case, root)


def _withheld(cases: list[SourceCase], unlabelled: int) -> set[str]:
    """Ids of the last ``unlabelled`` labelled 3D cases (by id): their truth is not final."""
    if unlabelled < 0:
        raise ValueError(f"--unlabelled {unlabelled}: expected a count >= 0")
    ids = sorted(c.case_id for c in cases if c.kind == "3d" and c.label is not None)
    return set(ids[len(ids) - unlabelled :]) if unlabelled else set()


def import_dataset(
    src: str | Path,
    studies: str | Path,
    *,
    layout: str | None = None,
    tumor_type: str | None = None,
    label_convention: str | None = None,
    unlabelled: int = 0,
) -> ImportSummary:
    """Import every case under ``src`` into the datastore ``studies``, all or nothing.

    ``unlabelled`` > 0 keeps the ground truth of that many labelled 3D cases under the
    ``reference`` tag instead of ``final``, so they stay in the annotation pool (for demos,
    active learning and its evaluation) while their truth is not lost.
    """
    src, studies = Path(src).absolute(), Path(studies).absolute()
    if label_convention is not None and label_convention not in LABEL_MAPS:
        raise ValueError(f"unknown label convention {label_convention!r}; expected one of {sorted(LABEL_MAPS)}")
    if studies.exists() and not studies.is_dir():
        raise ValueError(f"{studies}: exists and is not a folder")
    cases = discover(src, layout=layout, tumor_type=tumor_type, exclude=(studies,))
    logger.info("found %d case(s) under %s; validating", len(cases), src)
    studies.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{studies.name}.import-", dir=studies.parent) as tmp:
        root = Path(tmp)
        withheld = _withheld(cases, unlabelled)
        staged = [_stage(case, root, label_convention, case.case_id in withheld) for case in cases]
        moves: list[tuple[Path, Path]] = []
        done: list[StagedCase] = []
        for case in staged:
            todo = _plan(case, root, studies)
            if not todo:
                logger.info("%s: already in the datastore with the same content, skipped", case.case.case_id)
                continue
            done.append(case)
            moves.extend((root / rel, studies / rel) for rel in todo)  # the root image comes last
        _commit(moves)
    summary = _summarise(done, len(staged) - len(done))
    logger.info("%s: %s", studies, summary.describe())
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``brain-tumor import``."""
    parser.add_argument("src", type=Path, help="folder with BraTS, MSD Task01 and/or Kaggle class-folder data")
    parser.add_argument("studies", type=Path, help="MONAI Label datastore folder to create or add to")
    parser.add_argument("--layout", choices=LAYOUTS, help="import only this source layout (default: detect all)")
    parser.add_argument(
        "--tumor-type", choices=TUMOR_CLASSES, help="tumour type of the 3D cases (tumor_types.csv overrides per case)"
    )
    parser.add_argument(
        "--label-convention",
        choices=sorted(LABEL_MAPS),
        help="label numbering of the 3D ground truth (default: per layout; brats2024 maps resection cavity 4 to 0)",
    )
    parser.add_argument(
        "--unlabelled", type=int, default=0, metavar="N",
        help="keep the ground truth of the last N labelled 3D cases as tag 'reference', not 'final' "
        "(they stay unlabelled for annotation and active learning)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run the import; bad input raises ValueError, which the CLI reports with exit code 2."""
    import_dataset(
        args.src, args.studies, layout=args.layout, tumor_type=args.tumor_type, label_convention=args.label_convention,
        unlabelled=args.unlabelled,
    )  # fmt: skip
    return 0
