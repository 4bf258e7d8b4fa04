"""``PatchIndex``: every patch embedding of every image, for "where" questions and late interaction.

FAISS ids pack the image id and the patch position (``patch_geometry.py``), so a hit names its
image and cell with no side table. Queries:

* text → regions (``search_regions``) and text → images by their best patch (``search_images``);
* image → images by MaxSim over patches (``search_maxsim``, ``late_interaction.py``): stage 1
  shortlists images from sources that score every image (pooled per-image vectors, centroid
  interaction over the IVF lists), stage 2 re-ranks them by exact MaxSim from the stored vectors;
* a box on a query image → images (``search_box_images``) or regions (``search_box_regions``);
* ``heatmap``: a query's similarity to every patch of one image, optionally upsampled.

Compression: ``pooling=2`` averages 2×2 patches before indexing (4× fewer vectors) and ``pq=m``
stores m-byte product-quantised codes in FAISS; the manifest records both.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.embeddings import l2_normalize
from .base import BaseIndex, as_matrix
from .errors import IndexMismatchError
from .global_index import SearchResult, top_k
from .late_interaction import LateInteraction
from .manifest import new_manifest
from .patch_geometry import (
    ID_SHIFT,
    MAX_IMAGE_ID,
    as_pair,
    box_to_cells,
    pack_ids,
    pool_patches,
    unpack_ids,
    upsample_bilinear,
)
from . import tuning
from .store import VectorStore

@dataclass
class RegionHit:
    """One patch that matched a query: its image, cell (in the indexed grid) and cosine score."""

    image_id: int
    row: int
    col: int
    score: float
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PatchIndex(LateInteraction, BaseIndex):
    """A FAISS index of every (optionally pooled) patch vector plus per-image stored patches."""

    TYPE = "patch"
    PURPOSE = "patch"

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        model: Any = None,
        dim: int | None = None,
        grid: tuple[int, int] | None = None,
        model_name: str | None = None,
        config_hash: str | None = None,
        pooling: int | tuple[int, int] = 1,
        pq: int | None = None,
        factory: str | None = None,
        memory_budget: int | None = None,
        dtype: str = "float16",
        template: str | os.PathLike | None = None,
        overwrite: bool = False,
        use_gpu: bool | None = None,
    ) -> "PatchIndex":
        """A new, empty patch index bound to ``path`` (nothing is written until ``save``).

        Args:
            grid: the (h, w) patch grid of the embeddings that will be added (default: the
                model's image size / patch size).
            pooling: average ``pooling`` × ``pooling`` patches (or a (ph, pw) pair) before indexing.
            pq: store ``pq``-byte PQ codes in FAISS (``IVF..,PQ{pq}x8``); ``None`` = automatic.
            Other arguments as for ``GlobalIndex.create``.
        """
        if grid is None and model is not None:
            side = model.image_size // model.patch_size
            grid = (side, side)
        if grid is None:
            raise ValueError("the patch grid is unknown: pass model= or grid=(h, w)")
        source = as_pair(grid, "grid")
        ph, pw = as_pair(pooling, "pooling")
        if source[0] % ph or source[1] % pw:
            raise ValueError(f"a {source[0]}x{source[1]} patch grid cannot be pooled by {ph}x{pw}")
        indexed = (source[0] // ph, source[1] // pw)
        if indexed[0] * indexed[1] > 2**ID_SHIFT:
            raise ValueError(f"{indexed[0]}x{indexed[1]} patches exceed the {2**ID_SHIFT} positions an id can hold")
        manifest = new_manifest(cls.TYPE, path, model=model, dim=dim, kind="patch", model_name=model_name,
                                cfg_hash=config_hash, factory=factory, memory_budget=memory_budget, dtype=dtype,
                                overwrite=overwrite)
        manifest.patch = {
            "grid": list(indexed), "source_grid": list(source), "pooling": [ph, pw],
            "pq": None if pq is None else int(pq), "id_shift": ID_SHIFT, "pooled": None,
        }
        row_shape = (indexed[0] * indexed[1], manifest.dim)
        index = cls(Path(path), manifest, VectorStore(row_shape, dtype), use_gpu=use_gpu)
        index._use_template(template)
        return index

    @classmethod
    def open(
        cls, path: str | os.PathLike, *, model: Any = None, dim: int | None = None, mmap: bool = True,
        use_gpu: bool | None = None, manifest: str = "manifest.json",
    ) -> "PatchIndex":
        """Open a saved patch index; with ``model``/``dim`` it must match (``IndexMismatchError``).

        ``manifest``: which manifest of the directory to open (as for ``GlobalIndex.open``).
        """
        path, manifest = cls._open_parts(path, model, None, dim, mmap, manifest)
        gh, gw = manifest.patch["grid"]
        store = VectorStore.load(path, manifest.files, (gh * gw, manifest.dim), manifest.dtype, mmap=mmap)
        index = cls(path, manifest, store, use_gpu=use_gpu)
        index._load_files(mmap)
        return index

    # ------------------------------------------------------------------ layout
    @property
    def grid(self) -> tuple[int, int]:
        """The indexed (pooled) patch grid (h, w)."""
        return tuple(self.manifest.patch["grid"])  # type: ignore[return-value]

    @property
    def source_grid(self) -> tuple[int, int]:
        return tuple(self.manifest.patch["source_grid"])  # type: ignore[return-value]

    @property
    def pooling(self) -> tuple[int, int]:
        return tuple(self.manifest.patch["pooling"])  # type: ignore[return-value]

    @property
    def vectors_per_row(self) -> int:
        gh, gw = self.grid
        return gh * gw

    def _pq(self) -> int | None:
        return self.manifest.patch.get("pq")

    def _max_id(self) -> int:
        return MAX_IMAGE_ID

    def _faiss_vectors(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.vectors_per_row
        x = np.ascontiguousarray(np.asarray(vectors, np.float32).reshape(-1, self.dim))
        return x, pack_ids(np.repeat(np.asarray(ids, np.int64), p), np.tile(np.arange(p), len(ids)))

    def _faiss_ids(self, ids: np.ndarray) -> np.ndarray:
        p = self.vectors_per_row
        return pack_ids(np.repeat(np.asarray(ids, np.int64), p), np.tile(np.arange(p), len(ids)))

    # ------------------------------------------------------------------ mutation
    def _prepare(self, patches: np.ndarray) -> np.ndarray:
        x = np.asarray(patches, np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:3]) != self.source_grid or x.shape[3] != self.dim:
            gh, gw = self.source_grid
            raise IndexMismatchError(f"patches have shape {tuple(x.shape)}; the index takes (N, {gh}, {gw}, {self.dim})")
        pooled = pool_patches(x, self.pooling)
        return pooled.reshape(len(x), -1, self.dim)

    def add(
        self,
        patches: np.ndarray,
        paths: Sequence[str | os.PathLike] | None = None,
        *,
        ids: Sequence[int] | np.ndarray | None = None,
        metadata: Sequence[dict | None] | None = None,
    ) -> np.ndarray:
        """Add (or replace) images given their patch grids (N, h, w, D); returns their image ids.

        Id and path semantics are those of ``GlobalIndex.add``.
        """
        rows = self._prepare(patches)
        out = self._add_rows(rows, paths, ids, metadata)
        self._add_pooled(out, rows)
        return out

    def update(self, patches: np.ndarray, *, ids=None, paths=None, metadata=None) -> np.ndarray:
        """Replace the patches of images that are already indexed (``UnknownIdError`` otherwise)."""
        found, found_paths = self._resolve_existing(ids, paths)
        if metadata is None:
            metadata = [self.store.record(self.store.row_of_id(i))["meta"] for i in found.tolist()]
        return self.add(patches, found_paths, ids=found, metadata=metadata)

    def patch_vectors(self, image_id: int) -> np.ndarray:
        """Stored (pooled) patch vectors of one image as float32 (gh, gw, D)."""
        rows = self._rows_or_raise([image_id])
        return self.store.take(rows)[0].reshape(*self.grid, self.dim)

    # ------------------------------------------------------------------ token search
    def _token_search(self, queries: np.ndarray, k: int, nprobe: int | None, overrides: dict | None = None):
        params = dict(self.manifest.search_params)
        if nprobe is not None:
            params["nprobe"] = nprobe
        params.update(overrides or {})
        index = self._searchable(params)
        if index is None or index.ntotal == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return index.search(queries, min(k, int(index.ntotal)))

    def _exact_patch_scores(self, q: np.ndarray, fids: np.ndarray) -> np.ndarray:
        """Exact cosine of each query row with the stored patches ``fids`` (Q, c) (-inf for -1)."""
        out = np.full(fids.shape, -np.inf, np.float32)
        valid = fids >= 0
        image_ids, pos = unpack_ids(fids[valid])
        rows = self.store.rows_of_ids(image_ids)
        vecs = self.store.take_items(rows, pos)
        qrow = np.broadcast_to(np.arange(len(q))[:, None], fids.shape)[valid]
        out[valid] = np.einsum("nd,nd->n", vecs, q[qrow])
        return out

    def _region_top(self, q: np.ndarray, k: int, candidates: int | None, nprobe: int | None, overrides=None):
        # Compressed codes only shortlist: ``rerank * k`` hits are re-scored from the stored vectors.
        rerank = max(1, int((overrides or {}).get("rerank") or self.manifest.search_params.get("rerank", 1)))
        _, fids = self._token_search(q, max(k, candidates or rerank * k), nprobe, overrides)
        return top_k(self._exact_patch_scores(q, fids), fids, k)

    def _calibration_queries(self) -> tuple[np.ndarray, np.ndarray]:
        """One stored patch (at a hash-chosen position) from each of a sample of images, and its FAISS id."""
        from .store import id_hash

        rows = self.store.sample_rows(tuning.SAMPLE["patch"])
        ids = self.store.all_ids()[rows]
        positions = (id_hash(ids) % np.uint64(self.vectors_per_row)).astype(np.int64)
        return self.store.take_items(rows, positions), pack_ids(ids, positions)

    def _owner(self, fids: np.ndarray) -> np.ndarray:
        # a held-out patch excludes its whole image from the results, not just itself
        return np.where(np.asarray(fids) >= 0, unpack_ids(np.maximum(fids, 0))[0], -1)

    def _calibration_search(self, queries: np.ndarray, k: int, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        res = self._region_top(queries, k, None, None, params)
        return res.scores, res.ids

    def search_regions(
        self, queries: np.ndarray, k: int = 10, *, nprobe: int | None = None, candidates: int | None = None
    ) -> list[list[RegionHit]]:
        """Best-matching patches for each query vector (Q, D): exact cosine, best first.

        ``candidates`` patches per query (default ``rerank * k`` from the manifest: 16k for PQ codes,
        k for exact indexes) are fetched from FAISS and re-scored exactly.
        """
        q = l2_normalize(as_matrix(queries, self.dim, "queries"))
        res = self._region_top(q, k, candidates, nprobe)
        gw = self.grid[1]
        out = []
        for scores, ids in zip(res.scores, res.ids):
            hits = []
            for s, fid in zip(scores.tolist(), ids.tolist()):
                if fid < 0:
                    continue
                image_id, pos = (int(v) for v in unpack_ids(np.int64(fid)))
                path = self.store.record(self.store.row_of_id(image_id))["path"]
                hits.append(RegionHit(image_id, pos // gw, pos % gw, float(s), path))
            out.append(hits)
        return out

    def _best_patch(self, q: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
        """Exact max over each image's patches of <q, patch> (one query)."""
        rows = self.store.rows_of_ids(image_ids)
        out = np.empty(len(rows), np.float32)
        step = max(1, 2**24 // (self.vectors_per_row * self.dim))
        for start in range(0, len(rows), step):
            block = self.store.take(rows[start : start + step])
            out[start : start + len(block)] = (block @ q).max(axis=1)
        return out

    def search_images(
        self, queries: np.ndarray, k: int = 10, *, candidates: int = 256, nprobe: int | None = None
    ) -> SearchResult:
        """Images ranked by their best-matching patch (exact), for each query vector (Q, D).

        The ``candidates`` nearest patches per query decide which images are scored.
        """
        q = l2_normalize(as_matrix(queries, self.dim, "queries"))
        _, fids = self._token_search(q, max(k, candidates), nprobe)
        width = max(1, fids.shape[1])
        scores = np.full((len(q), width), -np.inf, np.float32)
        ids = np.full((len(q), width), -1, np.int64)
        for row in range(len(q)):
            image_ids = np.unique(unpack_ids(fids[row][fids[row] >= 0])[0])
            scores[row, : len(image_ids)] = self._best_patch(q[row], image_ids)
            ids[row, : len(image_ids)] = image_ids
        return top_k(scores, ids, k)

    # ------------------------------------------------------------------ boxes and heatmaps
    def _box_tokens(self, query_patches: np.ndarray, box, image_size) -> np.ndarray:
        grid = np.asarray(query_patches, np.float32)
        if grid.ndim != 3 or grid.shape[2] != self.dim:
            raise IndexMismatchError(f"query patches have shape {grid.shape}; expected (h, w, {self.dim})")
        r0, r1, c0, c1 = box_to_cells(box, image_size, grid.shape[:2])
        return grid[r0:r1, c0:c1].reshape(-1, self.dim)

    def search_box_images(
        self, query_patches: np.ndarray, box: Sequence[float], image_size: tuple[int, int], k: int = 10, **kwargs: Any
    ) -> SearchResult:
        """Images ranked by MaxSim with the patches a box covers on a query image.

        ``query_patches`` (h, w, D) of the query image; ``box`` (x0, y0, x1, y1) in its pixels;
        ``image_size`` its (W, H). Keyword arguments go to ``search_maxsim``.
        """
        return self.search_maxsim(self._box_tokens(query_patches, box, image_size), k, **kwargs)

    def search_box_regions(
        self, query_patches: np.ndarray, box: Sequence[float], image_size: tuple[int, int], k: int = 10, **kwargs: Any
    ) -> list[RegionHit]:
        """Patches most similar to the mean of the patches a box covers on a query image."""
        tokens = self._box_tokens(query_patches, box, image_size)
        return self.search_regions(l2_normalize(tokens.mean(axis=0)), k, **kwargs)[0]

    def heatmap(self, query: np.ndarray, image_id: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """Cosine of ``query`` (D,) with each patch of an image: (gh, gw), or (H, W) for ``size=(H, W)``."""
        q = l2_normalize(as_matrix(query, self.dim, "query"))[0]
        sims = self.patch_vectors(image_id) @ q
        return sims if size is None else upsample_bilinear(sims, size)


__all__ = [
    "PatchIndex",
    "RegionHit",
    "ID_SHIFT",
    "pack_ids",
    "unpack_ids",
    "box_to_cells",
    "pool_patches",
    "upsample_bilinear",
]
