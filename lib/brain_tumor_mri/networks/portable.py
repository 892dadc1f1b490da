"""Sidecars fit to leave the server: absolute paths cut to their last component.

A sidecar records provenance: the studies folder a run trained or was calibrated on, the
output and run folders, the command line that reproduces it. On a server those are the
datastore's absolute paths. They say nothing to the site that receives a weights archive,
and a folder above the datastore can carry a name (a user, a project, a patient cohort)
that should stay inside the hospital. Folder names themselves stay, so the record still
says which set a fit used; relative paths and every other value pass unchanged.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any


def _is_absolute(text: str) -> bool:
    return text.startswith(("/", "\\")) or PureWindowsPath(text).is_absolute()


def _last_part(path: str) -> str:
    name = PureWindowsPath(path).name if "\\" in path else PurePosixPath(path).name
    return name or "."


def _portable_token(token: str) -> str:
    """A command-line token with an absolute path (bare or as ``--opt=PATH``) cut to its name."""
    if _is_absolute(token):
        return _last_part(token)
    option, sep, value = token.partition("=")
    if sep and option.startswith("-") and _is_absolute(value):
        return f"{option}={_last_part(value)}"
    return token


def portable_text(text: str) -> str:
    """``text`` with absolute paths cut: a whole-string path, or the path arguments of a command line."""
    if "\n" not in text and _is_absolute(text.strip()):
        return _last_part(text.strip())
    if not any(ch.isspace() for ch in text):
        return text
    try:
        tokens = shlex.split(text)
    except ValueError:  # not a command line (an unbalanced quote in prose)
        return text
    cut = [_portable_token(t) for t in tokens]
    return shlex.join(cut) if cut != tokens else text


def portable_meta(meta: Any) -> Any:
    """A copy of a sidecar (any JSON value) with every string passed through ``portable_text``."""
    if isinstance(meta, dict):
        return {key: portable_meta(value) for key, value in meta.items()}
    if isinstance(meta, list):
        return [portable_meta(value) for value in meta]
    if isinstance(meta, str):
        return portable_text(meta)
    return meta
