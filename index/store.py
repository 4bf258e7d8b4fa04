"""Stored vectors, ids and records: the source of truth every FAISS index is built from.

Rows live in immutable, append-only *segments* (``vectors-<seg>.npy`` memory-mapped on read,
``ids-<seg>.npy``, ``records-<seg>.jsonl``). Removing or replacing a row only tombstones it
(``dead-<gen>.npy``); rows are compacted away when tombstones pass a quarter of the store. A save
therefore writes only what is new, and never touches a file a reader may have mapped.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.io import atomic_write, load_npy as _load_own, save_npy
from .errors import DuplicateIdError, IndexFormatError
from .validation import check_file, load_npy

COMPACT_FRACTION = 0.25
MAX_STORED_ID = 2**62
MAX_RECORD_LINE = 1 << 20  # bytes; a record is an id, a path and a little metadata


def printable(path: str) -> str:
    """A file name for messages: bytes that are not UTF-8 shown as ``\\xNN`` instead of failing to print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace") if isinstance(path, str) else repr(path)


def _read_records(directory: Path, name: str, ids: np.ndarray, files: dict[str, Any]) -> list[dict[str, Any]]:
    """The checked lines of a ``records-*.jsonl`` file: one object per id, with that id."""
    path = check_file(directory, name, "records", files)
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                if len(line) > MAX_RECORD_LINE or len(out) >= len(ids):
                    raise ValueError("more or longer lines than the segment has rows")
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"line {len(out) + 1} is not an object")
                if rec.get("id", int(ids[len(out)])) != int(ids[len(out)]):
                    raise ValueError(f"line {len(out) + 1} has id {rec.get('id')!r}, the ids file {int(ids[len(out)])}")
                if rec.get("path") is not None and not isinstance(rec["path"], str):
                    raise ValueError(f"line {len(out) + 1} has a path that is not a string")
                if rec.get("meta") is not None and not isinstance(rec["meta"], dict):
                    raise ValueError(f"line {len(out) + 1} has metadata that is not an object")
                out.append(rec)
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexFormatError(f"index {directory}: records {name} are unreadable: {exc}") from None
    if len(out) != len(ids):
        raise IndexFormatError(f"index {directory}: records {name} hold {len(out)} lines for {len(ids)} rows")
    return out


@dataclass
class _Segment:
    name: str | None  # None while only in memory
    vectors: np.ndarray  # (n, *row_shape), stored dtype
    ids: np.ndarray  # (n,) int64


