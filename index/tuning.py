"""Search-depth calibration after a build, on held-out queries (autofaiss's "tune_index", done on the index).

A fixed ``nprobe`` / ``efSearch`` / shortlist gives very different recall on different data, so
after every build the index measures itself and stores the smallest depth whose recall@10 reaches
the target, with the recall it reached and what it was measured on (``choice["calibrated_on"]``).

Measuring on the indexed vectors themselves flatters the index (a stored vector sits exactly on
its own graph node and PQ cell; a build that reported 0.97 that way delivered 0.47 on other
queries). So the queries are **held out**: a hash-chosen sample of the indexed items, each
moved in a random direction to a new point of its neighbourhood and *excluded from its own
results*, both the exact and the approximate ones (a patch query excludes its whole image).
Each sampled item gives two queries, and the depth must reach the target on both sets:

* *near*: moved half-way (in angle) to its nearest other neighbour, a near-copy of a stored item;
* *far*: moved by the whole angle to its ``K``-th nearest other neighbour. On collections made
  of tight near-duplicate groups the *near* queries stay inside their group, whose members share
  one IVF cell, so a shallow probe finds them; a real new item (one of no indexed group) has its
  neighbours in several groups and cells. The *far* queries are such items: with *near* queries
  alone, a build calibrated to 0.965 delivered 0.94 on fresh members of new groups.

For MaxSim, the held-out images' patch windows are the queries, their own image excluded.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

TARGET_RECALL = {"global": 0.95, "patch": 0.95}
# Patch vectors of one object are near-duplicates, so the exact top-10 patches are often a tie
# among dozens; a patch hit within this cosine of the true 10th best counts as found.
TIE_TOLERANCE = {"global": 0.0, "patch": 0.01}
MARGIN = 0.01  # calibration aims this much above the target (200 queries: about ±0.01 of noise)
SAMPLE = {"global": 200, "patch": 64}
MIN_VECTORS = 2000  # below this the defaults are fine and calibration would be noise
K = 10
RERANK_STEPS = 3  # PQ shortlists: try rerank r, 2r, 4r before settling

# MaxSim (image → images): shortlist length calibrated on held-out images.
MAXSIM_TARGET = 0.90
MAXSIM_MARGIN = 0.03  # 16 queries x 10 results: about ±0.025 of noise
MAXSIM_TIE = 0.001  # an image within this MaxSim of the true 10th best ties with it
MAXSIM_QUERIES = 16
MAXSIM_MIN_IMAGES = 200
MAXSIM_FLOPS = 4e12  # exact ground truth budget (about a minute on one core)
MAXSIM_SHORTLISTS = (16, 32, 64, 128, 256, 512, 1024)
EXACT_BLOCK = 2**22  # floats in one exact-search score block (16 MiB)


def exact_neighbours(
    queries: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, FAISS ids) by inner product, scanning (ids, vectors) batches.

    Memory stays bounded whatever the batch size: each batch is cut into chunks so that the score
    block (queries x chunk) holds at most ``EXACT_BLOCK`` floats, and only the running top ``k``
    per query is kept (never an N x N matrix, even when the queries are the indexed vectors).
    """
    queries = np.asarray(queries, np.float32)
    nq = len(queries)
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    step = max(1, EXACT_BLOCK // max(1, nq))
    for ids, vectors in batches:
        ids = np.asarray(ids, np.int64)
        for start in range(0, len(ids), step):
            scores = queries @ np.asarray(vectors[start : start + step], np.float32).T
            s = np.concatenate([best_s, scores], axis=1)
            i = np.concatenate([best_i, np.broadcast_to(ids[start : start + step], scores.shape)], axis=1)
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
    owner: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float:
    """recall@k of ``found`` against ``truth``, with each query's own item removed from both.

    ``owner`` maps result ids to what is excluded (default: the id itself; a patch index maps a
    patch to its image, so a held-out patch excludes its whole image). With ``tolerance`` > 0, a
    found item whose exact score is within ``tolerance`` of the true k-th best also counts.
    """
    own_key = owner(np.asarray(own)) if owner is not None else np.asarray(own)
    hits = []
    for row, (f, t, o) in enumerate(zip(found, truth, own_key)):
        fk = owner(f) if owner is not None else f
        tk = owner(t) if owner is not None else t
        keep_t = [j for j in range(len(t)) if tk[j] != o and t[j] >= 0][:k]
        keep_f = [j for j in range(len(f)) if fk[j] != o and f[j] >= 0][:k]
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


def perturb(queries: np.ndarray, neighbour: np.ndarray, seeds: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Move each unit query ``fraction`` of the angle to the cosine ``neighbour`` (of its nearest,
    or ``K``-th nearest, other item), in a random direction fixed by ``seeds`` (deterministic)."""
    from .store import id_hash

    out = np.empty_like(queries, dtype=np.float32)
    angle = np.arccos(np.clip(neighbour, -1.0, 1.0)) * fraction
    for row, (q, seed) in enumerate(zip(queries, id_hash(np.asarray(seeds, np.int64)))):
        g = np.random.default_rng(int(seed)).normal(size=q.shape).astype(np.float32)
        g -= (g @ q) * q
        g /= max(float(np.linalg.norm(g)), 1e-12)
        out[row] = np.cos(angle[row]) * q + np.sin(angle[row]) * g
    return out


def calibrate(
    name: str,
    values: list[int],
    search: Callable[[np.ndarray, int, dict], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    own: np.ndarray,
    truth: tuple[np.ndarray, np.ndarray],
    target: float,
    tolerance: float = 0.0,
    *,
    extra: dict[str, Any] | None = None,
    fetch: int = K + 1,
    owner: Callable[[np.ndarray], np.ndarray] | None = None,
    groups: np.ndarray | None = None,
) -> tuple[int, float]:
    """Smallest ``values[i]`` for parameter ``name`` whose recall reaches ``target`` (else the last).

    ``search(queries, k, params)`` returns (exact scores, ids); ``truth`` is (scores, ids).
    ``groups`` labels each query with its set; the recall reached is then the lowest per-set
    recall, so that an easy set cannot hide a hard one.
    """
    reached = 0.0
    labels = np.zeros(len(queries), np.int64) if groups is None else np.asarray(groups)
    for value in values:
        scores, ids = search(queries, fetch, {**(extra or {}), name: value})
        reached = min(
            self_recall(ids[labels == g], truth[1][labels == g], own[labels == g], found_scores=scores[labels == g],
                        truth_scores=truth[0][labels == g], tolerance=tolerance, owner=owner)
            for g in np.unique(labels)
        )
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


def held_out_queries(index) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], int, Any, np.ndarray]:
    """(perturbed queries, own FAISS ids, exact truth (scores, ids), fetch size, owner, set labels)
    for ``tune``: every sampled item gives a *near* (label 0) and a *far* (label 1) query."""
    queries, own = index._calibration_queries()
    owner = getattr(index, "_owner", None)
    # results from the query's own image are dropped: fetch enough that k others remain
    fetch = K + 1 + (min(index.vectors_per_row, 63) if owner is not None else 0)
    scan = ((f, x) for x, f in index._iter_faiss())
    first = exact_neighbours(queries, scan, fetch)
    nearest = np.array([_nth_other(s, i, o, owner, 1) for s, i, o in zip(first[0], first[1], own)], np.float32)
    kth = np.array([_nth_other(s, i, o, owner, K) for s, i, o in zip(first[0], first[1], own)], np.float32)
    moved = np.concatenate([perturb(queries, nearest, own), perturb(queries, kth, own, fraction=1.0)])
    own2 = np.concatenate([own, own])
    labels = np.repeat(np.arange(2), len(queries))
    truth = exact_neighbours(moved, ((f, x) for x, f in index._iter_faiss()), fetch)
    return moved, own2, truth, fetch, owner, labels


def _nth_other(scores: np.ndarray, ids: np.ndarray, own: int, owner, nth: int) -> float:
    """Score of the ``nth`` result (1-based) not belonging to ``own`` (the last one found if fewer)."""
    keys = owner(ids) if owner is not None else ids
    mine = owner(np.asarray([own]))[0] if owner is not None else own
    seen, last = 0, 1.0
    for s, key, i in zip(scores, keys, ids):
        if i >= 0 and key != mine:
            seen, last = seen + 1, float(s)
            if seen == nth:
                break
    return last


def tune(index) -> None:
    """Set nprobe / efSearch (and the PQ re-ranking depth) of a freshly built index (module doc).

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
    queries, own, truth, fetch, owner, labels = held_out_queries(index)
    target = TARGET_RECALL[index.PURPOSE] + MARGIN
    tolerance = TIE_TOLERANCE[index.PURPOSE]
    params = index.manifest.search_params
    rerank = int(params.get("rerank", 1))
    steps = [rerank * 2**i for i in range(RERANK_STEPS)] if rerank > 1 else [rerank]
    best = None
    for rr in steps:
        extra = {"rerank": rr} if rr > 1 else {}
        value, reached = calibrate(name, values, index._calibration_search, queries, own, truth, target, tolerance,
                                   extra=extra, fetch=fetch, owner=owner, groups=labels)
        if best is None or reached > best[2] + 1e-9:
            best = (rr, value, reached)
        # deeper re-ranking pays when probing all lists would be needed otherwise
        if reached >= target and (name != "nprobe" or value <= max(1, values[-1] // 4)):
            best = (rr, value, reached)
            break
    rr, value, reached = best
    params[name] = int(value)
    if rerank > 1:
        params["rerank"] = int(rr)
    index.manifest.choice["measured_recall"] = round(reached, 4)
    index.manifest.choice["calibration"] = (
        f"{name}={value}" + (f", rerank={rr}" if rerank > 1 else "")
        + f": recall@{K} {reached:.3f} (the lower of the near and far sets) on {len(queries)} held-out queries"
        + f" (target {target:.2f})"
    )
    what = "patches (one per sampled image; its image excluded)" if owner is not None else "vectors (each excluded from its own results)"
    index.manifest.choice["calibrated_on"] = {
        "queries": int(len(queries)),
        "source": f"held-out indexed {what}, moved half-way to their nearest neighbour (near) and by the"
                  f" angle to their {K}th nearest (far)",
        "tie_tolerance": tolerance,
    }


# ---------------------------------------------------------------------------------------------- MaxSim
def maxsim_queries(index) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Held-out MaxSim queries: a hash-placed window of each of a sample of images' patches.

    The window is as large as the ground-truth budget allows (the whole image on small indexes).
    Returns (queries, their image ids, window side).
    """
    from .store import id_hash

    gh, gw = index.grid
    n_vectors = len(index.store) * index.vectors_per_row
    count = min(MAXSIM_QUERIES, len(index.store))
    tokens = MAXSIM_FLOPS / (2.0 * count * n_vectors * index.dim)
    if tokens < 64:
        count = max(4, count // 2)
        tokens = MAXSIM_FLOPS / (2.0 * count * n_vectors * index.dim)
    side = int(max(2, min(gh, gw, np.sqrt(max(tokens, 4)))))
    rows = index.store.sample_rows(count)
    ids = index.store.all_ids()[rows]
    grids = index.store.take(rows).reshape(len(rows), gh, gw, index.dim)
    queries = []
    for grid, h in zip(grids, id_hash(ids)):
        r0 = int(h % np.uint64(gh - min(side, gh) + 1))
        c0 = int((h >> np.uint64(20)) % np.uint64(gw - min(side, gw) + 1))
        queries.append(grid[r0 : r0 + side, c0 : c0 + side].reshape(-1, index.dim))
    return queries, ids, side


def tune_maxsim(index) -> None:
    """Calibrate the MaxSim shortlist (``search_params["maxsim_candidates"]``) on held-out images."""
    from .maxsim import maxsim_exhaustive_many

    if len(index.store) < MAXSIM_MIN_IMAGES or index._scan_is_exact():
        return
    queries, own, side = maxsim_queries(index)
    truth_s, truth_i = maxsim_exhaustive_many(queries, index.store.iter_sorted(index._block()), K + 1)
    target = MAXSIM_TARGET + MAXSIM_MARGIN
    ladder = [r for r in MAXSIM_SHORTLISTS if r < len(index.store)] + [min(MAXSIM_SHORTLISTS[-1], len(index.store))]
    longest = ladder[-1]
    found = []
    for q in queries:
        cand = index.maxsim_candidates(index._query_tokens(q), longest)
        found.append((cand, index._rerank(index._query_tokens(q), cand, len(cand))))
    chosen, reached = ladder[-1], 0.0
    for limit in ladder:
        ids = np.full((len(queries), K + 1), -1, np.int64)
        scores = np.full((len(queries), K + 1), -np.inf, np.float32)
        for row, (cand, exact) in enumerate(found):
            keep = np.isin(exact.ids[0], cand[:limit])
            top_ids, top_s = exact.ids[0][keep][: K + 1], exact.scores[0][keep][: K + 1]
            ids[row, : len(top_ids)], scores[row, : len(top_s)] = top_ids, top_s
        reached = self_recall(ids, truth_i, own, found_scores=scores, truth_scores=truth_s, tolerance=MAXSIM_TIE)
        if reached >= target:
            chosen = limit
            break
    index.manifest.search_params["maxsim_candidates"] = int(chosen)
    index.manifest.choice["maxsim_recall"] = round(reached, 4)
    index.manifest.choice["maxsim_calibration"] = (
        f"maxsim_candidates={chosen}: recall@{K} {reached:.3f} on {len(queries)} held-out images (target {target:.2f})"
    )
    index.manifest.choice["maxsim_calibrated_on"] = {
        "queries": len(queries),
        "source": f"held-out indexed images, a {side}x{side} window of each as the query, own image excluded",
        "tie_tolerance": MAXSIM_TIE,
    }


__all__ = [
    "tune", "tune_maxsim", "calibrate", "exact_neighbours", "self_recall", "perturb", "depth_values", "TARGET_RECALL",
]
