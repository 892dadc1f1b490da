"""Which series of an MR study is T1, T1 with contrast, T2 and FLAIR.

Scanners do not label sequences in a standard way, so recognition combines three kinds of
evidence, strongest first:

1. **the site's mapping** (``--conf dicom_sequence_map``): regular expressions on the
   series description or protocol name, each naming a sequence key or ``ignore``; a match
   decides, whatever the rules below would say;
2. **names**: series description and protocol name (``AX T2 FLAIR``, ``t1_mprage_post``,
   ``T1W_SE+C``, ``tirm dark-fluid``, ...); series that are not anatomical 3D/2D images
   (localisers, diffusion, perfusion, SWI, reformats, subtractions) are set aside;
3. **sequence parameters** when the names say nothing: a long inversion time (FLAIR), a
   long TR and TE (T2), a short TE with a short TR or an MPRAGE-type inversion (T1).

T1 is split into native and contrast-enhanced by name (``post``, ``+C``, ``Gd``, ...; ``pre``
wins) or, failing that, by ``ContrastBolusAgent``. Non-MR series and derived images are
never candidates. A study must end with exactly one series per sequence: a missing one or
two candidates for one is an ``InputError`` naming the study and the series involved, so the
site can fix it with the mapping. Pure: no I/O, no MONAI Label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..imageio import InputError
from ..labels import SEQUENCE_NAMES, SEQUENCES

IGNORE = "ignore"

_EXCLUDE = re.compile(
    r"locali[sz]er|scout|survey|3[-_ ]?plane|\bloc\b|calibration|\bcal\b|\bdwi\b|diffusion|\badc\b|\btrace\b|"
    r"\bdti\b|tensor|\bswi\b|susceptib|\bswan\b|perfusion|\bperf\b|\bdsc\b|\bdce\b|\basl\b|\bmip\b|\bmpr\b|"
    r"reformat|subtract|\bsub\b|\bmra\b|\btof\b|angio|spectro|\bmrs\b|\bbold\b|fmri|\bt2\*|t2star|\bmap\b"
)
_FLAIR = re.compile(r"flair|dark[-_ ]?fluid|\btirm\b|\bt2[-_ ]?fl\b|\bfl[-_ ]?t2\b")
_T2 = re.compile(r"(?<![a-z0-9])t2(?![0-9*])|\bt2w\b|\bt2[-_ ]?(tse|fse|se|frfse)\b")
_T1 = re.compile(r"(?<![a-z0-9])t1(?![0-9])|\bt1w\b|mp[-_ ]?rage|\bspgr\b|\bfspgr\b|\bbravo\b|\btfl\b|\bvibe\b|\btfe\b")
_POST = re.compile(
    r"\bpost\b|post[-_ ]?(con|contrast|gd|gad)|\+ ?c\b|\+ ?gd|\bgd\b|gado|\bgad\b|contrast|\bce\b|\bc\+|"
    r"w[/ ]c\b|\bwith\b|enhanc|\bt1[-_ ]?ce?\b|\bt1[-_ ]?gd\b"
)
_PRE = re.compile(r"\bpre\b|pre[-_ ]?(con|contrast|gd|gad)|\bnative\b|\bnon[-_ ]?con|\bwo\b|w/o|without")
_NO_AGENT = {"", "none", "no", "n/a", "na", "0"}


@dataclass(frozen=True)
class SeriesInfo:
    """What recognition looks at, read from one instance's header (plus the series size)."""

    uid: str
    number: int | None = None
    description: str = ""
    protocol: str = ""
    modality: str = ""
    image_type: tuple[str, ...] = ()
    scanning_sequence: str = ""
    tr_ms: float | None = None
    te_ms: float | None = None
    ti_ms: float | None = None
    contrast_agent: str = ""
    instances: int = 0

    @classmethod
    def from_dataset(cls, ds: Any, instances: int = 0) -> SeriesInfo:
        """Read the fields from a pydicom ``Dataset`` (any missing attribute stays empty)."""

        def text(keyword: str) -> str:
            value = getattr(ds, keyword, "")
            if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
                return "\\".join(str(v) for v in value)
            return str(value or "")

        def number(keyword: str) -> float | None:
            value = getattr(ds, keyword, None)
            try:
                return float(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                return None

        series_number = number("SeriesNumber")
        return cls(
            uid=str(getattr(ds, "SeriesInstanceUID", "")),
            number=int(series_number) if series_number is not None else None,
            description=text("SeriesDescription"),
            protocol=text("ProtocolName"),
            modality=text("Modality").upper(),
            image_type=tuple(v.upper() for v in text("ImageType").split("\\") if v),
            scanning_sequence=text("ScanningSequence").upper(),
            tr_ms=number("RepetitionTime"),
            te_ms=number("EchoTime"),
            ti_ms=number("InversionTime"),
            contrast_agent=text("ContrastBolusAgent"),
            instances=instances,
        )

    def label(self) -> str:
        """How messages name the series: number, description and UID."""
        number = f"#{self.number} " if self.number is not None else ""
        return f"series {number}{self.description!r} ({self.uid})"

    @property
    def has_contrast_agent(self) -> bool:
        return self.contrast_agent.strip().lower() not in _NO_AGENT


@dataclass(frozen=True)
class Guess:
    """One series' recognised sequence key (None when not a candidate) and why."""

    series: SeriesInfo
    key: str | None
    reason: str


def parse_sequence_map(value: str) -> tuple[tuple[str, str], ...]:
    """``--conf dicom_sequence_map``: ``REGEX=KEY,...`` or a JSON object ``{"REGEX": "KEY"}``.

    KEY is a sequence key (``t1n``, ``t1c``, ``t2w``, ``t2f``) or ``ignore``. Regular
    expressions are matched case-insensitively anywhere in the series description or the
    protocol name; the first matching entry wins. Raises ``ValueError`` naming a bad entry.
    """
    value = value.strip()
    if not value:
        return ()
    if value.startswith("{"):
        try:
            items = list(json.loads(value).items())
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"dicom_sequence_map: not a JSON object ({exc})") from None
    else:
        items = []
        for entry in value.split(","):
            pattern, sep, key = entry.rpartition("=")
            if not sep or not pattern.strip():
                raise ValueError(f"dicom_sequence_map: entry {entry!r} is not REGEX=KEY")
            items.append((pattern.strip(), key))
    out = []
    for pattern, key in items:
        key = str(key).strip().lower()
        if key not in (*SEQUENCES, IGNORE):
            raise ValueError(
                f"dicom_sequence_map: {key!r} for {pattern!r} is not one of {', '.join(SEQUENCES)}, ignore"
            )
        try:
            re.compile(str(pattern), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"dicom_sequence_map: bad regular expression {pattern!r} ({exc})") from None
        out.append((str(pattern), key))
    return tuple(out)


