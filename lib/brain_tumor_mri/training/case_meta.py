"""Per-case metadata for grouped evaluation (by anatomy, tumour type, scanner profile, ...).

Three sources: the generator's ``brats/cases.jsonl`` (one JSON object per case: ``case_id``,
``anatomy``, ``profile``, ``domain``, ``tumor_type``, ...), any CSV with a ``case_id`` column
(e.g. ``tumor_types.csv``, or a site's own table of scanner and protocol per case) and a
datastore's ``cases/<id>/case.json`` files (``tumor_type``, ``source``, ``source_path``). Datastore ids
of imported 2D pictures carry a class prefix and a slice suffix
(``glioma-BraTS-SYN-00005-000_1``); ``lookup`` finds the generator case they were cut from.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..layout import CASE_META, CASES_DIR

logger = logging.getLogger(__name__)

_SLICE_SUFFIX = re.compile(r"[_-]\d+$")
_EXTS = (".nii.gz", ".nii", ".nrrd", ".png", ".jpg", ".jpeg")


def load_case_meta(path: str | Path) -> dict[str, dict[str, Any]]:
    """Case id -> metadata from a ``cases.jsonl`` or ``.csv`` file or a datastore folder (its ``case.json``)."""
    path = Path(path)
    table: dict[str, dict[str, Any]] = {}
    if path.is_file() and path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fp:
            reader = csv.DictReader(fp)
            if "case_id" not in (reader.fieldnames or []):
                raise ValueError(f"{path.name}: expected a case_id column, got {reader.fieldnames}")
            table = {str(row["case_id"]): dict(row) for row in reader}
    elif path.is_file():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "case_id" not in row:
                raise ValueError(f"{path.name}:{n}: expected an object with a case_id")
            table[str(row["case_id"])] = row
    elif (path / CASES_DIR).is_dir():
        for meta in sorted((path / CASES_DIR).glob(f"*/{CASE_META}")):
            table[meta.parent.name] = json.loads(meta.read_text(encoding="utf-8"))
    else:
        raise ValueError(f"{path}: neither a cases.jsonl file nor a datastore folder with {CASES_DIR}/")
    logger.info("case metadata for %d case(s) from %s", len(table), path)
    return table


def _stem(path: str) -> str:
    name = Path(path).name
    for ext in _EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _candidates(case_id: str, own: dict[str, Any] | None) -> Iterable[str]:
    """Ids to try, most specific first: the id, without slice suffix, source file, id suffixes."""
    group = _SLICE_SUFFIX.sub("", case_id) or case_id
    yield case_id
    yield group
    if own and own.get("source_path"):
        stem = _stem(str(own["source_path"]))
        yield stem
        yield _SLICE_SUFFIX.sub("", stem) or stem
    parts = group.split("-")
    for k in range(1, len(parts)):
        yield "-".join(parts[k:])


def lookup(case_id: str, table: dict[str, dict[str, Any]], own: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metadata of ``case_id`` in ``table`` (``own``: the case's case.json, if any); {} when unknown."""
    for key in _candidates(case_id, own):
        if key in table:
            return table[key]
    return {}


def group_value(meta: dict[str, Any], column: str) -> str:
    """A metadata value as a group label (lists joined with '+', empty 'none'; missing -> 'unknown')."""
    value = meta.get(column)
    if value is None:
        return "unknown"
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value) or "none"
    return str(value)
