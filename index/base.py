"""What the global and the patch index share: store, manifest, FAISS life cycle (saving: ``index_files``).

FAISS ids are derived from the user ids (equal for the global index, packed with the patch
position for the patch index), so they survive saves, compaction and merges. The stored vectors
are the source of truth: the FAISS index can always be rebuilt from them, and is, when an index
type cannot remove entries (HNSW) or when the automatic choice no longer fits the size.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.embeddings import l2_normalize
from .errors import DuplicateIdError, IndexFormatError, IndexMismatchError, UnknownIdError
from .factory import IndexChoice, choose_factory, describe_factory
from .faiss_io import (
    deserialize,
    faiss_module,
    ivf_of,
    lists_to_memory,
    read_index,
    serialize,
    set_search_params,
)
from .gpu import GpuSearcher, wants_gpu
from .index_files import IndexFiles
from .manifest import MANIFEST_NAME, IndexManifest, check_model, read_manifest
from . import tuning
from .store import VectorStore
from .validation import check_faiss_index, check_file

MAX_ID = 2**62
ADD_BATCH = 65536


def as_matrix(x: Any, dim: int, what: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 (n, dim) copy of ``x`` (1-d input is one row)."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise IndexMismatchError(f"{what} have shape {tuple(arr.shape)}; the index holds {dim}-d vectors")
    return np.ascontiguousarray(arr)


class BaseIndex(IndexFiles):
    """Shared machinery; use ``GlobalIndex`` or ``PatchIndex``."""

    TYPE = ""
    PURPOSE = "global"

    def __init__(self, path: Path, manifest: IndexManifest, store: VectorStore, use_gpu: bool | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.store = store
        self._index = None  # canonical CPU faiss index
        self._stale = True  # the faiss index must be (re)built before use
        self._index_changed = False  # needs writing at the next save
        self._trained: bytes | None = None  # serialized empty trained index (IVF / PQ / OPQ)
        self._trained_changed = False
        self._ivfdata: str | None = manifest.files.get("ivfdata")  # name of on-disk inverted lists
        self._use_gpu = use_gpu
        self._gpu = GpuSearcher()

    # ------------------------------------------------------------------ subclass hooks
    def _faiss_vectors(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(float32 vectors, faiss ids) to put in FAISS for stored rows ``vectors`` of user ``ids``."""
        raise NotImplementedError

    def _faiss_rows(self, ids: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._faiss_vectors(ids, self.store.take(rows))

    def _faiss_ids(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def vectors_per_row(self) -> int:
        return 1

    # ------------------------------------------------------------------ construction
    def _use_template(self, template: str | os.PathLike | None) -> None:
        """Reuse the trained (empty) index of another index directory, so that shards share training."""
        if template is None:
            return
        other = read_manifest(template)
        if other.dim != self.manifest.dim or other.type != self.manifest.type:
            raise IndexMismatchError(
                f"template {template} holds {other.type} {other.dim}-d vectors, not {self.manifest.type} {self.manifest.dim}-d"
            )
        for field in ("model_name", "config_hash"):
            mine, theirs = getattr(self.manifest, field), getattr(other, field)
            if mine is not None and theirs is not None and mine != theirs:
                raise IndexMismatchError(f"template {template} was built for {field}={theirs!r}, this index for {mine!r}")
        name = other.files.get("trained")
        if not name:
            raise IndexFormatError(f"template {template} has no trained index (train it or build an IVF/PQ index)")
        self._trained = check_file(template, name, "trained index", other.files).read_bytes()
        self._trained_changed = True
        self.manifest.factory = other.factory
        self.manifest.factory_auto = False
        self.manifest.choice = dict(other.choice)
        self.manifest.search_params = dict(other.search_params)

    @classmethod
    def _open_parts(cls, path, model, kind, dim, mmap, manifest_name: str = MANIFEST_NAME):
        path = Path(path)
        manifest = read_manifest(path, manifest_name)
        if manifest.type != cls.TYPE:
            raise IndexMismatchError(f"{path} is a {manifest.type} index, not a {cls.TYPE} index")
        check_model(manifest, model, kind=kind, dim=dim, path=path)
        return path, manifest

    def _load_files(self, mmap: bool) -> None:
        # Every file is checked (inside the directory, recorded size and checksum) before FAISS sees it.
        files = self.manifest.files
        if files.get("trained"):
            self._trained = check_file(self.path, files["trained"], "trained index", files).read_bytes()
        if files.get("index"):
            path = check_file(self.path, files["index"], "FAISS index", files)
            if files.get("ivfdata"):
                check_file(self.path, files["ivfdata"], "inverted lists", files)
            try:
                index = read_index(path, on_disk=bool(files.get("ivfdata")))
            except (RuntimeError, MemoryError, ValueError) as exc:
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise IndexFormatError(f"index {self.path}: cannot read {files['index']}: {reason}") from None
            check_faiss_index(index, self.path, files["index"], dim=self.manifest.dim, ivfdata=files.get("ivfdata"))
            self._index = index
            self._stale = False
        if len(self.store) != self.manifest.count:  # e.g. tombstones lost: removed images would come back
            raise IndexFormatError(f"index {self.path}: {len(self.store)} live rows, the manifest says {self.manifest.count}")
        if self._index is not None and self._index.ntotal != self.manifest.num_vectors:
            raise IndexFormatError(f"index {self.path}: FAISS holds {self._index.ntotal} vectors, manifest says {self.manifest.num_vectors}")

    @classmethod
    def exists(cls, path: str | os.PathLike) -> bool:
        """Whether ``path`` holds an index of this type."""
        try:
            return read_manifest(path).type == cls.TYPE
        except (IndexFormatError, FileNotFoundError):
            return False

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def factory(self) -> str | None:
        return self.manifest.factory

    def __len__(self) -> int:
        return len(self.store)

    def ids(self) -> np.ndarray:
        """Live ids, in storage order."""
        return self.store.ids()

    def id_of(self, paths: Sequence[str] | str) -> np.ndarray:
        """Ids of ``paths`` (-1 where not indexed)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        rows = [self.store.row_of_path(os.fspath(p)) for p in paths]
        all_ids = self.store.all_ids()
        return np.array([all_ids[r] if r >= 0 else -1 for r in rows], dtype=np.int64)

    def contains(self, path: str | os.PathLike) -> bool:
        return self.store.row_of_path(os.fspath(path)) >= 0

    def records(self, ids: Sequence[int] | np.ndarray) -> list[dict | None]:
        """``{"id", "path", "meta"}`` for each id (``None`` for unknown ids, e.g. -1 padding)."""
        out = []
        for i in np.asarray(ids).ravel().tolist():
            row = self.store.row_of_id(i)
            out.append(self.store.record(row) if row >= 0 else None)
        return out

    def _rows_or_raise(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = self.store.rows_of_ids(ids)
        if (rows < 0).any():
            missing = np.asarray(ids).ravel()[rows < 0]
            raise UnknownIdError(f"id {int(missing[0])} is not in index {self.path} ({int((rows < 0).sum())} unknown)")
        return rows

    # ------------------------------------------------------------------ mutation
    def _add_rows(self, vectors: np.ndarray, paths, ids, metadata) -> np.ndarray:
        """Insert prepared store rows; replaces rows whose path or id is already indexed."""
        n = len(vectors)
        paths = [None] * n if paths is None else [None if p is None else os.fspath(p) for p in paths]
        metadata = [None] * n if metadata is None else [dict(m) if m else None for m in metadata]
        if len(paths) != n or len(metadata) != n:
            raise ValueError(f"got {n} vectors but {len(paths)} paths and {len(metadata)} metadata entries")
        named = [p for p in paths if p is not None]
        if len(set(named)) != len(named):
            dup = next(p for p in named if named.count(p) > 1)
            raise DuplicateIdError(f"path {dup!r} appears twice in one add()")
        path_rows = np.array([self.store.row_of_path(p) if p is not None else -1 for p in paths], dtype=np.int64)
        all_ids = self.store.all_ids()
        if ids is None:
            out = np.empty(n, np.int64)
            fresh = path_rows < 0
            out[~fresh] = all_ids[path_rows[~fresh]]
            out[fresh] = self.manifest.next_id + np.arange(int(fresh.sum()))
        else:
            out = np.asarray(ids, dtype=np.int64).ravel()
            if len(out) != n:
                raise ValueError(f"got {n} vectors but {len(out)} ids")
            uniq, counts = np.unique(out, return_counts=True)
            if (counts > 1).any():
                raise DuplicateIdError(f"id {int(uniq[np.argmax(counts > 1)])} appears twice in one add()")
            if n and (out.min() < 0 or out.max() >= self._max_id()):
                raise ValueError(f"ids must lie in [0, {self._max_id()}), got {int(out.min())}..{int(out.max())}")
        id_rows = self.store.rows_of_ids(out)
        for k in np.flatnonzero(id_rows >= 0).tolist():
            owner = self.store.record(int(id_rows[k]))["path"]
            if paths[k] is not None and owner is not None and owner != paths[k]:
                raise DuplicateIdError(f"id {int(out[k])} already belongs to {owner!r}, cannot give it to {paths[k]!r}")
        old_rows = np.unique(np.concatenate([path_rows[path_rows >= 0], id_rows[id_rows >= 0]]))
        if len(old_rows):
            self._forget(all_ids[old_rows], old_rows)
        rows = self.store.add(vectors, out, paths, metadata)
        if n:
            self.manifest.next_id = max(self.manifest.next_id, int(out.max()) + 1)
        if self._index is not None and not self._stale and n:
            self._prepare_change()
            for start in range(0, n, ADD_BATCH):
                x, fids = self._faiss_rows(out[start : start + ADD_BATCH], rows[start : start + ADD_BATCH])
                self._index.add_with_ids(x, fids)
        return out

    def _forget(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Tombstone rows and take their vectors out of FAISS (or mark FAISS for a rebuild)."""
        self.store.kill(rows)
        if self._index is None or self._stale:
            return
        self._prepare_change()
        faiss = faiss_module()
        fids = self._faiss_ids(np.asarray(ids, np.int64))
        try:
            self._index.remove_ids(faiss.IDSelectorBatch(fids))
        except RuntimeError:
            self._stale = True  # HNSW cannot remove: rebuilt from the stored vectors before next use

    def _prepare_change(self) -> None:
        lists_to_memory(self._index)  # on-disk lists are never modified in place
        self._index_changed = True
        self._gpu.invalidate()

    def remove(
        self, ids: Sequence[int] | None = None, paths: Sequence[str] | None = None, *, missing_ok: bool = False
    ) -> int:
        """Remove vectors by id and/or path; returns how many were removed.

        Unknown ids or paths raise ``UnknownIdError`` unless ``missing_ok``.
        """
        rows = []
        if ids is not None:
            got = self.store.rows_of_ids(np.atleast_1d(np.asarray(ids, dtype=np.int64)))
            if (got < 0).any() and not missing_ok:
                bad = np.atleast_1d(np.asarray(ids))[got < 0][0]
                raise UnknownIdError(f"id {int(bad)} is not in index {self.path}")
            rows.extend(got[got >= 0].tolist())
        if paths is not None:
            for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
                row = self.store.row_of_path(os.fspath(p))
                if row < 0 and not missing_ok:
                    raise UnknownIdError(f"path {os.fspath(p)!r} is not in index {self.path}")
                if row >= 0:
                    rows.append(row)
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows):
            self._forget(self.store.all_ids()[rows], rows)
        return int(len(rows))

    def _resolve_existing(self, ids, paths) -> tuple[np.ndarray, list]:
        """Ids and paths of rows that must already exist (for ``update``)."""
        if (ids is None) == (paths is None):
            raise ValueError("update() needs exactly one of ids= or paths=")
        if paths is not None:
            found = self.id_of(paths)
            if (found < 0).any():
                raise UnknownIdError(f"path {os.fspath(list(paths)[int(np.argmax(found < 0))])!r} is not in index {self.path}")
            return found, [os.fspath(p) for p in paths]
        rows = self._rows_or_raise(ids)
        return np.asarray(ids, np.int64).ravel(), [self.store.record(int(r))["path"] for r in rows]

    # ------------------------------------------------------------------ building
    def _choice(self, factory: str | None, memory_budget: int | None) -> IndexChoice:
        n = len(self.store) * self.vectors_per_row
        if factory is not None and factory != "auto":
            self.manifest.factory_auto = False
            self.manifest.factory = factory
        elif factory == "auto":
            self.manifest.factory_auto = True
        if memory_budget is not None:
            self.manifest.memory_budget = int(memory_budget)
        if self.manifest.factory_auto:
            return choose_factory(n, self.dim, memory_budget=self.manifest.memory_budget, purpose=self.PURPOSE, pq=self._pq())
        return describe_factory(self.manifest.factory, self.dim, n)

    def _pq(self) -> int | None:
        return None

    def train(self, vectors: np.ndarray | None = None, *, factory: str | None = None) -> IndexChoice:
        """Train the (empty) FAISS index on ``vectors`` (default: a sample of the stored vectors).

        The trained state is saved as ``trained-<hash>.faiss`` and can seed other indexes via
        ``create(..., template=this_dir)``; indexes that share it merge by inverted lists.
        """
        choice = self._choice(factory, None)
        index = self._new_faiss(choice.factory)
        if index.is_trained:
            raise ValueError(f"factory {choice.factory!r} needs no training")
        x = self._training_sample(choice.train_size) if vectors is None else as_matrix(vectors, self.dim)
        self._train(index, x)
        self._trained = serialize(index)
        self._trained_changed = True
        self.manifest.factory, self.manifest.factory_auto = choice.factory, False
        self._set_choice(choice)
        self._stale = True
        return choice

    def _new_faiss(self, factory: str):
        faiss = faiss_module()
        try:
            index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"invalid FAISS factory string {factory!r}: {str(exc).strip().splitlines()[-1]}") from None
        ivf = faiss.downcast_index(ivf_of(index)) if ivf_of(index) is not None else faiss.downcast_index(index)
        if hasattr(ivf, "do_polysemous_training"):
            # Polysemous codes only help Hamming-filtered search, which is not used; training them
            # costs 20-30x the PQ training itself.
            ivf.do_polysemous_training = False
        return index

    def _train(self, index, x: np.ndarray) -> None:
        try:
            index.train(l2_normalize(x))
        except RuntimeError as exc:
            raise ValueError(f"cannot train {self.manifest.factory or 'the index'} on {len(x)} vectors: {str(exc).strip().splitlines()[-1]}") from None

    def _training_sample(self, size: int) -> np.ndarray:
        per = self.vectors_per_row
        rows = self.store.sample_rows(-(-max(size, 1) // per))
        ids = self.store.all_ids()[rows]
        x, _ = self._faiss_rows(ids, rows)
        return x[:size] if size else x

    def _set_choice(self, choice: IndexChoice) -> None:
        self.manifest.choice = {k: v for k, v in choice.to_dict().items() if k != "search_params"}
        self.manifest.search_params = dict(choice.search_params)

    def build(self, factory: str | None = None, *, memory_budget: int | None = None) -> IndexChoice:
        """(Re)build the FAISS index from the stored vectors; ``factory`` overrides the automatic choice.

        Vectors are added in ascending id order and training uses a sample fixed by the ids, so
        the result does not depend on how the rows were added or sharded.
        """
        if self._trained is not None and factory is None and not self.manifest.factory_auto:
            index = deserialize(self._trained)
            choice = describe_factory(self.manifest.factory, self.dim, len(self.store) * self.vectors_per_row)
            choice.search_params = dict(self.manifest.search_params) or choice.search_params
        else:
            choice = self._choice(factory, memory_budget)
            index = self._new_faiss(choice.factory)
            self._trained = None
            if not index.is_trained:
                self._train(index, self._training_sample(choice.train_size))
                self._trained = serialize(index)
                self._trained_changed = True
        if ivf_of(index) is None:
            index = faiss_module().IndexIDMap2(index)
        for ids, vectors in self._iter_sorted():
            x, fids = self._faiss_vectors(ids, vectors)
            index.add_with_ids(x, fids)
        self._index = index
        self._stale = False
        self._index_changed = True
        self._gpu.invalidate()
        self.manifest.factory = choice.factory
        self._set_choice(choice)
        self.manifest.built_count = len(self.store)
        self._tune()
        return choice

    # ------------------------------------------------------------------ calibration
    def _calibration_queries(self) -> tuple[np.ndarray, np.ndarray]:
        """(query vectors, their own FAISS ids): a hash-chosen sample of stored vectors."""
        rows = self.store.sample_rows(tuning.SAMPLE[self.PURPOSE])
        return self._faiss_rows(self.store.all_ids()[rows], rows)

    def _calibration_search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, FAISS ids) of the normal search path at the depth given in ``params``."""
        raise NotImplementedError

    def _tune(self) -> None:
        tuning.tune(self)

    def _iter_faiss(self):
        for ids, vectors in self._iter_sorted():
            yield self._faiss_vectors(ids, vectors)

    def _iter_sorted(self):
        batch = max(1, ADD_BATCH // self.vectors_per_row)
        yield from self.store.iter_sorted(batch)

    def _ensure_index(self) -> None:
        if len(self.store) and (self._index is None or self._stale):
            self.build()

    def _outgrown(self) -> bool:
        """An automatic index whose collection doubled and for which another type is now chosen."""
        m = self.manifest
        if not m.factory_auto or self._index is None or m.built_count <= 0 or len(self.store) < 2 * m.built_count:
            return False
        n = len(self.store) * self.vectors_per_row
        wanted = choose_factory(n, self.dim, memory_budget=m.memory_budget, purpose=self.PURPOSE, pq=self._pq())
        return wanted.factory != m.factory

    def _searchable(self, params: dict[str, Any]):
        self._ensure_index()
        if self._index is None:
            return None
        set_search_params(self._index, params)
        return self._gpu.searchable(self._index, wants_gpu(self._use_gpu), params)

    def info(self) -> dict[str, Any]:
        """Manifest summary plus location and size on disk."""
        out = self.manifest.summary()
        out["path"] = str(self.path)
        out["disk_bytes"] = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file()) if self.path.is_dir() else 0
        out["index_bytes"] = self.manifest.choice.get("memory_bytes")
        return out

    def _max_id(self) -> int:
        return MAX_ID


__all__ = ["BaseIndex", "as_matrix"]