def id_hash(ids: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mix (splitmix64) of int64 ids: deterministic, order-free sampling keys."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class VectorStore:
    """Rows of (id, vector, path, metadata). Ids and paths are unique among live rows."""

    def __init__(self, row_shape: tuple[int, ...], dtype: str = "float16"):
        if dtype not in ("float16", "float32"):
            raise ValueError(f"stored dtype must be 'float16' or 'float32', not {dtype!r}")
        self.row_shape = tuple(int(s) for s in row_shape)
        self.dtype = dtype
        self._segments: list[_Segment] = []
        self._offsets: list[int] = [0]
        self._paths: list[str | None] = []
        self._meta: list[dict | None] = []
        self._alive = np.zeros(0, dtype=bool)
        self._id_row: dict[int, int] = {}
        self._path_row: dict[str, int] = {}
        self._pending: list[int] = []  # indices of segments not yet written

    # ------------------------------------------------------------------ sizes and lookups
    def __len__(self) -> int:
        return len(self._id_row)

    @property
    def total_rows(self) -> int:
        return self._offsets[-1]

    @property
    def dead_rows(self) -> int:
        return self.total_rows - len(self)

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._alive)

    def all_ids(self) -> np.ndarray:
        """Ids of every row (live or dead), in row order."""
        if not self._segments:
            return np.zeros(0, np.int64)
        return np.concatenate([s.ids for s in self._segments])

    def ids(self) -> np.ndarray:
        """Live ids in row order."""
        return self.all_ids()[self._alive]

    def row_of_id(self, id_: int) -> int:
        return self._id_row.get(int(id_), -1)

    def row_of_path(self, path: str) -> int:
        return self._path_row.get(os.fspath(path), -1)

    def rows_of_ids(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return np.array([self._id_row.get(int(i), -1) for i in np.asarray(ids).ravel()], dtype=np.int64)

    def record(self, row: int) -> dict[str, Any]:
        seg, local = self._locate(row)
        return {"id": int(self._segments[seg].ids[local]), "path": self._paths[row], "meta": self._meta[row] or {}}

    # ------------------------------------------------------------------ reading vectors
    def _locate(self, row: int) -> tuple[int, int]:
        seg = int(np.searchsorted(self._offsets, row, side="right")) - 1
        return seg, row - self._offsets[seg]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of ``rows`` (any order), shape (len(rows), *row_shape)."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        out = np.empty((len(rows), *self.row_shape), np.float32)
        if len(rows) == 0:
            return out
        seg_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for seg in np.unique(seg_of):
            pick = np.flatnonzero(seg_of == seg)
            local = rows[pick] - self._offsets[seg]
            order = np.argsort(local, kind="stable")  # sorted reads are kinder to a memory map
            out[pick[order]] = self._segments[seg].vectors[local[order]]
        return out

    def take_items(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """float32 ``vectors[row, item]`` for rows of shape (P, D): one sub-vector per pair."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        items = np.asarray(items, dtype=np.int64).ravel()
        out = np.empty((len(rows), *self.row_shape[1:]), np.float32)
        if len(rows) == 0:
            return out
        seg_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for seg in np.unique(seg_of):
            pick = np.flatnonzero(seg_of == seg)
            out[pick] = self._segments[seg].vectors[rows[pick] - self._offsets[seg], items[pick]]
        return out

    def sorted_rows(self) -> np.ndarray:
        """Live rows ordered by ascending id (the canonical build order)."""
        rows = self.live_rows()
        ids = self.all_ids()[rows]
        return rows[np.argsort(ids, kind="stable")]

    def iter_sorted(self, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, float32 vectors) of live rows in ascending id order, ``batch`` rows at a time."""
        rows = self.sorted_rows()
        all_ids = self.all_ids()
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            yield all_ids[chunk], self.take(chunk)

    def sample_rows(self, n: int) -> np.ndarray:
        """``n`` live rows chosen by a hash of their ids, sorted by id.

        Depends only on the set of ids, not on insertion order or sharding, so a merged index
        trains on exactly the sample a single build would use.
        """
        rows = self.live_rows()
        ids = self.all_ids()[rows]
        if n < len(rows):
            keep = np.argsort(id_hash(ids), kind="stable")[:n]
            rows, ids = rows[keep], ids[keep]
        return rows[np.argsort(ids, kind="stable")]

    # ------------------------------------------------------------------ mutation
    def add(
        self,
        vectors: np.ndarray,
        ids: np.ndarray,
        paths: Sequence[str | None],
        metadata: Sequence[dict | None],
    ) -> np.ndarray:
        """Append rows; ids and paths must not belong to live rows (the caller tombstones first)."""
        vectors = np.asarray(vectors)
        if vectors.shape[1:] != self.row_shape:
            raise ValueError(f"vectors have shape {vectors.shape[1:]}, the store holds {self.row_shape}")
        ids = np.asarray(ids, dtype=np.int64)
        for i, p in zip(ids.tolist(), paths):
            if i in self._id_row:
                raise DuplicateIdError(f"id {i} is already indexed")
            if p is not None and p in self._path_row:
                raise DuplicateIdError(f"path {p!r} is already indexed")
        start = self.total_rows
        self._segments.append(_Segment(None, vectors.astype(self.dtype), ids.copy()))
        self._offsets.append(start + len(ids))
        self._pending.append(len(self._segments) - 1)
        self._paths.extend(paths)
        self._meta.extend(metadata)
        self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
        rows = np.arange(start, start + len(ids), dtype=np.int64)
        for i, p, r in zip(ids.tolist(), paths, rows.tolist()):
            self._id_row[i] = r
            if p is not None:
                self._path_row[p] = r
        return rows

    def kill(self, rows: np.ndarray) -> None:
        """Tombstone live rows."""
        for row in np.asarray(rows, dtype=np.int64).ravel().tolist():
            if not self._alive[row]:
                continue
            self._alive[row] = False
            seg, local = self._locate(row)
            del self._id_row[int(self._segments[seg].ids[local])]
            path = self._paths[row]
            if path is not None and self._path_row.get(path) == row:
                del self._path_row[path]

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, directory: Path, entry: dict[str, Any], row_shape, dtype: str, mmap: bool = True) -> "VectorStore":
        """Open the segments listed in a manifest's ``files`` table, checking every file first.

        Sizes, ``.npy`` headers, recorded checksums, record lines, tombstones and id uniqueness
        are checked before anything is mapped or indexed (``IndexFormatError`` naming the file).
        """
        directory = Path(directory)
        store = cls(row_shape, dtype)
        segments = entry.get("segments", [])
        if not isinstance(segments, list):
            raise IndexFormatError(f"index {directory}: the manifest's segments are not a list")
        for seg in segments:
            name, rows = seg["name"], int(seg["rows"])
            what = f"segment {name}"
            vectors = load_npy(directory, f"vectors-{name}.npy", f"{what} vectors", dtype=dtype,
                               shape=(rows, *store.row_shape), mmap=mmap, files=entry)
            ids = load_npy(directory, f"ids-{name}.npy", f"{what} ids", dtype=np.int64, shape=(rows,), files=entry)
            records = _read_records(directory, f"records-{name}.jsonl", ids, entry)
            if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= MAX_STORED_ID):
                raise IndexFormatError(f"index {directory}: {what} holds ids outside [0, 2^62)")
            store._segments.append(_Segment(name, vectors, np.array(ids, dtype=np.int64)))
            store._offsets.append(store._offsets[-1] + len(ids))
            store._paths.extend(r.get("path") for r in records)
            store._meta.extend(r.get("meta") or None for r in records)
        store._alive = np.ones(store.total_rows, bool)
        if entry.get("dead"):
            dead = load_npy(directory, entry["dead"], "tombstones", dtype=np.int64, shape=(None,), files=entry)
            if len(dead) and (int(dead.min()) < 0 or int(dead.max()) >= store.total_rows):
                raise IndexFormatError(f"index {directory}: tombstones {entry['dead']} name rows outside "
                                       f"0..{store.total_rows - 1}")
            store._alive[dead] = False
        all_ids = store.all_ids()
        for row in store.live_rows().tolist():
            id_ = int(all_ids[row])
            if id_ in store._id_row:
                raise IndexFormatError(f"index {directory}: id {id_} is stored twice")
            store._id_row[id_] = row
            path = store._paths[row]
            if path is not None:
                if path in store._path_row:
                    raise IndexFormatError(f"index {directory}: path {printable(path)} is stored twice")
                store._path_row[path] = row
        return store

    def needs_compaction(self) -> bool:
        return self.dead_rows > 0 and self.dead_rows >= COMPACT_FRACTION * max(self.total_rows, 1)

    def save(self, directory: Path, gen: int, compact: bool = False) -> dict[str, Any]:
        """Write new rows (and tombstones); returns the manifest ``files`` entry for the store."""
        if compact or self.needs_compaction():
            self._compact(directory, gen)
        for k, seg_index in enumerate(self._pending):
            seg = self._segments[seg_index]
            name = f"{gen:06d}-{k:03d}"
            lo, hi = self._offsets[seg_index], self._offsets[seg_index + 1]
            save_npy(directory / f"ids-{name}.npy", seg.ids)
            self._write_records(directory / f"records-{name}.jsonl", range(lo, hi), seg.ids)
            save_npy(directory / f"vectors-{name}.npy", seg.vectors)
            seg.name = name
            seg.vectors = _load_own(directory / f"vectors-{name}.npy", mmap=True)  # free the RAM copy
        self._pending = []
        entry: dict[str, Any] = {
            "segments": [{"name": s.name, "rows": len(s.ids)} for s in self._segments],
            "dead": None,
        }
        if self.dead_rows:
            entry["dead"] = f"dead-{gen:06d}.npy"
            save_npy(directory / entry["dead"], np.flatnonzero(~self._alive).astype(np.int64))
        return entry

    def _write_records(self, path: Path, rows: range, ids: np.ndarray) -> None:
        # ASCII JSON: a file name that is not valid UTF-8 (kept as surrogate escapes, like os.fsdecode)
        # is written as \udcXX escapes and read back as the very same str.
        with atomic_write(path, "w") as handle:
            for row, id_ in zip(rows, ids.tolist()):
                rec = {"id": id_, "path": self._paths[row], "meta": self._meta[row] or {}}
                handle.write(json.dumps(rec, sort_keys=True, ensure_ascii=True) + "\n")

    def _compact(self, directory: Path, gen: int) -> None:
        """Replace all segments by one holding only live rows, in row order (streamed to disk)."""
        rows = self.live_rows()
        ids = self.all_ids()[rows]
        name = f"{gen:06d}-c"
        path = directory / f"vectors-{name}.npy"
        with atomic_write(path, "wb") as handle:
            header_shape = (len(rows), *self.row_shape)
            np.lib.format.write_array_header_1_0(
                handle, {"descr": np.dtype(self.dtype).str, "fortran_order": False, "shape": header_shape}
            )
            for start in range(0, len(rows), 16384):
                handle.write(self.take(rows[start : start + 16384]).astype(self.dtype).tobytes())
        save_npy(directory / f"ids-{name}.npy", ids)
        self._write_records(directory / f"records-{name}.jsonl", rows.tolist(), ids)
        paths = [self._paths[r] for r in rows.tolist()]
        meta = [self._meta[r] for r in rows.tolist()]
        vectors = _load_own(path, mmap=True) if len(ids) else np.zeros((0, *self.row_shape), self.dtype)
        self._segments = [_Segment(name, vectors, ids)]
        self._offsets = [0, len(ids)]
        self._paths, self._meta = paths, meta
        self._alive = np.ones(len(ids), bool)
        self._pending = []
        self._id_row = {int(i): r for r, i in enumerate(ids.tolist())}
        self._path_row = {p: r for r, p in enumerate(paths) if p is not None}

    def copy_live_to(self, directory: Path, prefix: str) -> list[dict[str, Any]]:
        """Write this (saved) store's live rows as new segments in ``directory``; returns their entries.

        Segments without tombstones are copied file by file; the others are filtered while
        streaming, so memory use stays small whatever the store's size.
        """
        if self._pending:
            raise ValueError("copy_live_to needs a saved store")
        entries = []
        for k, seg in enumerate(self._segments):
            lo, hi = self._offsets[k], self._offsets[k + 1]
            alive = self._alive[lo:hi]
            if not alive.any():
                continue
            name = f"{prefix}-{k:04d}"
            rows = np.arange(lo, hi)[alive]
            ids = seg.ids[alive]
            path = directory / f"vectors-{name}.npy"
            with atomic_write(path, "wb") as handle:
                np.lib.format.write_array_header_1_0(
                    handle, {"descr": np.dtype(self.dtype).str, "fortran_order": False, "shape": (len(rows), *self.row_shape)}
                )
                local = rows - lo
                step = max(1, 2**26 // max(1, int(np.prod(self.row_shape))))
                for start in range(0, len(local), step):
                    handle.write(np.ascontiguousarray(seg.vectors[local[start : start + step]], dtype=self.dtype).tobytes())
            save_npy(directory / f"ids-{name}.npy", ids)
            self._write_records(directory / f"records-{name}.jsonl", rows.tolist(), ids)
            entries.append({"name": name, "rows": int(len(rows))})
        return entries

    def file_names(self) -> set[str]:
        """Every file the saved store refers to."""
        names = set()
        for seg in self._segments:
            if seg.name is not None:
                names |= {f"vectors-{seg.name}.npy", f"ids-{seg.name}.npy", f"records-{seg.name}.jsonl"}
        return names


__all__ = ["VectorStore", "id_hash", "printable", "COMPACT_FRACTION"]
