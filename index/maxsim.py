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


__all__ = ["maxsim_scores", "maxsim_exhaustive", "approximate_candidates"]
