"""Automatic FAISS index choice (autofaiss-style rules) and explicit factory strings."""
from __future__ import annotations

import faiss
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


def test_large_collections_get_opq_and_hnsw_quantizer():
    choice = choose_factory(10_000_000, 768)
    assert choice.factory.startswith("OPQ") and "_HNSW32" in choice.factory
    assert choice.train_size >= 39 * nlist_for(10_000_000) or choice.train_size == 10_000_000
    below = choose_factory(OPQ_MIN - 1, 768, memory_budget=2**26)
    assert not below.factory.startswith("OPQ")


def test_patch_purpose_never_uses_hnsw_and_honours_pq():
    assert "HNSW32" not in choose_factory(300_000, 768, purpose="patch").factory.split(",")[0]
    forced = choose_factory(5000, 64, purpose="patch", pq=8)
    assert forced.factory.endswith("PQ8x8") and "requested" in forced.reason
    tiny = choose_factory(100, 64, purpose="patch", pq=8)  # too few vectors for 256 centroids
    assert tiny.factory.endswith("PQ8x3") and faiss.index_factory(64, tiny.factory).nlist * 8 <= 100


@pytest.mark.parametrize("n", [60_000, 300_000, 3_000_000, 50_000_000])
@pytest.mark.parametrize("dim", [768, 1000])
def test_every_chosen_factory_string_is_valid(n, dim):
    choice = choose_factory(n, dim, memory_budget=2**28)
    index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    assert index.d == dim


def test_nlist_is_a_power_of_two_near_4_sqrt_n():
    for n in (10_000, 1_000_000, 10**9):
        k = nlist_for(n)
        assert k & (k - 1) == 0 and 16 <= k <= 65536
    assert nlist_for(1_000_000) == 4096
    assert nlist_for(100) == 8 and nlist_for(3) == 1  # every list keeps >= 8 training vectors


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