def _t1_key(info: SeriesInfo, text: str) -> tuple[str, str]:
    if _PRE.search(text):
        return "t1n", "T1 by name, pre-contrast by name"
    if _POST.search(text):
        return "t1c", "T1 by name, post-contrast by name"
    if info.has_contrast_agent:
        return "t1c", f"T1 by name, contrast agent {info.contrast_agent!r} in the header"
    return "t1n", "T1 by name, no contrast agent"


def _by_parameters(info: SeriesInfo) -> tuple[str | None, str]:
    """Sequence from TR / TE / TI (ms) when names did not tell."""
    tr, te, ti = info.tr_ms, info.te_ms, info.ti_ms
    if tr is None or te is None:
        return None, "no recognisable name and no TR/TE in the header"
    params = f"TR {tr:g} ms, TE {te:g} ms" + (f", TI {ti:g} ms" if ti else "")
    if ti is not None and ti >= 1500 and tr >= 4000:
        return "t2f", f"FLAIR by parameters ({params})"
    if te >= 60 and tr >= 2000 and not (ti and ti > 0):
        return "t2w", f"T2 by parameters ({params})"
    if te <= 30 and (tr <= 1200 or (ti is not None and 300 <= ti <= 1300)):
        key = "t1c" if info.has_contrast_agent else "t1n"
        return key, f"T1 by parameters ({params}), contrast agent {'present' if key == 't1c' else 'absent'}"
    return None, f"parameters fit no sequence ({params})"


