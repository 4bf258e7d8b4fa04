"""Plain image files (folders, globs, list files, single images) and how a source string is
told apart from container inputs.

Plain files are listed by ``index/inputs.py`` as before; this module only routes each source:
brace patterns are expanded, and tar / parquet files (given directly, by a brace pattern or by a
glob) go to their container readers, everything else to ``collect_inputs``.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from tipsv2_sdk.images import is_image_path

from ..inputs import CollectedInputs, InputError, collect_inputs
from .braces import expand_braces, has_braces
from .records import CONTAINER_SUFFIXES

_GLOB_CHARS = ("*", "?", "[")
IGNORED = "ignored"


def _kind(path: str) -> str | None:
    lower = path.lower()
    return next((k for s, k in CONTAINER_SUFFIXES.items() if lower.endswith(s)), None)


def _absolute(path: str) -> str:
    return os.path.abspath(path)  # abspath, not resolve(): symlinked folders keep the given names


def expand(source: str) -> list[tuple[str, str | None]]:
    """``(path, kind)`` pairs a source stands for: kind ``"webdataset"``/``"parquet"``, None (a
    plain source for ``collect_inputs``: folder, glob, list file or image) or ``IGNORED`` (a
    non-image file that a glob matched besides containers)."""
    if has_braces(source) and not os.path.exists(source):
        names = expand_braces(source)
        missing = [n for n in names if not os.path.exists(n)]
        if missing:
            raise InputError(f"{len(missing)} of the {len(names)} files of the pattern {source!r} do not exist "
                             f"(first: {missing[0]})")
        return [pair for name in names for pair in expand(name)]
    kind = _kind(source)
    if kind is not None and os.path.isfile(source):
        return [(_absolute(source), kind)]
    if kind is not None and os.path.isdir(source):
        return [(source, None)]
    if any(c in source for c in _GLOB_CHARS) and not os.path.exists(source):
        matches = sorted(m for m in glob.glob(source, recursive=True) if os.path.isfile(m))
        containers = [m for m in matches if _kind(m) is not None]
        if containers:
            others = [m for m in matches if _kind(m) is None]
            return ([(_absolute(m), _kind(m)) for m in containers]
                    + [(m, None if is_image_path(m) else IGNORED) for m in others])
    if kind is not None and not os.path.exists(source):
        raise InputError(f"no such file or folder: {source}")
    return [(source, None)]


def collect(sources: Sequence[str]) -> CollectedInputs:
    """The image files of plain sources (see ``index/inputs.py``)."""
    return collect_inputs(list(sources))


__all__ = ["IGNORED", "collect", "expand"]
