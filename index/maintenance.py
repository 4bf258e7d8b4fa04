"""Inspect an index directory and remove images from it (``tipsv2 index info|remove``)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import write_json
from .collection import BUILD_FILE, GLOBAL_DIR, PATCH_DIR, locate, read_skipped


def _open_all(collection):
    from . import GlobalIndex, PatchIndex

    opened = {}
    if collection.global_path is not None:
        opened[GLOBAL_DIR] = GlobalIndex.open(collection.global_path)
    if collection.patch_path is not None:
        opened[PATCH_DIR] = PatchIndex.open(collection.patch_path)
    return opened


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """The ``tipsv2 index info --json`` document: build record, each index's info, skipped count."""
    collection = locate(path)
    data: dict[str, Any] = {"path": str(collection.path), "build": collection.build, GLOBAL_DIR: None, PATCH_DIR: None,
                            "skipped": len(read_skipped(collection.path))}
    for name, index in _open_all(collection).items():
        data[name] = index.info()
    return data


def remove_images(path: str | os.PathLike, *, paths: Sequence[str] = (), ids: Sequence[int] = (),
                  missing_ok: bool = False) -> dict[str, Any]:
    """Remove images (by path or id) from every index in the directory; nothing is saved if one is unknown.

    Returns ``{"removed": n, "counts": {"global": n, "patch": n}}``.
    """
    collection = locate(path)
    opened = _open_all(collection)
    removed = 0
    for index in opened.values():
        n = 0
        if ids:
            n += index.remove(ids=list(ids), missing_ok=missing_ok)
        if paths:
            n += index.remove(paths=list(paths), missing_ok=missing_ok)
        removed = max(removed, n)
    for index in opened.values():
        index.save()
    counts = {name: len(index) for name, index in opened.items()}
    if collection.build:
        record = {**collection.build, "counts": counts}
        write_json(Path(collection.path) / BUILD_FILE, record)
    return {"removed": removed, "counts": counts}


__all__ = ["describe", "remove_images"]
