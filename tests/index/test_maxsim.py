"""MaxSim scoring, candidate generation, and two-stage search against exhaustive MaxSim."""
from __future__ import annotations

import numpy as np
import pytest

from tipsv2_sdk.index import PatchIndex, maxsim_exhaustive, maxsim_scores
from tipsv2_sdk.index.maxsim import approximate_candidates

D = 24


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_maxsim_matches_the_definition(rng):
    q = _unit(rng.normal(size=(5, D)))
    docs = _unit(rng.normal(size=(7, 9, D)))
    expect = [np.mean([max(float(qi @ dj) for dj in doc) for qi in q]) for doc in docs]
    np.testing.assert_allclose(maxsim_scores(q, docs), expect, rtol=1e-5)
    assert maxsim_scores(q, docs[:0]).shape == (0,)
    with pytest.raises(ValueError, match="docs hold 24-d"):
        maxsim_scores(q[:, :3], docs)


def test_maxsim_blocks_give_the_same_scores(rng, monkeypatch):
    import tipsv2_sdk.index.maxsim as maxsim_mod

    q = _unit(rng.normal(size=(3, D)))
    docs = _unit(rng.normal(size=(20, 6, D)))
    whole = maxsim_scores(q, docs)
    monkeypatch.setattr(maxsim_mod, "BLOCK_ELEMENTS", 100)  # forces blocks of one document
    np.testing.assert_allclose(maxsim_mod.maxsim_scores(q, docs), whole, rtol=1e-6)


def test_exhaustive_is_a_sorted_scan(rng):
    q = _unit(rng.normal(size=(4, D)))
    docs = _unit(rng.normal(size=(30, 5, D)))
    ids = np.arange(100, 130)
    scores, top = maxsim_exhaustive(q, [(ids[:13], docs[:13]), (ids[13:], docs[13:])], k=6)
    full = maxsim_scores(q, docs)
    order = np.argsort(-full)[:6]
    assert np.array_equal(top, ids[order]) and np.allclose(scores, full[order])


def test_candidates_credit_missing_tokens_with_the_list_floor():
    # two tokens, three documents; doc 1 is found by both tokens, doc 2 only by token 0
    scores = np.array([[0.9, 0.8, 0.5], [0.7, 0.6, 0.1]], np.float32)
    docs = np.array([[2, 1, 3], [1, 3, -1]])
    ids, approx = approximate_candidates(scores, docs)
    assert ids.tolist()[0] == 1
    # doc 2: 0.9 for token 0, floor 0.6 for token 1 → 0.75; doc 1: (0.8 + 0.7) / 2
    lookup = dict(zip(ids.tolist(), approx.tolist()))
    assert lookup[1] == pytest.approx(0.75) and lookup[2] == pytest.approx(0.75)
    assert lookup[3] == pytest.approx((0.5 + 0.6) / 2)
    assert approximate_candidates(scores, docs, limit=1)[0].tolist() == [1]
    empty = approximate_candidates(scores, np.full_like(docs, -1))
    assert len(empty[0]) == 0


@pytest.mark.parametrize("factory", [None, "IVF32,PQ8x8"])
def test_two_stage_recall_against_exhaustive(tmp_path, vec, factory):
    x = vec.scenes(300, (4, 4), 64, seed=11)
    index = PatchIndex.create(tmp_path / "p", dim=64, grid=(4, 4), factory=factory)
    index.add(x)
    index.save()
    hits = 0
    queries = range(0, 300, 10)
    for q in queries:
        query = x[q] + 0.3 * np.random.default_rng(q).normal(size=x[q].shape)
        exact = index.search_maxsim(query, k=10, exhaustive=True)
        fast = index.search_maxsim(query, k=10)
        hits += len(set(exact.ids[0].tolist()) & set(fast.ids[0].tolist()))
        common = np.isin(fast.ids[0], exact.ids[0])
        # re-ranked scores are exact MaxSim scores
        lookup = dict(zip(exact.ids[0].tolist(), exact.scores[0].tolist()))
        for i, s in zip(fast.ids[0][common].tolist(), fast.scores[0][common].tolist()):
            assert s == pytest.approx(lookup[i], abs=1e-5)
    assert hits / (10 * len(queries)) >= 0.9


def test_query_shapes_and_candidate_limit(tmp_path, vec):
    x = vec.scenes(50, (4, 4), D, seed=2)
    index = PatchIndex.create(tmp_path / "p", dim=D, grid=(4, 4))
    index.add(x)
    grid_query = index.search_maxsim(x[3], k=3)
    flat_query = index.search_maxsim(x[3].reshape(-1, D), k=3)
    assert np.array_equal(grid_query.ids, flat_query.ids) and grid_query.ids[0, 0] == 3
    few = index.search_maxsim(x[3], k=10, max_candidates=2)
    assert (few.ids[0] >= 0).sum() == 2 and few.ids[0, 0] == 3
