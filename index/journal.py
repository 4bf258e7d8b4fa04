"""The work area of an unfinished build: a lock, the plan, embedded chunks and the journal.

Every file is written atomically, and ``journal.json`` is written after the chunk it counts, so a
build killed at any instant (SIGKILL included) leaves either a committed chunk or none. A rerun
reads the journal and continues with the first chunk it does not list.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TipsV2Error
from ..io import atomic_write, write_json

JOURNAL_VERSION = 1


class BuildLockedError(TipsV2Error, RuntimeError):
    """Another live process is building into the same directory."""


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

    # ---------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``OUT/.build/lock`` for the duration; a lock left by a dead process is taken over."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / "lock"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_pid(lock)
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise BuildLockedError(f"{self.path.parent} is being built by process {owner}; "
                                           "wait for it or stop it first") from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its owner died (e.g. killed mid-build)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            break
        else:
            raise BuildLockedError(f"could not take the build lock {lock}")
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty: a run that failed before committing anything

    # ---------------------------------------------------------------- journal
    def read_journal(self) -> dict[str, Any] | None:
        """The journal of an interrupted build, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.journal_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if data.get("version") == JOURNAL_VERSION else None

    def start(self, settings: dict[str, Any], plan: Plan, chunk_size: int) -> dict[str, Any]:
        """Discard any previous state and commit a new plan (chunk files are overwritten as they come)."""
        for stale in self.path.glob("chunk-*"):
            stale.unlink()
        chunks = -(-len(plan.add_ids) // chunk_size) if plan.add_ids else 0
        journal = {"version": JOURNAL_VERSION, "settings": settings, "plan": plan.to_dict(),
                   "chunk_size": chunk_size, "chunks": chunks, "done": 0}
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


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists but belongs to someone else
    return True


__all__ = ["BuildLockedError", "Plan", "WorkArea"]
