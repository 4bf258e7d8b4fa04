"""Recall against exact search on differently shaped synthetic collections (compare-to-exact tests).

The collections (``index/synthetic.py``) are the shapes that broke earlier versions: patches that
are mostly background shared by every image, few large clusters of near-duplicates, and global
vectors that are all alike. Queries are *held out* (never indexed); the depth the index uses is
the one it calibrated on its own held-out sample at build time.
"""
from __future__ import annotations

import numpy as np
import pytest

from tipsv2_sdk.index import GlobalIndex, PatchIndex
from tipsv2_sdk.index import tuning
from tipsv2_sdk.index.synthetic import global_collection, patch_collection

N_IMAGES, GRID, D, N_QUERIES = 400, 8, 64, 20


TIE = 1e-3  # a result whose exact score is within this of the true 10th best ties with it


def _recall(found: np.ndarray, found_exact: np.ndarray, truth: np.ndarray, truth_scores: np.ndarray) -> float:
    """recall@10 against exact search; a found item tied (within ``TIE``) with the 10th best counts."""
    hits = []
    for f, fs, t, ts in zip(found, found_exact, truth, truth_scores):
        got = sum(1 for i, s in zip(f.tolist(), fs.tolist()) if i in set(t.tolist()) or s >= ts[-1] - TIE)
        hits.append(min(got, len(t)) / len(t))
    return float(np.mean(hits))


@pytest.mark.parametrize("kind", ["background", "near_duplicates"])
def test_two_stage_maxsim_recall_on_hard_patch_collections(tmp_path, kind):
    x = patch_collection(kind, N_IMAGES + N_QUERIES, GRID, D, seed=5).make()
    base, queries = x[:N_IMAGES], x[N_IMAGES:]
    index = PatchIndex.create(tmp_path / "p", dim=D, grid=(GRID, GRID), factory="IVF64,PQ16x8")
    index.add(base)
    index.save()
    choice = index.manifest.choice
    assert "held-out" in choice["maxsim_calibrated_on"]["source"]
    assert index.manifest.search_params["maxsim_candidates"] < N_IMAGES  # a real shortlist, not a scan
    exact = [index.search_maxsim(q, k=10, exhaustive=True) for q in queries]
    fast = [index.search_maxsim(q, k=10) for q in queries]
    # stage 2 re-ranks by exact MaxSim, so the fast scores are the exact scores of what it found
    recall = _recall(np.stack([r.ids[0] for r in fast]), np.stack([r.scores[0] for r in fast]),
                     np.stack([r.ids[0] for r in exact]), np.stack([r.scores[0] for r in exact]))
    assert recall >= 0.9


# near_duplicates: the queries are members of groups that are not indexed, whose neighbours lie in
# several IVF cells; calibrating on near-copies of stored items alone chose nprobe=4 (0.94 here),
# the "far" held-out queries make it probe deeper (index/tuning.py).
@pytest.mark.parametrize("kind", ["common", "near_duplicates"])
def test_compressed_global_recall_on_hard_collections(tmp_path, kind):
    x = global_collection(kind, 20000 + 100, D, seed=5).make()
    base, queries = x[:20000], x[20000:]
    # PQ16x8 codes: 16 bytes per 64-d vector, 1/16 of flat float32
    index = GlobalIndex.create(tmp_path / "g", dim=D, factory="IVF128,PQ16x8")
    index.add(base)
    index.save()
    assert "held-out" in index.manifest.choice["calibrated_on"]["source"]
    all_scores = queries @ base.T
    truth = np.argsort(-all_scores, axis=1, kind="stable")[:, :10]
    found = index.search(queries, 10).ids
    assert (found >= 0).all()
    recall = _recall(found, np.take_along_axis(all_scores, found, 1), truth, np.take_along_axis(all_scores, truth, 1))
    assert recall >= 0.95


def test_exact_neighbours_is_chunked_and_exact(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1000, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    monkeypatch.setattr(tuning, "EXACT_BLOCK", 50 * 7)  # 7 base vectors per score block
    scores, ids = tuning.exact_neighbours(queries, [(np.arange(1000), base)], 5)
    expected = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :5]
    assert np.array_equal(ids, expected)
    assert np.allclose(scores, np.take_along_axis(queries @ base.T, expected, 1), atol=1e-5)


def test_calibration_needs_every_query_set_to_reach_the_target():
    # set 0 is found perfectly, set 1 half: the reached recall is set 1's, so depth 2 is needed
    truth_ids = np.tile(np.arange(1, 12), (4, 1))
    truth_s = np.tile(np.linspace(1, 0, 11, dtype=np.float32), (4, 1))

    def search(queries, k, params):
        ids = truth_ids.copy()
        if params["nprobe"] == 1:
            ids[2:, 1:6] = 100 + np.arange(5)  # set 1 misses 5 of its 10
        return truth_s, ids

    labels = np.array([0, 0, 1, 1])
    own = np.zeros(4, np.int64)
    value, reached = tuning.calibrate("nprobe", [1, 2], search, np.zeros((4, 2)), own, (truth_s, truth_ids), 0.9,
                                      groups=labels)
    assert (value, reached) == (2, 1.0)
    value, reached = tuning.calibrate("nprobe", [1, 2], search, np.zeros((4, 2)), own, (truth_s, truth_ids), 0.7)
    assert value == 1 and reached == 0.75  # pooled over both sets, the easy one hides the hard one


def test_far_calibration_queries_move_to_the_kth_neighbour_angle():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(4, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    moved = tuning.perturb(q, np.full(4, 0.5, np.float32), np.arange(4), fraction=1.0)
    assert np.allclose(np.sum(moved * q, axis=1), 0.5, atol=1e-5)


def test_perturbed_calibration_queries_are_new_points():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(8, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    moved = tuning.perturb(q, np.full(8, 0.5, np.float32), np.arange(8))
    cos = np.sum(moved * q, axis=1)
    # half of the 60-degree angle to the neighbour: cos 30 degrees, still unit length
    assert np.allclose(cos, np.cos(np.pi / 6), atol=1e-5)
    assert np.allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(moved, tuning.perturb(q, np.full(8, 0.5, np.float32), np.arange(8)))
