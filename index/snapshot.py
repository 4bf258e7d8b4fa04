"""Readers' view of an index directory: one consistent generation of both indexes, opened without locks.

    from tipsv2_sdk.index.snapshot import current_generation, open_snapshot

    snap = open_snapshot("idx", model=model)       # global + patch of one published generation
    snap.global_index.search(...); snap.patch_index.search_regions(...)
    ...
    if current_generation("idx") != snap.generation:   # cheap: reads generation.json
        snap = open_snapshot("idx", model=model)   # a writer published a new one: switch over

Readers never block and never see half of a change: ``index add`` (or any writer) may run at the
same time; a snapshot keeps serving the generation it opened (its files stay readable even after
a later generation deletes them) until the caller opens a newer one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .collection import GLOBAL_DIR, PATCH_DIR, WORK_DIR, Collection, locate
from .errors import MissingFileError
from .generation import current_generation

OPEN_ATTEMPTS = 20  # a reader overtaken by this many publishes in a row gives up


@dataclass
class Snapshot:
    """The indexes of one published generation of a directory, opened."""

    path: Path
    generation: int
    collection: Collection
    global_index: Any = None  # GlobalIndex | None
    patch_index: Any = None  # PatchIndex | None
    warnings: list[str] = field(default_factory=list)

    @property
    def build(self) -> dict[str, Any]:
        """The build record of this generation (``{}`` for a bare index directory)."""
        return self.collection.build

    @property
    def indexes(self) -> dict[str, Any]:
        """``{"global": GlobalIndex, "patch": PatchIndex}`` for the indexes present."""
        return {name: ix for name, ix in ((GLOBAL_DIR, self.global_index), (PATCH_DIR, self.patch_index)) if ix is not None}

    def is_current(self) -> bool:
        """Whether no newer generation has been published since this one was opened."""
        return current_generation(self.path) == self.generation


def open_snapshot(path: str | os.PathLike, model: Any = None, *, use_gpu: bool | None = None, mmap: bool = True,
                  attempts: int = OPEN_ATTEMPTS) -> Snapshot:
    """Open the current published generation of ``path`` (a build directory or a bare index directory).

    With ``model`` the indexes must match it (``IndexMismatchError``). Every file is validated
    before use (``IndexFormatError`` naming it). If a writer publishes while this opens and the
    files of the generation being opened disappear, it starts again with the new generation.
    ``warnings`` lists what a reader should be told: an interrupted build or add waiting to be
    finished, a directory left half-written by an older version.
    """
    from . import GlobalIndex, PatchIndex

    path = Path(path)
    last: Exception | None = None
    for _ in range(max(1, attempts)):
        collection = locate(path)
        try:
            glob = patch = None
            if collection.global_path is not None:
                glob = GlobalIndex.open(collection.global_path, model=model, use_gpu=use_gpu, mmap=mmap,
                                        manifest=collection.manifest_name(GLOBAL_DIR))
            if collection.patch_path is not None:
                patch = PatchIndex.open(collection.patch_path, model=model, use_gpu=use_gpu, mmap=mmap,
                                        manifest=collection.manifest_name(PATCH_DIR))
        except MissingFileError as exc:
            if current_generation(path) == collection.generation:
                raise  # nothing newer: the file is really gone
            last = exc
            continue
        snap = Snapshot(path, collection.generation, collection, glob, patch)
        snap.warnings = _warnings(snap)
        return snap
    raise last  # type: ignore[misc]


def pending_work(path: str | os.PathLike) -> dict[str, Any] | None:
    """The interrupted (or running) build plan of a build directory, or ``None``.

    ``{"command", "chunks", "done", "add", "remove", "sources", "running", "holder"}``: what was
    asked, how far the embedding got, and whether a live process is working on it now.
    """
    from .journal import WorkArea
    from .lock import read_holder

    work = WorkArea(Path(path) / WORK_DIR)
    journal = work.read_journal()
    if journal is None:
        return None
    plan = journal.get("plan") or {}
    request = journal.get("request") or {}
    mode = request.get("mode") or (journal.get("settings") or {}).get("mode") or "sync"
    holder = read_holder(path)
    return {
        "command": "index add" if mode == "add" else "index build",
        "chunks": int(journal.get("chunks", 0)), "done": int(journal.get("done", 0)),
        "add": len(plan.get("add_ids", [])), "remove": len(plan.get("remove_ids", [])),
        "sources": list(request.get("sources") or []), "running": holder is not None, "holder": holder,
    }


def describe_pending(pending: dict[str, Any], path: str | os.PathLike, *, refused: bool = False) -> str:
    """One line about an unfinished plan, saying what to do about it.

    ``refused``: the line a command with other inputs gets (the plan must be finished first).
    """
    from .lock import describe_holder

    what = (f"`tipsv2 {pending['command']}` of {pending['add']} image{'s' if pending['add'] != 1 else ''}"
            + (f" from {', '.join(pending['sources'])}" if pending["sources"] else "")
            + f" ({pending['done']} of {pending['chunks']} chunk{'s' if pending['chunks'] != 1 else ''} embedded)")
    if refused:
        return (f"{path} holds an interrupted {what}; rerun that command to finish it first, "
                "or pass --restart to discard it")
    if pending["running"]:
        return f"{path}: {what} is in progress in {describe_holder(pending['holder'])}"
    return (f"{path}: an interrupted {what} is not part of the index; rerun that command to finish it, "
            "or pass --restart to discard it")


def _warnings(snap: Snapshot) -> list[str]:
    out = []
    if not (snap.path / "manifest.json").is_file():
        pending = pending_work(snap.path)
        if pending is not None and not pending["running"]:
            out.append(describe_pending(pending, snap.path) + f" (searching generation {snap.generation})")
    if snap.global_index is not None and snap.patch_index is not None and len(snap.global_index) != len(snap.patch_index):
        out.append(f"{snap.path}: the global index holds {len(snap.global_index)} images but the patch index "
                   f"{len(snap.patch_index)}: the directory was left half-written (by a version without generations); "
                   "rerun `tipsv2 index build` over its inputs to repair it")
    return out


__all__ = ["Snapshot", "current_generation", "describe_pending", "open_snapshot", "pending_work"]
