"""Inspect an index directory and remove images from it (``tipsv2 index info|remove``)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .collection import GLOBAL_DIR, PATCH_DIR, read_skipped
from .errors import UnknownIdError


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """The ``tipsv2 index info --json`` document.

    ``{"path", "generation", "build", "global", "patch", "skipped", "images", "pending", "writer", "warnings"}``:
    the build record and each index's info of the published generation, the live image count,
    an interrupted (or running) plan and the process writing now, if any.
    """
    from .lock import read_holder
    from .snapshot import open_snapshot, pending_work

    snap = open_snapshot(path)
    data: dict[str, Any] = {"path": str(snap.path), "generation": snap.generation, "build": snap.build,
                            GLOBAL_DIR: None, PATCH_DIR: None, "skipped": len(read_skipped(snap.path))}
    for name, index in snap.indexes.items():
        data[name] = index.info()
    data["images"] = max((len(ix) for ix in snap.indexes.values()), default=0)
    data["pending"] = pending_work(snap.path) if snap.build else None
    data["writer"] = read_holder(snap.path)
    data["warnings"] = list(snap.warnings)
    return data


def remove_images(path: str | os.PathLike, *, paths: Sequence[str] = (), ids: Sequence[int] = (),
                  missing_ok: bool = False, wait: float = 0.0) -> dict[str, Any]:
    """Remove images (by path or id) from every index in the directory; nothing is saved if one is unknown.

    Holds the directory's writer lock (``wait`` seconds for another writer, else
    ``IndexLockedError``) and publishes the global and patch indexes together. Returns
    ``{"removed": n, "counts": {"global": n, "patch": n}, "generation": g}``.
    """
    from .generation import publish
    from .lock import WriterLock
    from .manifest import now_iso
    from .snapshot import open_snapshot
    from .update import manual_changes, with_manual, write_errors

    path = Path(path)
    with WriterLock(path, command="index remove", wait=wait), write_errors(path):
        snap = open_snapshot(path)  # the state to change is read under the lock
        opened = snap.indexes
        first = next(iter(opened.values()))
        wanted_ids = [int(i) for i in ids]
        wanted_paths = [os.fspath(p) for p in paths]
        if not missing_ok:
            for i in wanted_ids:
                if first.store.row_of_id(i) < 0:
                    raise UnknownIdError(f"id {i} is not in index {path}")
            for p in wanted_paths:
                if first.store.row_of_path(p) < 0:
                    raise UnknownIdError(f"path {p!r} is not in index {path}")
        removed_paths = {r["path"] for r in first.records(wanted_ids) if r and r.get("path") is not None}
        removed_paths |= {p for p in wanted_paths if first.store.row_of_path(p) >= 0}
        removed = 0
        for index in opened.values():
            n = 0
            if wanted_ids:
                n += index.remove(ids=wanted_ids, missing_ok=True)
            if wanted_paths:
                n += index.remove(paths=wanted_paths, missing_ok=True)
            removed = max(removed, n)
        counts = {name: len(index) for name, index in opened.items()}
        if removed == 0:
            return {"removed": 0, "counts": counts, "generation": snap.generation}
        if not snap.build:  # a bare index directory: its own manifest is the commit point
            first.save()
            return {"removed": removed, "counts": counts, "generation": int(first.manifest.files.get("gen", 0))}
        record = dict(snap.build)
        record["counts"] = counts
        record["manual"] = with_manual(manual_changes(record), removed=sorted(removed_paths))
        record["last_run"] = {"command": "index remove", "added": 0, "removed": removed, "skipped": 0}
        record["updated"] = now_iso()
        generation = publish(path, opened, record, plan=snap.collection.plan)
    return {"removed": removed, "counts": counts, "generation": generation.number}


__all__ = ["describe", "remove_images"]
