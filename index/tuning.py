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
# Patch vectors of one object are near-duplicates, so the exact top-10 patches are often a tie
# among dozens; a patch hit within this cosine of the true 10th best counts as found.
TIE_TOLERANCE = {"global": 0.0, "patch": 0.01}
# Calibration aims this much above the target: 200 sampled queries leave about ±0.01 of noise.
MARGIN = 0.01
# A stored vector is easier for a graph search to reach than an unseen query (its own links lead
# to it; measured: efSearch 16 gave 0.97 on own vectors but 0.94 on unseen queries), so a graph
# gets one doubling of efSearch beyond the depth that reached the target.
SAMPLE = {"global": 200, "patch": 64}
MIN_VECTORS = 2000  # below this the defaults are fine and calibration would be noise
K = 10

def exact_neighbours(
    queries: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, FAISS ids) by inner product, scanning (ids, vectors) batches."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for ids, vectors in batches:
        scores = queries @ np.asarray(vectors, np.float32).T
        s = np.concatenate([best_s, scores], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(np.asarray(ids, np.int64), scores.shape)], axis=1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, keep, 1), np.take_along_axis(i, keep, 1)
    return best_s, best_i

def self_recall(
    found: np.ndarray,
    truth: np.ndarray,
    own: np.ndarray,
    k: int = K,
    *,
    found_scores: np.ndarray | None = None,
    truth_scores: np.ndarray | None = None,
    tolerance: float = 0.0,
) -> float:
    """recall@k of ``found`` against ``truth``, with each query's own id removed from both.

    With ``tolerance`` > 0, a found item whose exact score is within ``tolerance`` of the true
    k-th best also counts (ties among near-duplicates are not misses).
    """
    hits = []
    for row, (f, t, o) in enumerate(zip(found, truth, own)):
        keep_t = [j for j, x in enumerate(t.tolist()) if x != o][:k]
        keep_f = [j for j, x in enumerate(f.tolist()) if x != o and x >= 0][:k]
        if not keep_t:
            continue
        true_set = {int(t[j]) for j in keep_t}
        if tolerance > 0 and found_scores is not None and truth_scores is not None:
            floor = float(truth_scores[row][keep_t[-1]]) - tolerance
            got = sum(1 for j in keep_f if int(f[j]) in true_set or found_scores[row][j] >= floor)
        else:
            got = sum(1 for j in keep_f if int(f[j]) in true_set)
        hits.append(min(got, len(keep_t)) / len(keep_t))
    return float(np.mean(hits)) if hits else 1.0

def calibrate(
    name: str,
    values: list[int],
    search: Callable[[np.ndarray, int, dict], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    own: np.ndarray,
    truth: tuple[np.ndarray, np.ndarray],
    target: float,
    tolerance: float = 0.0,
) -> tuple[int, float]:
    """Smallest ``values[i]`` for parameter ``name`` whose recall reaches ``target`` (else the last).

    ``search(queries, k, params)`` returns (exact scores, ids); ``truth`` is (scores, ids).
    """
    reached = 0.0
    for value in values:
        scores, ids = search(queries, K + 1, {name: value})
        reached = self_recall(ids, truth[1], own, found_scores=scores, truth_scores=truth[0], tolerance=tolerance)
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

def tune(index) -> None:
    """Set nprobe / efSearch of a freshly built ``GlobalIndex`` / ``PatchIndex`` (see module doc).

    Writes the depth to ``manifest.search_params`` and what it reached to ``manifest.choice``.
    """
    from .faiss_io import ivf_of

    if index._index is None or len(index.store) * index.vectors_per_row < MIN_VECTORS:
        return
    ivf = ivf_of(index._index)
    if ivf is not None:
        name, values = "nprobe", depth_values("nprobe", ivf.nlist)
    elif "HNSW" in (index.manifest.factory or ""):
        name, values = "efSearch", depth_values("efSearch")
    else:
        return  # exact index: nothing to tune
    queries, own = index._calibration_queries()
    truth = exact_neighbours(queries, ((f, x) for x, f in index._iter_faiss()), K + 1)
    target = TARGET_RECALL[index.PURPOSE] + MARGIN
    tolerance = TIE_TOLERANCE[index.PURPOSE]
    value, reached = calibrate(name, values, index._calibration_search, queries, own, truth, target, tolerance)
    if name == "efSearch" and value < values[-1]:
        value = values[values.index(value) + 1]
        _, reached = calibrate(name, [value], index._calibration_search, queries, own, truth, target, tolerance)
    index.manifest.search_params[name] = int(value)
    index.manifest.choice["measured_recall"] = round(reached, 4)
    index.manifest.choice["calibration"] = (
        f"{name}={value}: recall@{K} {reached:.3f} on {len(queries)} own vectors (target {target:.2f})"
    )


__all__ = ["tune", "calibrate", "exact_neighbours", "self_recall", "depth_values", "TARGET_RECALL"]
