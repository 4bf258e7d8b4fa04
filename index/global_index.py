"""``GlobalIndex``: one vector per image (CLS1, CLS2 or both), searched by cosine similarity.

    idx = GlobalIndex.create("out/idx", model=model, kind="cls1")
    idx.add(emb.cls1, paths=files)            # ids 0, 1, 2, ... (or ids=... given by the caller)
    idx.save()                                # chooses and builds the FAISS index, writes atomically
    idx = GlobalIndex.open("out/idx", model=model)
    res = idx.search(model.encode_texts(["a red car"]), k=10)
    idx.records(res.ids[0])                   # [{"id", "path", "meta"}, ...]
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.embeddings import l2_normalize
from .base import BaseIndex, as_matrix
from .errors import IndexMismatchError
from .manifest import GLOBAL_KINDS, new_manifest
from .store import VectorStore


@dataclass
class SearchResult:
    """Top-k results of a batch of queries, best first.

    ``scores`` (Q, k) float32 cosine similarities (``-inf`` past the last hit);
    ``ids`` (Q, k) int64 user ids (``-1`` past the last hit).
    """

    scores: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def hits(self, q: int = 0) -> list[tuple[int, float]]:
        """(id, score) pairs of query ``q`` without padding."""
        keep = self.ids[q] >= 0
        return list(zip(self.ids[q][keep].tolist(), self.scores[q][keep].tolist()))


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> SearchResult:
    """Sort each row of (scores, ids) descending and keep ``k`` (pads with -inf / -1)."""
    q = scores.shape[0]
    out_s = np.full((q, k), -np.inf, np.float32)
    out_i = np.full((q, k), -1, np.int64)
    for row in range(q):
        valid = ids[row] >= 0
        s, i = scores[row][valid], ids[row][valid]
        order = np.lexsort((i, -s))[:k]  # ties broken by id, so results are reproducible
        out_s[row, : len(order)] = s[order]
        out_i[row, : len(order)] = i[order]
    return SearchResult(out_s, out_i)


class GlobalIndex(BaseIndex):
    """A FAISS index of one unit vector per image plus the stored vectors and records."""

    TYPE = "global"
    PURPOSE = "global"

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        model: Any = None,
        dim: int | None = None,
        kind: str = "cls1",
        model_name: str | None = None,
        config_hash: str | None = None,
        factory: str | None = None,
        memory_budget: int | None = None,
        dtype: str = "float16",
        template: str | os.PathLike | None = None,
        overwrite: bool = False,
        use_gpu: bool | None = None,
    ) -> "GlobalIndex":
        """A new, empty index bound to directory ``path`` (nothing is written until ``save``).

        Args:
            model: the ``TipsV2`` model the vectors come from (gives name, config hash and width);
                or pass ``dim`` (and optionally ``model_name`` / ``config_hash``) instead.
            kind: ``cls1`` (text→image default), ``cls2``, ``concat`` or ``mean_patch``.
            factory: a FAISS factory string, or ``None`` / ``"auto"`` to choose by size at build time.
            memory_budget: RAM in bytes the automatic choice may use (default 2 GiB).
            dtype: stored vectors ``float16`` (default) or ``float32``.
            template: an index directory whose trained FAISS state is reused (sharded builds).
            overwrite: replace an existing index at ``path`` when this one is saved.
        """
        if kind not in GLOBAL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(GLOBAL_KINDS)}, not {kind!r}")
        manifest = new_manifest(cls.TYPE, path, model=model, dim=dim, kind=kind, model_name=model_name,
                                cfg_hash=config_hash, factory=factory, memory_budget=memory_budget, dtype=dtype,
                                overwrite=overwrite)
        index = cls(Path(path), manifest, VectorStore((manifest.dim,), dtype), use_gpu=use_gpu)
        index._use_template(template)
        return index

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        model: Any = None,
        kind: str | None = None,
        dim: int | None = None,
        mmap: bool = True,
        use_gpu: bool | None = None,
        manifest: str = "manifest.json",
    ) -> "GlobalIndex":
        """Open a saved index; with ``model``/``kind``/``dim`` it must match (``IndexMismatchError``).

        ``manifest``: which manifest of the directory to open (a build directory's published
        generation names its own; ``tipsv2_sdk.index.snapshot.open_snapshot`` picks it).
        """
        path, manifest = cls._open_parts(path, model, kind, dim, mmap, manifest)
        store = VectorStore.load(path, manifest.files, (manifest.dim,), manifest.dtype, mmap=mmap)
        index = cls(path, manifest, store, use_gpu=use_gpu)
        index._load_files(mmap)
        return index

    # ------------------------------------------------------------------ faiss mapping
    def _faiss_vectors(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, np.int64)

    def _faiss_ids(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(ids, np.int64)

    def _calibration_search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        res = self.search(queries, k, nprobe=params.get("nprobe"), ef_search=params.get("efSearch"), rerank=params.get("rerank"))
        return res.scores, res.ids

    # ------------------------------------------------------------------ mutation
    def add(
        self,
        vectors: np.ndarray,
        paths: Sequence[str | os.PathLike] | None = None,
        *,
        ids: Sequence[int] | np.ndarray | None = None,
        metadata: Sequence[dict | None] | None = None,
    ) -> np.ndarray:
        """Add (or replace) vectors; returns their int64 ids.

        Vectors are L2-normalised. A path that is already indexed is replaced, not duplicated:
        it keeps its id unless ``ids`` gives another. Without ``ids``, new paths get consecutive
        ids after the largest ever used; with ``ids`` (e.g. positions in a global file list, as a
        sharded build needs), the given ids are used and an id owned by another path is refused.
        """
        x = l2_normalize(as_matrix(vectors, self.dim))
        return self._add_rows(x, paths, ids, metadata)

    def update(
        self,
        vectors: np.ndarray,
        *,
        ids: Sequence[int] | None = None,
        paths: Sequence[str] | None = None,
        metadata: Sequence[dict | None] | None = None,
    ) -> np.ndarray:
        """Replace the vectors of ids or paths that are already indexed (``UnknownIdError`` otherwise)."""
        found, found_paths = self._resolve_existing(ids, paths)
        if metadata is None:
            metadata = [self.store.record(self.store.row_of_id(i))["meta"] for i in found.tolist()]
        return self.add(vectors, found_paths, ids=found, metadata=metadata)

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of ``ids`` as float32 (n, D)."""
        return self.store.take(self._rows_or_raise(ids))

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rerank: int | None = None,
    ) -> SearchResult:
        """Top-``k`` ids and cosine scores for each query vector (Q, D) or (D,).

        ``nprobe`` / ``ef_search`` override the IVF / HNSW search depth; ``rerank`` fetches
        ``rerank * k`` candidates and re-scores them exactly from the stored vectors (the default
        comes from the manifest: 1 for exact and HNSW indexes, more for PQ codes).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        q = l2_normalize(as_matrix(queries, self.dim, "queries"))
        params = dict(self.manifest.search_params)
        if nprobe is not None:
            params["nprobe"] = nprobe
        if ef_search is not None:
            params["efSearch"] = ef_search
        factor = max(1, int(rerank if rerank is not None else params.get("rerank", 1)))
        index = self._searchable(params)
        if index is None or index.ntotal == 0:
            return top_k(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), k)
        fetch = min(k * factor, int(index.ntotal))
        scores, ids = index.search(q, fetch)
        if factor > 1:
            scores = self._rescore(q, ids)
        return top_k(scores, ids, k)

    def _rescore(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact cosine scores of candidate ids from the stored vectors (-inf for padding)."""
        out = np.full(ids.shape, -np.inf, np.float32)
        flat = ids.ravel()
        valid = flat >= 0
        uniq, inverse = np.unique(flat[valid], return_inverse=True)
        rows = self.store.rows_of_ids(uniq)
        if (rows < 0).any():  # cannot happen unless FAISS and the store disagree
            raise IndexMismatchError(f"index {self.path}: FAISS returned ids that are not stored; rebuild it")
        vecs = self.store.take(rows)
        cand = np.full(flat.shape, -1, np.int64)
        cand[valid] = inverse
        cand = cand.reshape(ids.shape)
        for row in range(len(q)):
            ok = cand[row] >= 0
            out[row, ok] = vecs[cand[row, ok]] @ q[row]
        return out


__all__ = ["GlobalIndex", "SearchResult", "top_k"]
