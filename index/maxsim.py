"""Late interaction (ColBERT-style MaxSim) between a set of query vectors and sets of patch vectors.

``MaxSim(q, d) = mean_i max_j <q_i, d_j>`` over unit vectors: every query token is matched with
its most similar patch of the document image. The mean (instead of ColBERT's sum) keeps scores in
[-1, 1] and comparable across queries of different sizes; the ranking is the same.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Cap on the float32 patch block scored at once (elements), so memory stays bounded (~256 MB).
BLOCK_ELEMENTS = 2**26


def maxsim_scores(query: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """MaxSim of one query (m, D) against ``docs`` (n, P, D) → scores (n,)."""
    query = np.asarray(query, dtype=np.float32)
    docs = np.asarray(docs)
    n, p, d = docs.shape
    if query.ndim != 2 or query.shape[1] != d:
        raise ValueError(f"query has shape {query.shape}, docs hold {d}-d vectors")
    if n == 0 or len(query) == 0:
        return np.zeros(n, np.float32)
    out = np.empty(n, np.float32)
    step = max(1, BLOCK_ELEMENTS // max(1, p * max(d, len(query))))
    for start in range(0, n, step):
        block = np.asarray(docs[start : start + step], dtype=np.float32)
        sims = block.reshape(-1, d) @ query.T  # (b*P, m)
        out[start : start + len(block)] = sims.reshape(len(block), p, -1).max(axis=1).mean(axis=1)
    return out


def maxsim_exhaustive(
    query: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by MaxSim over every document: ``batches`` yields (ids, docs (b, P, D)).

    Returns (scores (k,), ids (k,)), best first, ties broken by id.
    """
    all_s, all_i = [], []
    for ids, docs in batches:
        scores = maxsim_scores(query, docs)
        keep = np.argsort(-scores, kind="stable")[:k]
        all_s.append(scores[keep])
        all_i.append(np.asarray(ids, np.int64)[keep])
    if not all_s:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    s, i = np.concatenate(all_s), np.concatenate(all_i)
    order = np.lexsort((i, -s))[:k]
    return s[order], i[order]


def maxsim_exhaustive_many(
    queries: list[np.ndarray], batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by MaxSim of several queries in one pass over the documents.

    ``queries``: unit token sets (m_i, D); ``batches`` as for ``maxsim_exhaustive``. Returns
    (scores (Q, k), ids (Q, k)), best first, padded with -inf / -1, ties broken by id.
    """
    nq = len(queries)
    sizes = np.array([len(q) for q in queries], np.int64)
    tokens = np.concatenate([np.asarray(q, np.float32) for q in queries]) if nq else np.zeros((0, 0), np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    for ids, docs in batches:
        docs = np.asarray(docs)
        n, p, d = docs.shape
        step = max(1, BLOCK_ELEMENTS // max(1, p * max(d, len(tokens))))
        for start in range(0, n, step):
            block = np.asarray(docs[start : start + step], np.float32)
            per_token = (block.reshape(-1, d) @ tokens.T).reshape(len(block), p, -1).max(axis=1)  # (b, M)
            scores = (np.add.reduceat(per_token, starts, axis=1) / sizes).T.astype(np.float32)  # (Q, b)
            block_ids = np.broadcast_to(np.asarray(ids[start : start + step], np.int64), scores.shape)
            s = np.concatenate([best_s, scores], axis=1)
            i = np.concatenate([best_i, block_ids], axis=1)
            keep = np.lexsort((i, -s), axis=1)[:, :k] if s.shape[1] else np.zeros((nq, 0), np.int64)
            best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    pad = k - best_s.shape[1]
    if pad > 0:
        best_s = np.concatenate([best_s, np.full((nq, pad), -np.inf, np.float32)], axis=1)
        best_i = np.concatenate([best_i, np.full((nq, pad), -1, np.int64)], axis=1)
    return best_s, best_i


def approximate_candidates(
    token_scores: np.ndarray, token_docs: np.ndarray, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rank candidate documents from per-token ANN hits (stage 1 of two-stage MaxSim).

    ``token_scores`` / ``token_docs``: (m, c) scores and document ids of each query token's
    nearest patches (doc id -1 = no hit). A document missing from a token's list is credited with
    that token's lowest retrieved score (an upper bound of its true contribution), so documents
    are not penalised for falling just outside a short list.

    Returns (doc ids, approximate MaxSim), best first, at most ``limit`` of them.
    """
    m = token_scores.shape[0]
    valid = token_docs >= 0
    if not valid.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    floor = np.where(valid, token_scores, np.inf).min(axis=1)
    floor = np.where(np.isfinite(floor), floor, 0.0).astype(np.float32)
    tok = np.broadcast_to(np.arange(m)[:, None], token_docs.shape)[valid]
    docs, scores = token_docs[valid], token_scores[valid]
    uniq, doc_idx = np.unique(docs, return_inverse=True)
    # best score per (doc, token): sort by key then score descending, keep the first of each key
    key = doc_idx.astype(np.int64) * m + tok
    order = np.lexsort((-scores, key))
    key, scores, tok, doc_idx = key[order], scores[order], tok[order], doc_idx[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    gain = scores[first] - floor[tok[first]]
    approx = floor.sum() + np.bincount(doc_idx[first], weights=gain, minlength=len(uniq))
    best = np.lexsort((uniq, -approx))
    if limit is not None:
        best = best[:limit]
    return uniq[best], (approx[best] / m).astype(np.float32)


__all__ = ["maxsim_scores", "maxsim_exhaustive", "maxsim_exhaustive_many", "approximate_candidates"]
