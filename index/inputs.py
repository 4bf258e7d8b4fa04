"""Collect the image files an index is built from: folders, list files and globs.

The result is a sorted, de-duplicated list of absolute paths. Its order is what gives every image
its id (its position in the list), so the same inputs always produce the same ids, on any machine
and in any shard.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TipsV2Error
from ..images import is_image_path

# A source with one of these suffixes is read as a list of paths, one per line.
LIST_SUFFIXES = (".txt", ".lst", ".list", ".csv")
_GLOB_CHARS = ("*", "?", "[")


class InputError(TipsV2Error, ValueError):
    """An input source (folder, list file or glob) does not exist or yields nothing."""


@dataclass
class CollectedInputs:
    """The image paths found, plus how many non-image files were passed over while walking folders."""

    paths: list[str]
    ignored: int = 0
    sources: list[str] = field(default_factory=list)


def _absolute(path: str | os.PathLike) -> str:
    # abspath, not resolve(): symlinked folders keep the names the user gave them.
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _walk(folder: str) -> tuple[list[str], int]:
    found, ignored = [], 0
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # skip .git, .cache, our own .build
        for name in files:
            if name.startswith("."):
                continue
            if is_image_path(name):
                found.append(os.path.join(root, name))
            else:
                ignored += 1
    return found, ignored


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Paths listed one per line; blank lines and ``#`` comments are ignored.

    Relative entries are taken relative to the list file's folder, so a list travels with its images.
    For ``.csv`` files the first column is used and a header line named ``path`` is skipped.
    """
    path = Path(path)
    base = path.parent
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if path.suffix.lower() == ".csv":
            entry = entry.split(",", 1)[0].strip().strip('"')
            if entry.lower() in ("path", "filepath", "file", "image"):
                continue
        if not entry or entry.startswith("#"):
            continue
        out.append(_absolute(entry if os.path.isabs(entry) else base / entry))
    return out


def _is_glob(source: str) -> bool:
    return any(c in source for c in _GLOB_CHARS) and not os.path.exists(source)


def collect_inputs(sources: Sequence[str | os.PathLike] | str | os.PathLike) -> CollectedInputs:
    """Turn folders (walked recursively), list files, globs and single image files into sorted paths.

    Folder walks and globs keep only files with an image suffix (content is checked when decoding);
    list-file entries are kept as given so a missing or broken listed file is reported, not dropped.
    Raises ``InputError`` naming a source that does not exist or matches nothing.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InputError("no input given: pass an image folder, a list file or a glob")
    paths: list[str] = []
    ignored = 0
    for raw in sources:
        source = os.path.expanduser(os.fspath(raw))
        if os.path.isdir(source):
            found, skipped = _walk(source)
            paths.extend(_absolute(p) for p in found)
            ignored += skipped
        elif os.path.isfile(source):
            if is_image_path(source):
                paths.append(_absolute(source))
            elif source.lower().endswith(LIST_SUFFIXES):
                paths.extend(read_list_file(source))
            else:
                raise InputError(f"{source} is neither an image (by its suffix) nor a list file ({', '.join(LIST_SUFFIXES)})")
        elif _is_glob(source):
            matches = sorted(glob.glob(source, recursive=True))
            files = [m for m in matches if os.path.isfile(m) and is_image_path(m)]
            if not files:
                raise InputError(f"the pattern {source!r} matches no image files")
            paths.extend(_absolute(p) for p in files)
            ignored += sum(1 for m in matches if os.path.isfile(m) and not is_image_path(m))
        else:
            raise InputError(f"no such file or folder: {source}")
    unique = sorted(set(paths))
    return CollectedInputs(paths=unique, ignored=ignored, sources=[os.fspath(s) for s in sources])


def fingerprint(paths: Iterable[str]) -> str:
    """A short hash of an ordered path list: a resumed build checks it still has the same inputs."""
    import hashlib

    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


__all__ = ["CollectedInputs", "InputError", "LIST_SUFFIXES", "collect_inputs", "fingerprint", "read_list_file"]
