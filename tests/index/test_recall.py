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


@pytest.mark.parametrize("kind", [
    "common",
    # Known gap: calibration reaches 0.965 on its held-out sample here, but fresh members of the
    # near-identical groups get 0.94 at the calibrated nprobe (re-ranking deeper does not help).
    pytest.param("near_duplicates", marks=pytest.mark.xfail(strict=True, reason="calibration under-estimates nprobe on near-duplicate groups")),
])
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
