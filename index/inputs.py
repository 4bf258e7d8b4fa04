"""Collect the image files an index is built from: folders, list files and globs.

The result is a sorted, de-duplicated list of absolute paths. Its order is what gives every image
its id (its position in the list), so the same inputs always produce the same ids, on any machine
and in any shard.

Folder walks follow symlinks once: every real folder is entered at most once (a link back to an
ancestor, or a second way into a folder already walked, is not followed again), and a symlink to
a file found under another name is taken once. Folders that cannot be read are not silently
dropped: they are listed in ``CollectedInputs.problems``. File names need not be valid UTF-8; they
are kept as ``os.fsdecode`` gives them (surrogate escapes) and round-trip to the same bytes.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tipsv2_sdk.errors import TipsV2Error
from tipsv2_sdk.images import is_image_path

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
    problems: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}: folders not read or not re-entered


def _absolute(path: str | os.PathLike) -> str:
    # abspath, not resolve(): symlinked folders keep the names the user gave them.
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _dir_key(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _walk(folder: str, problems: list[dict[str, str]], seen: set[tuple[int, int]]) -> tuple[list[str], int]:
    """Image files under ``folder`` (sorted walk, each real folder once) and the count of other files."""
    found, ignored = [], 0

    def unreadable(exc: OSError) -> None:
        problems.append({"path": os.fspath(exc.filename or folder), "reason": f"unreadable folder: {exc.strerror or exc}"})

    try:
        seen.add(_dir_key(folder))
    except OSError as exc:
        unreadable(exc)
        return found, ignored
    for root, dirs, files in os.walk(folder, followlinks=True, onerror=unreadable):
        keep = []
        for name in sorted(dirs):
            if name.startswith("."):  # skip .git, .cache, our own .build
                continue
            full = os.path.join(root, name)
            try:
                key = _dir_key(full)
            except OSError as exc:
                problems.append({"path": full, "reason": f"unreadable folder: {exc.strerror or exc}"})
                continue
            if key in seen:  # reached again through a symlink (a loop, or a second way in)
                problems.append({"path": full, "reason": "folder already walked (symlink not followed again)"})
                continue
            seen.add(key)
            keep.append(name)
        dirs[:] = keep  # sorted: the walk order, and so which name a linked folder gets, is reproducible
        for name in sorted(files):
            if name.startswith("."):
                continue
            if is_image_path(name):
                found.append(os.path.join(root, name))
            else:
                ignored += 1
    return found, ignored


def _drop_linked_duplicates(paths: list[str]) -> list[str]:
    """Sorted unique paths, without symlinks to a file that is already in the list under another name."""
    unique = sorted(set(paths))
    real_of = {}
    for p in unique:
        if os.path.islink(p):
            real_of[p] = os.path.realpath(p)
    if not real_of:
        return unique
    taken = {p for p in unique if p not in real_of}
    out = []
    for p in unique:
        real = real_of.get(p)
        if real is None:
            out.append(p)
        elif real not in taken:
            taken.add(real)
            out.append(p)
    return out


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Paths listed one per line; blank lines and ``#`` comments are ignored.

    Relative entries are taken relative to the list file's folder, so a list travels with its images.
    For ``.csv`` files the first column is used and a header line named ``path`` is skipped.
    """
    path = Path(path)
    base = path.parent
    out = []
    # surrogateescape: a listed name that is not valid UTF-8 stays the same bytes on disk
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
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
    walked: list[str] = []
    ignored = 0
    problems: list[dict[str, str]] = []
    seen: set[tuple[int, int]] = set()
    for raw in sources:
        source = os.path.expanduser(os.fsdecode(raw) if isinstance(raw, bytes) else os.fspath(raw))
        if os.path.isdir(source):
            found, skipped = _walk(source, problems, seen)
            walked.extend(_absolute(p) for p in found)
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
    unique = sorted(set(paths) | set(_drop_linked_duplicates(walked)))
    return CollectedInputs(paths=unique, ignored=ignored, sources=[os.fsdecode(s) for s in sources], problems=problems)


def fingerprint(paths: Iterable[str]) -> str:
    """A short hash of an ordered path list: a resumed build checks it still has the same inputs."""
    import hashlib

    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


__all__ = ["CollectedInputs", "InputError", "LIST_SUFFIXES", "collect_inputs", "fingerprint", "read_list_file"]
