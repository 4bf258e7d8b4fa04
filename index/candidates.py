"""Candidate images for two-stage MaxSim that hold up when most patches look alike.

Stage 1 of MaxSim search must shortlist the images that exact MaxSim (stage 2) would rank first.
Fetching the nearest indexed patches of every query patch (ColBERT v1) breaks down when a patch
has more near-identical copies in the collection than hits are fetched: background shared by
every photo (sky, walls, floors) or many overlapping shots of one place. The hit list is then an
arbitrary sample of the copies, and every image outside it is credited with the list's lowest
score, which is about as high as the best: the shortlist is noise.

Two sources that do not have this failure, fused:

* **Centroid interaction** over *all* images (PLAID/WARP-style): every indexed patch sits in one
  IVF list, so the lists tell, for each image, which coarse centroids its patches fall in. An image
  is scored by ``sum_i w_i * max_{c in image} <q_i, c>`` over the query's top-``t`` centroids per
  token (missing centroids score the ``t+1``-th best). A patch that has thousands of copies costs
  nothing extra, and an image that lacks a query's content scores low instead of getting the
  benefit of the doubt. Query patches are first pooled into a few weighted groups (k-means on the
  query's own patches), so a query made mostly of sky does not spend its budget on sky; a group
  that matches every image adds the same amount to every score, which is an IDF-like weighting
  for free.
* **Pooled per-image vectors**: the mean of each image's patches, searched exactly. It ranks
  overlapping near-duplicates by how much they overlap, where centroid presence ties.

The two ranked lists are interleaved (round robin, duplicates dropped) and the first ``n`` go to
exact MaxSim. ``benchmarks/index.py`` measures each source alone and fused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tipsv2_sdk.embeddings import l2_normalize

CENTROIDS_PER_TOKEN = 8  # t: centroids per pooled query token that are looked up
QUERY_GROUPS = 64  # pooled query tokens (at most; never more than the query has)
KMEANS_ITERATIONS = 8


def pool_query(tokens: np.ndarray, groups: int = QUERY_GROUPS, iterations: int = KMEANS_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Group a query's unit token vectors (m, D) by spherical k-means → (centres (g, D), weights (g,)).

    Deterministic (farthest-point initialisation from the first token). Weights are group sizes;
    ``sum(weights) == m``.
    """
    tokens = np.asarray(tokens, np.float32)
    m = len(tokens)
    if m <= groups:
        return tokens.copy(), np.ones(m, np.float32)
    picks = [0]
    best = tokens @ tokens[0]
    for _ in range(groups - 1):
        nxt = int(np.argmin(best))
        picks.append(nxt)
        best = np.maximum(best, tokens @ tokens[nxt])
    centres = tokens[picks].copy()
    for _ in range(iterations):
        assign = np.argmax(tokens @ centres.T, axis=1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, tokens)
        filled = np.linalg.norm(sums, axis=1) > 0
        centres[filled] = l2_normalize(sums[filled])
    assign = np.argmax(tokens @ centres.T, axis=1)
    weights = np.bincount(assign, minlength=len(centres)).astype(np.float32)
    keep = weights > 0
    return centres[keep], weights[keep]


