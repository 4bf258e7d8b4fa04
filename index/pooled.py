"""Pooled per-image vectors of a patch index: a few k-means centres of each image's patches.

They let the first stage of MaxSim search score *every* image cheaply (``candidates.py``):
``sum_g w_g max_j <q_g, c_j>`` over the query's pooled groups ``q_g`` and the image's centres
``c_j`` is a close, smooth stand-in for MaxSim, and it cannot be flooded by patches that have
thousands of copies (sky, walls, overlapping shots), because it never looks at individual hits.

Stored as one ``.npy`` of records ``(id int64, vectors float16 (c, D))`` sorted by id, next to
the index's other files, content-named (``pooled-<sha256[:16]>.npy``) and referenced from the
manifest (``patch.pooled``) with its size and checksum. It is derived data: a missing or
stale file (one whose ids are not the index's) is rebuilt from the stored patch vectors.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .candidates import QUERY_GROUPS, pool_images, pool_query, ranked
from .errors import IndexFormatError

VECTORS_PER_IMAGE = 16  # k-means centres kept per image (all patches if an image has fewer)
PREFIX = "pooled-"
BATCH = 64  # images pooled at once
SCORE_BLOCK = 2**22  # centre vectors scored per matrix product (bounds the temporary)


def record_dtype(per_image: int, dim: int) -> np.dtype:
    return np.dtype([("id", "<i8"), ("vectors", "<f2", (per_image, dim))])


class PooledVectors:
    """Per-image centre vectors keyed by image id; ``search`` ranks every image for a query."""

    def __init__(self, per_image: int, dim: int):
        self.per_image = int(per_image)
        self.dim = int(dim)
        self._ids = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, self.per_image, self.dim), np.float16)
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.changed = False

    def __len__(self) -> int:
        return len(self._ids) + sum(len(i) for i, _ in self._parts)

    def _consolidate(self) -> None:
        if not self._parts:
            return
        ids = np.concatenate([self._ids] + [i for i, _ in self._parts])
        vectors = np.concatenate([self._vectors] + [v for _, v in self._parts])
        order = np.argsort(ids, kind="stable")
        self._ids, self._vectors = ids[order], np.ascontiguousarray(vectors[order])
        self._parts = []

    @property
    def ids(self) -> np.ndarray:
        self._consolidate()
        return self._ids

    def add(self, ids: np.ndarray, patches: np.ndarray) -> None:
        """Pool and add images given their unit patch vectors (n, P, D); existing ids are replaced."""
        ids = np.asarray(ids, np.int64).ravel()
        if not len(ids):
            return
        self.remove(ids)
        out = np.empty((len(ids), self.per_image, self.dim), np.float16)
        for start in range(0, len(ids), BATCH):
            centres = pool_images(np.asarray(patches[start : start + BATCH], np.float32), self.per_image)
            if centres.shape[1] < self.per_image:  # fewer patches than centres: repeat the last one
                pad = np.repeat(centres[:, -1:], self.per_image - centres.shape[1], axis=1)
                centres = np.concatenate([centres, pad], axis=1)
            out[start : start + len(centres)] = centres
        self._parts.append((ids.copy(), out))
        self.changed = True

    def remove(self, ids: np.ndarray) -> None:
        self._consolidate()
        keep = ~np.isin(self._ids, np.asarray(ids, np.int64))
        if not keep.all():
            self._ids, self._vectors = self._ids[keep], self._vectors[keep]
            self.changed = True

    def matches(self, ids: np.ndarray) -> bool:
        """Whether this holds exactly the images ``ids`` (any order)."""
        mine = self.ids
        return len(mine) == len(ids) and np.array_equal(mine, np.sort(np.asarray(ids, np.int64)))

    def scores(self, query: np.ndarray, groups: int = QUERY_GROUPS) -> np.ndarray:
        """Pooled MaxSim of one query (m, D unit vectors) with every image, in ``ids`` order."""
        self._consolidate()
        centres, weights = pool_query(np.asarray(query, np.float32), groups)
        n, c = len(self._ids), self.per_image
        out = np.empty(n, np.float32)
        step = max(1, SCORE_BLOCK // max(1, c * self.dim))
        for start in range(0, n, step):
            block = np.asarray(self._vectors[start : start + step], np.float32)
            sims = block.reshape(-1, self.dim) @ centres.T
            out[start : start + len(block)] = sims.reshape(len(block), c, -1).max(axis=1) @ weights
        return out / max(float(weights.sum()), 1.0)

    def search(self, query: np.ndarray, limit: int) -> np.ndarray:
        """The ``limit`` image ids with the best pooled MaxSim, best first."""
        if not len(self):
            return np.zeros(0, np.int64)
        return ranked(self.scores(query), self.ids, limit)

    @property
    def nbytes(self) -> int:
        self._consolidate()
        return int(self._ids.nbytes + self._vectors.nbytes)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Write the records under ``directory/pooled/``; returns the manifest entry naming the file."""
        self._consolidate()
        records = np.empty(len(self._ids), record_dtype(self.per_image, self.dim))
        records["id"], records["vectors"] = self._ids, self._vectors
        digest = hashlib.sha256(np.ascontiguousarray(records).tobytes())
        digest.update(json.dumps([self.per_image, self.dim]).encode())
        name = f"{PREFIX}{digest.hexdigest()[:16]}.npy"
        path = Path(directory) / name
        if not path.exists():
            from tipsv2_sdk.io import save_npy

            save_npy(path, records)
        self.changed = False
        return {"file": name, "vectors_per_image": self.per_image, "size": path.stat().st_size,
                "digest": digest.hexdigest()}

    @classmethod
    def load(cls, directory: str | os.PathLike, entry: dict[str, Any], dim: int) -> "PooledVectors":
        """Read the file a manifest entry names, checking its size, checksum and layout."""
        from .validation import check_file, npy_header

        name = entry.get("file")
        per_image = entry.get("vectors_per_image")
        if (not isinstance(name, str) or not name.startswith(PREFIX) or "/" in name or "\\" in name
                or not isinstance(per_image, int) or per_image < 1):
            raise IndexFormatError(f"index {directory}: pooled vectors entry {entry!r} is malformed")
        path = check_file(Path(directory), name, "pooled vectors", {"sizes": {name: entry.get("size")}} if entry.get("size") else None)
        shape, dtype, _ = npy_header(path, "pooled vectors", directory)
        if dtype != record_dtype(per_image, dim) or len(shape) != 1:
            raise IndexFormatError(f"index {directory}: pooled vectors {name} hold {dtype} {shape}, not the index's layout")
        records = np.load(path, allow_pickle=False)
        digest = hashlib.sha256(np.ascontiguousarray(records).tobytes())
        digest.update(json.dumps([per_image, dim]).encode())
        if entry.get("digest") and digest.hexdigest() != entry["digest"]:
            raise IndexFormatError(f"index {directory}: pooled vectors {name} do not match their checksum")
        out = cls(per_image, dim)
        out._ids = np.asarray(records["id"], np.int64)
        out._vectors = np.ascontiguousarray(records["vectors"])
        if len(out._ids) > 1 and (np.diff(out._ids) <= 0).any():
            raise IndexFormatError(f"index {directory}: pooled vectors {name} are not sorted by id")
        return out


def referenced_pooled(directory: str | os.PathLike) -> set[str]:
    """Pooled files named by any manifest in ``directory`` (the published one and staged generations)."""
    keep = set()
    for manifest in Path(directory).glob("manifest*.json"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        entry = (data.get("patch") or {}).get("pooled") if isinstance(data, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            keep.add(entry["file"])
    return keep


def collect_pooled_garbage(directory: str | os.PathLike, also_keep: set[str] = frozenset()) -> None:
    """Delete pooled files no manifest of ``directory`` names (left by older generations)."""
    folder = Path(directory)
    if not folder.is_dir():
        return
    keep = referenced_pooled(directory) | set(also_keep)
    for entry in folder.iterdir():
        if entry.name.startswith(PREFIX) and entry.is_file() and entry.name not in keep and entry.suffix in (".npy", ".tmp"):
            entry.unlink(missing_ok=True)


__all__ = ["PooledVectors", "VECTORS_PER_IMAGE", "collect_pooled_garbage", "referenced_pooled"]
