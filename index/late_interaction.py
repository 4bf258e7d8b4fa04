"""Image → images by late interaction (MaxSim over patches): the search path of ``PatchIndex``.

Two stages. Stage 1 shortlists images from sources that score *every* image (``candidates.py``):

* ``"pooled"``: pooled MaxSim against each image's 16 k-means centres (``pooled.py``);
* ``"centroids"``: centroid interaction from the IVF lists (IVF indexes only);
* ``"tokens"``: the nearest indexed patches of every query patch (ColBERT v1; floods when a
  patch has more near-identical copies than hits are fetched, kept for comparison and for graph
  indexes).

``"auto"`` interleaves centroids and pooled on IVF indexes, pooled and tokens on graph indexes,
and scans exactly when the FAISS index is itself a scan (``Flat``): then exhaustive MaxSim costs
no more than token search. Stage 2 re-ranks the shortlist by exact MaxSim from the stored
vectors. The shortlist length is calibrated per index on held-out images (``tuning.tune_maxsim``).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.embeddings import l2_normalize
from .base import as_matrix
from .candidates import CentroidCodes, centroid_interaction, interleave, ranked
from .errors import IndexFormatError
from .faiss_io import ivf_of
from .global_index import SearchResult, top_k
from .maxsim import approximate_candidates, maxsim_exhaustive, maxsim_scores
from .patch_geometry import ID_SHIFT, unpack_ids
from .pooled import VECTORS_PER_IMAGE, PooledVectors, collect_pooled_garbage

METHODS = ("auto", "pooled", "centroids", "tokens", "fused")
DEFAULT_CANDIDATES = 64  # shortlist for k=10 before calibration (8k, at least 64)


class LateInteraction:
    """MaxSim search and its derived data; mixed into ``PatchIndex`` (needs ``BaseIndex``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pooled: PooledVectors | None = None
        self._codes: CentroidCodes | None = None

    # ------------------------------------------------------------------ query
    def _query_tokens(self, query_patches: np.ndarray) -> np.ndarray:
        arr = np.asarray(query_patches, np.float32)
        if arr.ndim == 3:
            arr = arr.reshape(-1, arr.shape[-1])
        return l2_normalize(as_matrix(arr, self.dim, "query patches"))

    def search_maxsim(
        self,
        query_patches: np.ndarray,
        k: int = 10,
        *,
        candidates_per_token: int = 128,
        max_candidates: int | None = None,
        exhaustive: bool = False,
        nprobe: int | None = None,
        method: str = "auto",
    ) -> SearchResult:
        """Images ranked by MaxSim with one query's patch set, (m, D) or (h, w, D); result is (1, k).

        Stage 1 shortlists ``max_candidates`` images (default: the calibrated shortlist, scaled
        to ``k``) with ``method`` (see the module doc); stage 2 re-ranks them by exact MaxSim.
        ``exhaustive`` scores every image exactly (the reference the two stages are tested
        against). ``candidates_per_token`` and ``nprobe`` apply to the ``"tokens"`` source.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, not {k}")
        q = self._query_tokens(query_patches)
        if exhaustive or (method == "auto" and max_candidates is None and self._scan_is_exact()):
            return self._maxsim_exhaustive(q, k)
        limit = self.maxsim_shortlist(k) if max_candidates is None else max(1, int(max_candidates))
        cand = self.maxsim_candidates(q, limit, method=method, candidates_per_token=candidates_per_token, nprobe=nprobe)
        return self._rerank(q, cand, k)

    def maxsim_shortlist(self, k: int) -> int:
        """Images re-ranked exactly for a top-``k``: the calibrated length for k=10, scaled to ``k``."""
        calibrated = self.manifest.search_params.get("maxsim_candidates")
        if calibrated:
            return max(k, -(-int(calibrated) * k // 10))
        return max(8 * k, DEFAULT_CANDIDATES)

    def maxsim_candidates(
        self, q: np.ndarray, limit: int, *, method: str = "auto", candidates_per_token: int = 128, nprobe: int | None = None
    ) -> np.ndarray:
        """Stage 1: up to ``limit`` image ids for unit query tokens ``q`` (m, D), best first."""
        if not len(self.store):
            return np.zeros(0, np.int64)
        self._ensure_index()
        lists = []
        for source in self._sources(method):
            if source == "pooled":
                lists.append(self._pooled_vectors().search(q, limit))
            elif source == "centroids":
                codes = self._centroid_codes()
                lists.append(ranked(centroid_interaction(q, codes), codes.ids, limit))
            else:
                lists.append(self._token_candidates(q, limit, candidates_per_token, nprobe))
        return interleave(lists, limit)

    def _sources(self, method: str) -> list[str]:
        has_ivf = self._index is not None and ivf_of(self._index) is not None
        if method == "centroids" and not has_ivf:
            raise ValueError(f"method 'centroids' needs an IVF index; {self.manifest.factory!r} has no inverted lists")
        if method in ("auto", "fused"):
            return ["centroids", "pooled"] if has_ivf else ["pooled", "tokens"]
        return [method]

    def _scan_is_exact(self) -> bool:
        """Whether the FAISS index is a plain scan (then exhaustive MaxSim is as cheap as token search)."""
        self._ensure_index()
        return self._index is None or (ivf_of(self._index) is None and "HNSW" not in (self.manifest.factory or ""))

    def _token_candidates(self, q: np.ndarray, limit: int, per_token: int, nprobe: int | None) -> np.ndarray:
        token_scores, fids = self._token_search(q, per_token, nprobe)
        docs = np.where(fids >= 0, unpack_ids(np.maximum(fids, 0))[0], -1)
        return approximate_candidates(token_scores, docs, limit)[0]

    def _block(self) -> int:
        return max(1, 2**24 // (self.vectors_per_row * self.dim))

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> SearchResult:
        """Stage 2: exact MaxSim of the candidate images from the stored vectors."""
        rows = self.store.rows_of_ids(cand)
        exact = np.empty(len(cand), np.float32)
        step = self._block()
        for start in range(0, len(rows), step):
            exact[start : start + step] = maxsim_scores(q, self.store.take(rows[start : start + step]))
        return top_k(exact[None], np.asarray(cand, np.int64)[None], k)

    def _maxsim_exhaustive(self, q: np.ndarray, k: int) -> SearchResult:
        scores, ids = maxsim_exhaustive(q, self.store.iter_sorted(self._block()), k)
        return top_k(scores[None], ids[None], k)

    # ------------------------------------------------------------------ derived data
    def _pooled_vectors(self) -> PooledVectors:
        """The pooled per-image vectors, loaded or (re)built so that they match the stored images."""
        if self._pooled is None:
            self._pooled = self._load_pooled()
        if self._pooled is None or not self._pooled.matches(self.store.ids()):
            pooled = PooledVectors(self._pooled_per_image(), self.dim)
            for ids, vectors in self.store.iter_sorted(self._block()):
                pooled.add(ids, vectors)
            self._pooled = pooled
        return self._pooled

    def _pooled_per_image(self) -> int:
        entry = (self.manifest.patch or {}).get("pooled") or {}
        return int(entry.get("vectors_per_image") or min(VECTORS_PER_IMAGE, self.vectors_per_row))

    def _load_pooled(self) -> PooledVectors | None:
        entry = (self.manifest.patch or {}).get("pooled")
        if not entry:
            return None
        try:
            return PooledVectors.load(self.path, entry, self.dim)
        except (IndexFormatError, OSError) as exc:
            # Derived data: rebuilt from the stored patch vectors instead of failing the search.
            warnings.warn(f"{exc}; rebuilding the pooled vectors from the stored patches", stacklevel=3)
            return None

    def _centroid_codes(self) -> CentroidCodes:
        if self._codes is None:
            self._codes = CentroidCodes.from_ivf(ivf_of(self._index), ID_SHIFT)
        return self._codes

    # ------------------------------------------------------------------ life cycle hooks
    def _add_pooled(self, ids: np.ndarray, rows_vectors: np.ndarray) -> None:
        if self._pooled is None:
            self._pooled = self._load_pooled()
        if self._pooled is not None:
            self._pooled.add(ids, rows_vectors)

    def _forget(self, ids: np.ndarray, rows: np.ndarray) -> None:
        super()._forget(ids, rows)
        if self._pooled is not None:
            self._pooled.remove(ids)

    def _prepare_change(self) -> None:
        super()._prepare_change()
        self._codes = None

    def build(self, factory: str | None = None, *, memory_budget: int | None = None):
        self._codes = None
        return super().build(factory, memory_budget=memory_budget)

    def _write_files(self, compact: bool) -> None:
        collect_pooled_garbage(self.path)  # files of generations whose manifests are gone
        super()._write_files(compact)
        if len(self.store):
            self.manifest.patch["pooled"] = self._pooled_vectors().save(self.path)
        else:
            self.manifest.patch["pooled"] = None

    def save(self, *, compact: bool = False) -> Path:
        path = super().save(compact=compact)
        collect_pooled_garbage(self.path)
        return path

    def _tune(self) -> None:
        from . import tuning

        super()._tune()
        tuning.tune_maxsim(self)


__all__ = ["LateInteraction", "METHODS"]