def pool_images(patches: np.ndarray, vectors: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Summarise each image's unit patch vectors (B, P, D) by ``vectors`` spherical k-means
    centres → (B, vectors, D) unit vectors (all P patches when ``vectors >= P``).

    Batched over images; deterministic (farthest-point initialisation from the first patch).
    """
    x = np.asarray(patches, np.float32)
    b, p, d = x.shape
    if vectors >= p:
        return x.copy()
    centres = np.empty((b, vectors, d), np.float32)
    centres[:, 0] = x[:, 0]
    best = np.einsum("bpd,bd->bp", x, x[:, 0])
    rows = np.arange(b)
    for j in range(1, vectors):
        nxt = np.argmin(best, axis=1)
        centres[:, j] = x[rows, nxt]
        best = np.maximum(best, np.einsum("bpd,bd->bp", x, centres[:, j]))
    eye = np.eye(vectors, dtype=np.float32)
    for _ in range(iterations):
        assign = np.argmax(np.einsum("bpd,bcd->bpc", x, centres), axis=2)
        sums = np.einsum("bpc,bpd->bcd", eye[assign], x)
        norms = np.linalg.norm(sums, axis=2, keepdims=True)
        centres = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centres)
    return centres


@dataclass
class CentroidCodes:
    """Which images have a patch in which IVF list: a centroid → image-rows table (CSR).

    ``indptr`` (K+1,) and ``rows`` (nnz,) int32: the image rows (positions in ``ids``) with at
    least one patch in list ``c`` are ``rows[indptr[c]:indptr[c+1]]``, each once.
    ``centroids`` (K, D): the lists' unit-normalised centroids. ``ids`` (N,): image ids by row.
    """

    centroids: np.ndarray
    indptr: np.ndarray
    rows: np.ndarray
    ids: np.ndarray

    @classmethod
    def from_ivf(cls, ivf, id_shift: int) -> "CentroidCodes":
        """Read the lists of a FAISS IVF index whose ids pack ``image_id << id_shift | patch``."""
        import faiss

        nlist = ivf.nlist
        centroids = l2_normalize(ivf.quantizer.reconstruct_n(0, nlist))
        invlists = ivf.invlists
        per_list = []
        for c in range(nlist):
            size = invlists.list_size(c)
            if size == 0:
                per_list.append(np.zeros(0, np.int64))
                continue
            ptr = invlists.get_ids(c)
            ids = faiss.rev_swig_ptr(ptr, size).copy()
            invlists.release_ids(c, ptr)
            per_list.append(np.unique(ids >> id_shift))
        flat = np.concatenate(per_list) if per_list else np.zeros(0, np.int64)
        image_ids = np.unique(flat)
        rows = np.searchsorted(image_ids, flat).astype(np.int32)
        indptr = np.zeros(nlist + 1, np.int64)
        indptr[1:] = np.cumsum([len(p) for p in per_list])
        return cls(centroids, indptr, rows, image_ids)

    @property
    def nbytes(self) -> int:
        return int(self.centroids.nbytes + self.indptr.nbytes + self.rows.nbytes + self.ids.nbytes)


def centroid_interaction(
    query: np.ndarray,
    codes: CentroidCodes,
    *,
    per_token: int = CENTROIDS_PER_TOKEN,
    groups: int = QUERY_GROUPS,
) -> np.ndarray:
    """Approximate MaxSim of one query (m, D unit vectors) with every image in ``codes`` → (N,).

    Only the ranking is meaningful (scores are shifted by a constant per query).
    """
    centres, weights = pool_query(query, groups)
    k = codes.centroids.shape[0]
    t = max(1, min(per_token, k - 1))
    sims = centres @ codes.centroids.T  # (g, K)
    if k > t + 1:
        top = np.argpartition(-sims, t, axis=1)[:, : t + 1]
    else:
        top = np.broadcast_to(np.arange(k), (len(centres), k)).copy()
    top_s = np.take_along_axis(sims, top, 1)
    order = np.argsort(-top_s, axis=1, kind="stable")
    top, top_s = np.take_along_axis(top, order, 1), np.take_along_axis(top_s, order, 1)
    floor = top_s[:, -1:] if top.shape[1] > t else np.zeros((len(centres), 1), np.float32)
    gains = np.maximum(top_s[:, :t] - floor, 0.0) * weights[:, None]
    n = len(codes.ids)
    best = np.zeros((len(centres), n), np.float32)  # best weighted gain per (query group, image)
    lengths = codes.indptr[1:] - codes.indptr[:-1]
    for j in range(min(t, top.shape[1])):
        cols = top[:, j]
        sizes = lengths[cols]
        if not sizes.any():
            continue
        group = np.repeat(np.arange(len(centres)), sizes)
        starts = np.repeat(codes.indptr[cols] - np.cumsum(sizes) + sizes, sizes)
        image_rows = codes.rows[starts + np.arange(int(sizes.sum()))]
        gain = np.repeat(gains[:, j], sizes)
        # (group, image) pairs are distinct for a fixed j: plain fancy assignment is safe
        best[group, image_rows] = np.maximum(best[group, image_rows], gain)
    return best.sum(axis=0)


def ranked(scores: np.ndarray, ids: np.ndarray, limit: int) -> np.ndarray:
    """The ``limit`` ids with the highest scores, best first (ties by id)."""
    limit = min(limit, len(ids))
    if limit <= 0:
        return np.zeros(0, np.int64)
    if limit < len(ids):
        part = np.argpartition(-scores, limit - 1)[:limit]
    else:
        part = np.arange(len(ids))
    order = np.lexsort((ids[part], -scores[part]))
    return np.asarray(ids[part][order], np.int64)


def interleave(lists: list[np.ndarray], limit: int) -> np.ndarray:
    """Round-robin merge of ranked id lists, duplicates dropped, at most ``limit`` ids."""
    out: list[int] = []
    seen: set[int] = set()
    longest = max((len(x) for x in lists), default=0)
    for rank in range(longest):
        for ids in lists:
            if rank < len(ids):
                i = int(ids[rank])
                if i not in seen:
                    seen.add(i)
                    out.append(i)
                    if len(out) >= limit:
                        return np.asarray(out, np.int64)
    return np.asarray(out, np.int64)


__all__ = ["CentroidCodes", "centroid_interaction", "pool_query", "pool_images", "ranked", "interleave"]
