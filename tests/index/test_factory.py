"""Automatic FAISS index choice (autofaiss-style rules) and explicit factory strings."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from tipsv2_sdk.index import GlobalIndex, choose_factory, describe_factory
from tipsv2_sdk.index import factory as factory_mod
from tipsv2_sdk.index.factory import OPQ_MIN, nlist_for


def test_small_collections_are_exact():
    choice = choose_factory(1000, 768)
    assert choice.factory == "Flat" and choice.expected_recall == 1.0 and choice.train_size == 0


def test_mid_size_uses_hnsw_when_it_fits():
    choice = choose_factory(200_000, 768)
    assert choice.factory == "HNSW32" and choice.search_params["efSearch"] > 0
    assert choice.memory_bytes <= factory_mod.DEFAULT_MEMORY_BUDGET


def test_memory_budget_forces_compression():
    budget = 64 * 2**20
    choice = choose_factory(200_000, 768, memory_budget=budget)
    assert "PQ" in choice.factory and "IVF" in choice.factory
    assert choice.memory_bytes <= budget
    flat = choose_factory(200_000, 768, memory_budget=2**40, pq=None)
    assert choice.bytes_per_vector < flat.bytes_per_vector / 8
    assert choice.search_params["rerank"] > 1 and choice.search_params["nprobe"] >= 1


def test_large_collections_get_hnsw_quantizer_and_opq_only_for_small_codes():
    choice = choose_factory(10_000_000, 768)
    assert choice.factory == "IVF16384_HNSW32,PQ96x8"  # d/8-byte codes: re-ranking makes OPQ moot
    assert choice.train_size >= 39 * nlist_for(10_000_000)
    tight = choose_factory(10_000_000, 768, memory_budget=2**29)  # forces codes < d/8 bytes
    assert tight.factory.startswith("OPQ32_768,IVF16384_HNSW32,PQ32x8")
    below = choose_factory(OPQ_MIN - 1, 768, memory_budget=2**23)
    assert "PQ" in below.factory and not below.factory.startswith("OPQ")


def test_patch_purpose_never_uses_hnsw_and_honours_pq():
    patch = choose_factory(300_000, 768, purpose="patch").factory
    assert patch == "IVF2048_HNSW32,PQ48x8"  # no HNSW index, no OPQ: MaxSim re-ranks the hits
    forced = choose_factory(5000, 64, purpose="patch", pq=8)
    assert forced.factory.endswith("PQ8x8") and "requested" in forced.reason
    tiny = choose_factory(100, 64, purpose="patch", pq=8)  # too few vectors for 256 centroids
    assert tiny.factory == "IVF1,PQ8x3"


@pytest.mark.parametrize("n", [60_000, 300_000, 3_000_000, 50_000_000])
@pytest.mark.parametrize("dim", [768, 1000])
def test_every_chosen_factory_string_is_valid(n, dim):
    choice = choose_factory(n, dim, memory_budget=2**28)
    index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    assert index.d == dim


def test_nlist_is_a_power_of_two_near_4_sqrt_n():
    for n in (10_000, 1_000_000, 10**9):
        k = nlist_for(n)
        assert k & (k - 1) == 0 and 64 <= k <= 65536
    assert nlist_for(1_000_000) == 4096
    assert nlist_for(20_000) == 128 and nlist_for(100) == 1  # lists hold >= 100 vectors on average


def test_describe_explicit_factories():
    ivf = describe_factory("IVF64,PQ8x8", 32, 10_000)
    assert ivf.bytes_per_vector < 32 and ivf.train_size > 0 and ivf.search_params["nprobe"] >= 1
    assert describe_factory("Flat", 32, 10).expected_recall == 1.0
    assert describe_factory("HNSW16", 32, 10).search_params["efSearch"] > 0
    with pytest.raises(ValueError, match="invalid FAISS factory string 'Nonsense12'"):
        describe_factory("Nonsense12", 32, 10)


def test_built_index_follows_the_choice(tmp_path, vec, monkeypatch):
    monkeypatch.setattr(factory_mod, "FLAT_MAX", 100)
    monkeypatch.setattr(factory_mod, "HNSW_MAX", 150)
    x = vec.clustered(300, 16)
    index = GlobalIndex.create(tmp_path / "a", dim=16)
    index.add(x[:120])
    index.save()
    assert index.factory == "HNSW32"
    index = GlobalIndex.create(tmp_path / "b", dim=16, memory_budget=10**9)
    index.add(x)
    index.save()
    assert "PQ" in index.factory and index.manifest.choice["train_size"] == 300
    assert faiss.extract_index_ivf(index._index).nlist == factory_mod.nlist_for(300)
    override = GlobalIndex.create(tmp_path / "c", dim=16, factory="IVF8,Flat")
    override.add(x)
    override.save()
    assert override.factory == "IVF8,Flat" and override.manifest.factory_auto is False
    assert override.manifest.choice["reason"] == "explicit factory string"


def test_search_depth_is_calibrated_on_the_index_itself(tmp_path, vec):
    from tipsv2_sdk.index import tuning

    x = vec.clustered(4000, 32, clusters=60)
    index = GlobalIndex.create(tmp_path / "idx", dim=32, factory="IVF64,Flat")
    index.add(x)
    index.save()
    nprobe = index.manifest.search_params["nprobe"]
    choice = index.manifest.choice
    assert choice["measured_recall"] >= tuning.TARGET_RECALL["global"] + tuning.MARGIN
    assert f"nprobe={nprobe}" in choice["calibration"]
    # the depth is the smallest that reaches the target on the held-out (near and far) query sets
    queries, own, truth, fetch, owner, labels = tuning.held_out_queries(index)
    assert len(queries) == 2 * tuning.SAMPLE["global"] and set(labels.tolist()) == {0, 1}
    if nprobe > 1:
        _, reached = tuning.calibrate("nprobe", [nprobe // 2], index._calibration_search, queries, own, truth,
                                      tuning.TARGET_RECALL["global"] + tuning.MARGIN, fetch=fetch, groups=labels)
        assert reached < tuning.TARGET_RECALL["global"] + tuning.MARGIN
    hnsw = GlobalIndex.create(tmp_path / "h", dim=32, factory="HNSW16")
    hnsw.add(x)
    hnsw.save()
    assert hnsw.manifest.search_params["efSearch"] in tuning.depth_values("efSearch")


def test_exact_neighbours_and_self_recall(vec):
    from tipsv2_sdk.index import tuning

    x = vec.clustered(500, 16)
    batches = [(np.arange(0, 250), x[:250]), (np.arange(250, 500), x[250:])]
    scores, ids = tuning.exact_neighbours(x[:20], batches, 5)
    assert np.array_equal(ids, vec.exact_topk(x, x[:20], 5))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    own = np.array([1, 2])
    truth = np.array([[1, 5, 6], [7, 2, 8]])
    found = np.array([[5, 6, 1], [7, 9, 2]])
    assert tuning.self_recall(found, truth, own, k=2) == pytest.approx(0.75)
    # id 9 is not in the true top-2 of query 2 but ties with its 2nd best (0.80): it counts
    truth_scores = np.array([[1.0, 0.9, 0.8], [0.9, 1.0, 0.8]])
    found_scores = np.array([[0.9, 0.8, 1.0], [0.9, 0.795, 1.0]])
    tied = tuning.self_recall(found, truth, own, k=2, found_scores=found_scores, truth_scores=truth_scores, tolerance=0.01)
    assert tied == pytest.approx(1.0)
    assert tuning.depth_values("nprobe", 8) == [1, 2, 4, 8]
