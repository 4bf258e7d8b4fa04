"""Search-depth calibration after a build (autofaiss's "tune_index", done on the index itself).

A fixed ``nprobe`` or ``efSearch`` gives very different recall on different data, so after every
build the index measures itself: a sample of its own vectors (chosen by a hash of their ids, so
the same collection always gets the same sample) is searched at increasing depths, and the
smallest depth whose recall@10 reaches the target is written to the manifest with the recall it
reached. The query's own vector is left out of both result lists (it would be found trivially).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

TARGET_RECALL = {"global": 0.95, "patch": 0.95}
SAMPLE = {"global": 200, "patch": 64}
MIN_VECTORS = 2000  # below this the defaults are fine and calibration would be noise
K = 10


def exact_neighbours(
    queries: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> np.ndarray:
    """Exact top-``k`` FAISS ids by inner product, scanning (ids, vectors) batches."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for ids, vectors in batches:
        scores = queries @ np.asarray(vectors, np.float32).T
        s = np.concatenate([best_s, scores], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.asarray(ids, np.int64), scores.shape)], axis=1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    return best_i


def self_recall(found: np.ndarray, truth: np.ndarray, own: np.ndarray, k: int = K) -> float:
    """recall@k of ``found`` against ``truth``, with each query's own id removed from both."""
    hits = []
    for f, t, o in zip(found, truth, own):
        t = [x for x in t.tolist() if x != o][:k]
        f = [x for x in f.tolist() if x != o and x >= 0][:k]
        if t:
            hits.append(len(set(f) & set(t)) / len(t))
    return float(np.mean(hits)) if hits else 1.0


def calibrate(
    name: str,
    values: list[int],
    search: Callable[[np.ndarray, int, dict], np.ndarray],
    queries: np.ndarray,
    own: np.ndarray,
    truth: np.ndarray,
    target: float,
) -> tuple[int, float]:
    """Smallest ``values[i]`` for parameter ``name`` whose recall reaches ``target`` (else the last)."""
    reached = 0.0
    for value in values:
        reached = self_recall(search(queries, K + 1, {name: value}), truth, own)
        if reached >= target:
            return value, reached
    return values[-1], reached


def depth_values(name: str, nlist: int = 0) -> list[int]:
    """Candidate depths: powers of two up to ``nlist`` (nprobe) or 16..1024 (efSearch)."""
    if name == "nprobe":
        out, v = [], 1
        while v < nlist:
            out.append(v)
            v *= 2
        return out + [nlist]
    return [16, 32, 64, 128, 256, 512, 1024]


__all__ = ["calibrate", "exact_neighbours", "self_recall", "depth_values", "TARGET_RECALL"]
