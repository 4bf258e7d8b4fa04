"""The work area of an unfinished build: the plan, embedded chunks and the journal.

Every file is written atomically, and ``journal.json`` is written after the chunk it counts, so a
build killed at any instant (SIGKILL included) leaves either a committed chunk or none. A rerun
reads the journal and continues with the first chunk it does not list. The journal also records
what was asked (``request``: mode, input fingerprint, sources), so that a later command with
other inputs is not mistaken for the same one, and a ``plan_id`` that the published generation
repeats once the plan is in the index. Writers hold the directory's lock (``lock.py``).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.io import atomic_write, write_json
from .errors import IndexLockedError

JOURNAL_VERSION = 1
MAX_JOURNAL_BYTES = 1 << 30

BuildLockedError = IndexLockedError  # the name this error had when only builds were locked


@dataclass
class Plan:
    """What one build run does: embed ``add_paths`` under ``add_ids``, remove ``remove_ids``."""

    add_ids: list[int]
    add_paths: list[str]
    remove_ids: list[int]
    next_id: int
    inputs: dict[str, Any]  # {"fingerprint", "count", "ids_are_positions", ...} recorded in build.json

    def to_dict(self) -> dict[str, Any]:
        return {"add_ids": self.add_ids, "add_paths": self.add_paths, "remove_ids": self.remove_ids,
                "next_id": self.next_id, "inputs": self.inputs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        return cls([int(i) for i in data["add_ids"]], list(data["add_paths"]), [int(i) for i in data["remove_ids"]],
                   int(data["next_id"]), dict(data["inputs"]))


class WorkArea:
    """``OUT/.build``: the state of a build between runs."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def journal_file(self) -> Path:
        return self.path / "journal.json"

    def chunk_file(self, chunk: int) -> Path:
        return self.path / f"chunk-{chunk:06d}.npz"

    def skipped_file(self, chunk: int) -> Path:
        return self.path / f"chunk-{chunk:06d}.skipped.json"

    # ---------------------------------------------------------------- journal
    def read_journal(self) -> dict[str, Any] | None:
        """The journal of an interrupted build, or None when there is none (or it is unreadable)."""
        try:
            if self.journal_file.stat().st_size > MAX_JOURNAL_BYTES:
                return None
            data = json.loads(self.journal_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
            return None
        try:  # a damaged journal is no journal: the next run plans afresh
            plan = Plan.from_dict(data["plan"])
            chunk_size, chunks, done = int(data["chunk_size"]), int(data["chunks"]), int(data["done"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if (chunk_size < 1 or not 0 <= done <= chunks or not isinstance(data.get("settings"), dict)
                or len(plan.add_ids) != len(plan.add_paths) or not all(isinstance(p, str) for p in plan.add_paths)
                or chunks != -(-len(plan.add_ids) // chunk_size)):
            return None
        return data

    def start(self, settings: dict[str, Any], plan: Plan, chunk_size: int,
              request: dict[str, Any] | None = None) -> dict[str, Any]:
        """Discard any previous state and commit a new plan (chunk files are overwritten as they come)."""
        if self.path.is_dir():
            for stale in self.path.glob("chunk-*"):
                stale.unlink()
        chunks = -(-len(plan.add_ids) // chunk_size) if plan.add_ids else 0
        journal = {"version": JOURNAL_VERSION, "settings": settings, "plan": plan.to_dict(),
                   "chunk_size": chunk_size, "chunks": chunks, "done": 0, "request": request,
                   "plan_id": uuid.uuid4().hex}
        write_json(self.journal_file, journal)
        return journal

    def commit_chunk(self, journal: dict[str, Any], chunk: int) -> None:
        """Record ``chunk`` as done (its files must already be written)."""
        journal["done"] = chunk + 1
        write_json(self.journal_file, journal)

    # ---------------------------------------------------------------- chunks
    def write_chunk(self, chunk: int, arrays: dict[str, np.ndarray], skipped: list[dict[str, Any]]) -> None:
        """Write one chunk's vectors (``.npz``, no pickle) and its skipped inputs."""
        write_json(self.skipped_file(chunk), skipped)
        with atomic_write(self.chunk_file(chunk)) as handle:
            np.savez(handle, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})

    def read_chunk(self, chunk: int) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        with np.load(self.chunk_file(chunk), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        skipped = json.loads(self.skipped_file(chunk).read_text(encoding="utf-8"))
        return arrays, skipped

    def remove(self) -> None:
        """Delete the work area (after the indexes it fed are saved)."""
        shutil.rmtree(self.path, ignore_errors=True)


__all__ = ["BuildLockedError", "Plan", "WorkArea"]
