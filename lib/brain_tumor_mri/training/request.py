"""The keys a training request may carry (``POST /train/{model}``), parsed and checked once.

Slicer's training panel sends back the keys the train task's ``config()`` shows, with the
values the user typed; scripts send anything. Every key is checked here, in the server
process, before a training run is started, so a bad value is a 4xx naming the key instead
of a run that starts and fails (or silently does nothing, like ``max_epochs: -1``).
Unknown keys are refused too: a typo must not fall back to a default unnoticed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..imageio import InputError

#: Keys MONAI Label itself adds to every training request; accepted and ignored. ``local_rank``
#: is added by its training subprocess (``monailabel.interfaces.utils.app``), where the train
#: task parses the request again to build the run's options.
MONAILABEL_REQUEST_KEYS = frozenset(
    {"model", "name", "description", "device", "client_id", "gpus", "bundle_path", "local_rank"}
)


@dataclass(frozen=True)
class RequestKey:
    """One accepted request key: its parser and a description for error messages and docs."""

    parse: Callable[[str, Any], Any]
    help: str
    models: tuple[str, ...] = ("segmentation", "classification")


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InputError(f"training request: {key} {value!r}: expected an integer")
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"training request: {key} {value!r}: expected an integer") from None
        if not math.isfinite(number) or number != int(number):
            raise InputError(f"training request: {key} {value!r}: expected an integer")
        if not lo <= int(number) <= hi:
            raise InputError(f"training request: {key} {value!r}: expected an integer in [{lo}, {hi}]")
        return int(number)

    return parse


def _float(lo: float, hi: float, lo_open: bool = False) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InputError(f"training request: {key} {value!r}: expected a number")
        try:
            number = float(value)
        except ValueError:
            raise InputError(f"training request: {key} {value!r}: expected a number") from None
        low_ok = number > lo if lo_open else number >= lo
        if not math.isfinite(number) or not low_ok or number > hi:
            bracket = "(" if lo_open else "["
            raise InputError(f"training request: {key} {value!r}: expected a number in {bracket}{lo}, {hi}]")
        return number

    return parse


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InputError(f"training request: {key} {value!r}: expected true or false")


def _init(key: str, value: Any) -> str:
    """``auto`` (the served model), ``none`` (from scratch); a file path is a CLI-only choice."""
    text = str(value).strip().lower()
    if text not in ("auto", "none"):
        raise InputError(f"training request: {key} {value!r}: expected 'auto' (fine-tune the served model) or 'none'")
    return text


#: Every key a training request may carry, by name.
REQUEST_KEYS: dict[str, RequestKey] = {
    "max_epochs": RequestKey(_int(1, 10_000), "maximum epochs"),
    "lr": RequestKey(_float(0.0, 1.0, lo_open=True), "peak learning rate"),
    "val_fraction": RequestKey(_float(0.0, 0.9), "validation split, by case"),
    "patience": RequestKey(_int(1, 10_000), "early-stopping patience in epochs"),
    "init": RequestKey(_init, "auto = fine-tune the served model, none = from scratch"),
    "seed": RequestKey(_int(0, 2**31 - 1), "random seed"),
    "max_minutes": RequestKey(_float(0.0, 7 * 24 * 60), "wall-time budget in minutes (0: none)"),
    "nproc": RequestKey(_int(1, 64), "data-parallel worker processes", ("segmentation", "classification")),
    "multi_gpu": RequestKey(_bool, "one worker per visible GPU", ("segmentation", "classification")),
    "adapt": RequestKey(_bool, "site adaptation recipe + cross-validated publish decision", ("segmentation",)),
    "cv_folds": RequestKey(_int(2, 10), "site adaptation: cross-validation folds", ("segmentation",)),
}


def parse_train_request(model: str, request: Mapping[str, Any] | None) -> dict[str, Any]:
    """The request's training keys, parsed and range-checked; ``InputError`` names any bad one.

    Empty values (``None`` or ``""``, as Slicer sends for fields left blank) mean "use the
    default" and are dropped. MONAI Label's own bookkeeping keys are ignored.
    """
    if request is None:
        return {}
    if not isinstance(request, Mapping):
        raise InputError(f"training request: expected a JSON object, got {type(request).__name__}")
    out: dict[str, Any] = {}
    unknown = []
    for key, value in request.items():
        if key in MONAILABEL_REQUEST_KEYS:
            continue
        spec = REQUEST_KEYS.get(str(key))
        if spec is None or model not in spec.models:
            unknown.append(str(key))
            continue
        if value is None or value == "":
            continue
        out[str(key)] = spec.parse(str(key), value)
    if unknown:
        allowed = sorted(k for k, s in REQUEST_KEYS.items() if model in s.models)
        raise InputError(f"training request: unknown key(s) {sorted(unknown)} for {model}; allowed: {allowed}")
    return out