def guess_sequence(info: SeriesInfo, overrides: Sequence[tuple[str, str]] = ()) -> Guess:
    """Recognise one series (see the module docstring for the order of evidence)."""
    for pattern, key in overrides:
        if re.search(pattern, info.description, re.IGNORECASE) or re.search(pattern, info.protocol, re.IGNORECASE):
            return Guess(info, None if key == IGNORE else key, f"site mapping {pattern!r} -> {key}")
    if info.modality != "MR":
        return Guess(info, None, f"modality {info.modality or 'missing'}, not MR")
    if "DERIVED" in info.image_type:
        return Guess(info, None, "derived image (reformat, map or subtraction)")
    text = f"{info.description} {info.protocol}".lower().replace("_", " ")
    if _EXCLUDE.search(text):
        return Guess(info, None, "not an anatomical T1/T2/FLAIR series (by name)")
    is_t1, is_t2 = bool(_T1.search(text)), bool(_T2.search(text))
    t1_only = is_t1 and not is_t2  # "T1 FLAIR" is a T1-weighted inversion recovery, not a FLAIR
    if _FLAIR.search(text) and not t1_only:
        return Guess(info, "t2f", "FLAIR by name")
    if t1_only:
        return Guess(info, *_t1_key(info, text))
    if is_t2:
        return Guess(info, "t2w", "T2 by name")
    return Guess(info, *_by_parameters(info))


@dataclass(frozen=True)
class StudySequences:
    """The series chosen for each sequence of one study, and every series' decision."""

    study_uid: str
    series: dict[str, SeriesInfo]
    guesses: tuple[Guess, ...] = field(default=())

    def describe(self) -> dict[str, Any]:
        """JSON-friendly record of the choice (kept in the case's metadata)."""
        return {
            "study_uid": self.study_uid,
            "series": {
                k: {"uid": s.uid, "number": s.number, "description": s.description} for k, s in self.series.items()
            },
            "decisions": [{"uid": g.series.uid, "key": g.key, "reason": g.reason} for g in self.guesses],
        }


def _seen(guesses: Sequence[Guess]) -> str:
    return "; ".join(f"{g.series.label()}: {g.key or 'not used'} ({g.reason})" for g in guesses) or "none"


def assign_sequences(
    study_uid: str, series: Sequence[SeriesInfo], overrides: Sequence[tuple[str, str]] = ()
) -> StudySequences:
    """Pick one series per sequence; ``InputError`` naming the study and series otherwise."""
    guesses = tuple(guess_sequence(s, overrides) for s in series)
    by_key: dict[str, list[Guess]] = {}
    for g in guesses:
        if g.key is not None:
            by_key.setdefault(g.key, []).append(g)
    for key in SEQUENCES:
        found = by_key.get(key, [])
        if len(found) > 1:
            names = ", ".join(g.series.label() for g in found)
            raise InputError(
                f"study {study_uid}: {len(found)} candidate series for {SEQUENCE_NAMES[key]} ({key}): {names}; "
                f"choose one with --conf dicom_sequence_map (e.g. 'REGEX={key}', 'REGEX=ignore')"
            )
    missing = [k for k in SEQUENCES if k not in by_key]
    if missing:
        names = ", ".join(f"{SEQUENCE_NAMES[k]} ({k})" for k in missing)
        raise InputError(
            f"study {study_uid}: no series recognised as {names}; series seen: {_seen(guesses)}; "
            "map series to sequences with --conf dicom_sequence_map"
        )
    return StudySequences(study_uid, {k: by_key[k][0].series for k in SEQUENCES}, guesses)


def dataset_series_infos(first_instances: Mapping[str, Any], counts: Mapping[str, int]) -> list[SeriesInfo]:
    """``SeriesInfo`` per series UID from one instance header each and the instance counts."""
    return [SeriesInfo.from_dataset(ds, counts.get(uid, 0)) for uid, ds in first_instances.items()]
