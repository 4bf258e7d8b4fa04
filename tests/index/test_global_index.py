"""GlobalIndex: recall against exact IndexFlatIP, stable ids, updates, persistence, atomic saves."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from tipsv2_sdk.index import DuplicateIdError, GlobalIndex, IndexExistsError, IndexMismatchError, UnknownIdError
from tipsv2_sdk.index import index_files
from tipsv2_sdk.index import factory as factory_mod
from tipsv2_sdk.index.gpu import GpuSearcher, gpu_available, wants_gpu

D = 48


@pytest.fixture(scope="module")
def data():
    rng_base = np.random.default_rng(5)
    centres = rng_base.normal(size=(40, D))
    labels = rng_base.integers(40, size=4200)
    x = centres[labels] + 0.6 * rng_base.normal(size=(4200, D))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:4000], x[4000:]


def _build(tmp_path, base, factory, name="idx", **kw):
    index = GlobalIndex.create(tmp_path / name, dim=D, factory=factory, **kw)
    index.add(base, paths=[f"img/{i}.jpg" for i in range(len(base))])
    index.save()
    return index


def test_flat_float32_is_exact(tmp_path, data, vec):
    base, queries = data
    index = _build(tmp_path, base, None, dtype="float32")
    assert index.factory == "Flat"
    res = index.search(queries, 10)
    assert np.array_equal(res.ids, vec.exact_topk(base, queries, 10))
    flat = faiss.IndexFlatIP(D)
    flat.add(base)
    scores, _ = flat.search(queries, 10)
    np.testing.assert_allclose(res.scores, scores, atol=1e-5)


@pytest.mark.parametrize(
    "factory, threshold",
    [
        ("HNSW32", 0.95),
        ("IVF64,Flat", 0.9),
        ("IVF64,PQ12x8", 0.9),  # PQ shortlists, the stored vectors re-rank
        ("IVF64,SQ8", 0.9),
    ],
)
def test_approximate_indexes_against_exact(tmp_path, data, vec, factory, threshold):
    base, queries = data
    index = _build(tmp_path, base, factory)
    truth = vec.exact_topk(base, queries, 10)
    found = index.search(queries, 10).ids
    assert vec.recall(found, truth) >= threshold
    assert index.manifest.factory == factory and index.manifest.num_vectors == len(base)


def test_opq_index_recall_and_reopen(tmp_path, data, vec):
    # OPQ trains a rotation by alternating with PQ training: slow, so a small collection here.
    base, queries = data
    index = _build(tmp_path, base[:1500], "OPQ8_48,IVF16,PQ8x4")
    truth = vec.exact_topk(base[:1500], queries, 10)
    found = index.search(queries, 10)
    assert vec.recall(found.ids, truth) >= 0.9
    assert np.array_equal(GlobalIndex.open(tmp_path / "idx").search(queries, 10).ids, found.ids)


def test_reranking_lifts_pq_recall(tmp_path, data, vec):
    base, queries = data
    index = _build(tmp_path, base, "IVF64,PQ6x8")
    truth = vec.exact_topk(base, queries, 10)
    plain = vec.recall(index.search(queries, 10, rerank=1).ids, truth)
    reranked = vec.recall(index.search(queries, 10, rerank=8).ids, truth)
    assert reranked > plain + 0.1 and reranked >= 0.85


def test_more_probes_more_recall(tmp_path, data, vec):
    base, queries = data
    index = _build(tmp_path, base, "IVF64,Flat")
    truth = vec.exact_topk(base, queries, 10)
    low = vec.recall(index.search(queries, 10, nprobe=1).ids, truth)
    high = vec.recall(index.search(queries, 10, nprobe=64).ids, truth)
    assert high == pytest.approx(1.0, abs=0.01) and high > low


def test_ids_paths_and_records(tmp_path, rng):
    index = GlobalIndex.create(tmp_path / "idx", dim=8)
    ids = index.add(rng.normal(size=(3, 8)), paths=["a", "b", "c"], metadata=[{"w": 1}, None, {"w": 3}])
    assert ids.tolist() == [0, 1, 2]
    assert index.records([2, 99]) == [{"id": 2, "path": "c", "meta": {"w": 3}}, None]
    assert index.id_of(["b", "zz"]).tolist() == [1, -1] and index.contains("a")
    more = index.add(rng.normal(size=(2, 8)), paths=["d", "e"])
    assert more.tolist() == [3, 4]
    explicit = index.add(rng.normal(size=(2, 8)), paths=["f", "g"], ids=[100, 50])
    assert explicit.tolist() == [100, 50] and index.add(rng.normal(size=(1, 8)), paths=["h"]).tolist() == [101]


def test_readding_a_path_replaces_it(tmp_path, rng):
    index = GlobalIndex.create(tmp_path / "idx", dim=8)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    index.add(x, paths=["a", "b", "c", "d"])
    index.save()
    again = index.add(-x[1:2], paths=["b"])
    assert again.tolist() == [1] and len(index) == 4
    res = index.search(-x[1], 1)
    assert res.ids[0, 0] == 1 and res.scores[0, 0] == pytest.approx(1.0, abs=2e-3)
    # an explicit new id moves the path to that id
    assert index.add(x[1:2], paths=["b"], ids=[7]).tolist() == [7]
    assert index.id_of(["b"]).tolist() == [7] and len(index) == 4 and index.records([1]) == [None]
    with pytest.raises(DuplicateIdError, match="id 0 already belongs to 'a'"):
        index.add(x[:1], paths=["zzz"], ids=[0])
    with pytest.raises(DuplicateIdError, match="appears twice"):
        index.add(x[:2], paths=["p", "p"])
    with pytest.raises(DuplicateIdError, match="appears twice"):
        index.add(x[:2], ids=[9, 9])


def test_update_and_remove(tmp_path, data):
    base, _ = data
    index = _build(tmp_path, base[:200], "IVF8,Flat")
    index.update(-base[:2], paths=["img/0.jpg", "img/1.jpg"])
    assert index.search(-base[0], 1, nprobe=8).ids[0, 0] == 0
    index.update(base[5:6], ids=[3])
    assert index.records([3])[0]["path"] == "img/3.jpg"
    with pytest.raises(UnknownIdError, match="img/nope.jpg"):
        index.update(base[:1], paths=["img/nope.jpg"])
    with pytest.raises(UnknownIdError, match="id 999"):
        index.update(base[:1], ids=[999])
    assert index.remove(ids=[10, 11]) == 2 and index.remove(paths=["img/12.jpg"]) == 1
    with pytest.raises(UnknownIdError, match="id 10 is not in index"):
        index.remove(ids=[10])
    assert index.remove(ids=[10, 13], missing_ok=True) == 1
    assert len(index) == 196 and index._index.ntotal == 196
    found = index.search(base[10:14], 5, nprobe=8).ids
    assert not set(found.ravel().tolist()) & {10, 11, 12, 13}
    index.save()
    reopened = GlobalIndex.open(tmp_path / "idx")
    assert sorted(reopened.ids().tolist()) == sorted(index.ids().tolist())
    assert reopened.records([0])[0]["path"] == "img/0.jpg"


def test_hnsw_removal_rebuilds_from_stored_vectors(tmp_path, data, vec):
    base, queries = data
    index = _build(tmp_path, base[:1000], "HNSW32")
    gone = vec.exact_topk(base[:1000], queries[:5], 1).ravel()
    index.remove(ids=gone)
    assert index._stale  # HNSW cannot remove: marked for a rebuild
    found = index.search(queries[:5], 10).ids
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    assert not index._stale and index._index.ntotal == 1000 - len(set(gone.tolist()))
    keep = np.setdiff1d(np.arange(1000), gone)
    truth = vec.exact_topk(base[keep], queries, 10, ids=keep)
    assert vec.recall(index.search(queries, 10).ids, truth) >= 0.95


@pytest.mark.parametrize("factory", [None, "HNSW32", "IVF32,PQ8x8"])
def test_save_reopen_same_results(tmp_path, data, factory):
    base, queries = data
    index = _build(tmp_path, base[:3000], factory)
    before = index.search(queries, 10)
    reopened = GlobalIndex.open(tmp_path / "idx")
    after = reopened.search(queries, 10)
    assert np.array_equal(before.ids, after.ids)
    np.testing.assert_allclose(before.scores, after.scores, atol=1e-6)
    assert reopened.manifest.factory == index.manifest.factory


def test_files_are_plain_formats_without_pickle(tmp_path, data):
    base, _ = data
    _build(tmp_path, base[:500], "IVF16,PQ8x8")
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert all(n.endswith((".npy", ".json", ".jsonl", ".faiss")) for n in names), names
    for path in (tmp_path / "idx").glob("*.npy"):
        arr = np.load(path, allow_pickle=False)
        assert arr.dtype != object
    vectors = np.load(next((tmp_path / "idx").glob("vectors-*.npy")), mmap_mode="r", allow_pickle=False)
    assert vectors.dtype == np.float16 and vectors.shape == (500, D)
    lines = next((tmp_path / "idx").glob("records-*.jsonl")).read_text().splitlines()
    assert json.loads(lines[3]) == {"id": 3, "path": "img/3.jpg", "meta": {}}
    reopened = GlobalIndex.open(tmp_path / "idx")
    assert isinstance(reopened.store._segments[0].vectors, np.memmap)


def test_crash_during_save_keeps_the_previous_index(tmp_path, data, monkeypatch):
    base, queries = data
    index = _build(tmp_path, base[:300], "IVF8,Flat")
    before = GlobalIndex.open(tmp_path / "idx").search(queries, 5).ids
    index.add(base[300:400], paths=[f"new/{i}" for i in range(100)])
    index.remove(ids=[0, 1, 2])

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_files, "write_index_atomic", boom)
    with pytest.raises(OSError, match="disk full"):
        index.save()
    reopened = GlobalIndex.open(tmp_path / "idx")
    assert len(reopened) == 300 and np.array_equal(reopened.search(queries, 5).ids, before)
    monkeypatch.undo()
    index.save()  # the next good save commits and removes the orphans of the failed one
    reopened = GlobalIndex.open(tmp_path / "idx")
    assert len(reopened) == 397 and reopened.contains("new/99") and not reopened.contains("img/0.jpg")
    referenced = set(reopened.store.file_names()) | {reopened.manifest.files["index"], "manifest.json"}
    referenced |= {reopened.manifest.files[k] for k in ("dead", "trained") if reopened.manifest.files.get(k)}
    assert {p.name for p in (tmp_path / "idx").iterdir()} == referenced


def test_compaction_keeps_ids(tmp_path, data, vec):
    base, queries = data
    index = _build(tmp_path, base[:400], "IVF8,Flat")
    index.remove(ids=np.arange(0, 400, 2))  # half the rows: past the compaction threshold
    index.save()
    assert index.store.total_rows == 200 and len(list((tmp_path / "idx").glob("vectors-*.npy"))) == 1
    reopened = GlobalIndex.open(tmp_path / "idx")
    assert sorted(reopened.ids().tolist()) == list(range(1, 400, 2))
    keep = np.arange(1, 400, 2)
    truth = vec.exact_topk(base[keep], queries, 5, ids=keep)
    assert vec.recall(reopened.search(queries, 5, nprobe=8).ids, truth) == pytest.approx(1.0, abs=0.02)
    assert reopened.records([3])[0]["path"] == "img/3.jpg"


def test_auto_index_is_rebuilt_when_outgrown(tmp_path, data, monkeypatch):
    base, _ = data
    monkeypatch.setattr(factory_mod, "FLAT_MAX", 500)
    index = GlobalIndex.create(tmp_path / "idx", dim=D)
    index.add(base[:300])
    index.save()
    assert index.factory == "Flat"
    index.add(base[300:1200])
    index.save()
    assert index.factory == "HNSW32" and index.manifest.built_count == 1200
    fixed = GlobalIndex.create(tmp_path / "fixed", dim=D, factory="Flat")
    fixed.add(base[:300])
    fixed.save()
    fixed.add(base[300:1200])
    fixed.save()
    assert fixed.factory == "Flat"


def test_input_checks(tmp_path, rng):
    with pytest.raises(ValueError, match="kind must be one of"):
        GlobalIndex.create(tmp_path / "x", dim=8, kind="cls3")
    with pytest.raises(ValueError, match="width is unknown"):
        GlobalIndex.create(tmp_path / "x")
    index = GlobalIndex.create(tmp_path / "idx", dim=8)
    with pytest.raises(IndexMismatchError, match="the index holds 8-d"):
        index.add(rng.normal(size=(2, 9)))
    index.add(rng.normal(size=(2, 8)))
    index.save()
    with pytest.raises(IndexMismatchError, match="queries have shape"):
        index.search(rng.normal(size=(1, 7)), 1)
    with pytest.raises(IndexExistsError, match="already exists"):
        GlobalIndex.create(tmp_path / "idx", dim=8)
    with pytest.raises(ValueError, match="invalid FAISS factory"):
        GlobalIndex.create(tmp_path / "bad", dim=8, factory="Bogus").build()
    replaced = GlobalIndex.create(tmp_path / "idx", dim=8, overwrite=True)
    replaced.add(rng.normal(size=(1, 8)))
    replaced.save()
    assert len(GlobalIndex.open(tmp_path / "idx")) == 1


def test_empty_index_and_padding(tmp_path, rng):
    index = GlobalIndex.create(tmp_path / "idx", dim=4)
    res = index.search(rng.normal(size=(2, 4)), 3)
    assert res.ids.shape == (2, 3) and (res.ids == -1).all() and np.isneginf(res.scores).all()
    index.add(rng.normal(size=(2, 4)))
    res = index.search(rng.normal(size=(1, 4)), 5)
    assert (res.ids[0, :2] >= 0).all() and (res.ids[0, 2:] == -1).all() and len(res.hits(0)) == 2
    index.save()
    assert GlobalIndex.open(tmp_path / "idx").info()["count"] == 2


def test_gpu_is_optional():
    assert gpu_available() in (True, False)
    if not gpu_available():
        assert wants_gpu(None) is False
        with pytest.raises(RuntimeError, match="no GPU support"):
            wants_gpu(True)
    flat = faiss.IndexFlatIP(4)
    assert GpuSearcher().searchable(flat, use_gpu=False) is flat
