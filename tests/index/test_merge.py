"""Shard + merge equals one build; ids stay stable; incompatible or overlapping shards are refused."""
from __future__ import annotations

import numpy as np
import pytest

from tipsv2_sdk.index import DuplicateIdError, GlobalIndex, IndexMismatchError, PatchIndex, merge_indexes
from tipsv2_sdk.index import factory as factory_mod
from tipsv2_sdk.index.merge import open_index

D = 32
N = 3000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(30, D))
    x = centres[rng.integers(30, size=N + 50)] + 0.6 * rng.normal(size=(N + 50, D))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    paths = [f"photos/{i:05d}.jpg" for i in range(N)]
    return x[:N], x[N:], paths


def _shards(tmp_path, data, parts, split="blocks", **create):
    """Build ``parts`` shards; ids are input positions, as a sharded build assigns them."""
    base, _, paths = data
    dirs = []
    for i in range(parts):
        rows = np.arange(i, N, parts) if split == "strided" else np.array_split(np.arange(N), parts)[i]
        shard = GlobalIndex.create(tmp_path / f"shard{i}", dim=D, **create)
        shard.add(base[rows], [paths[r] for r in rows], ids=rows)
        shard.save()
        dirs.append(tmp_path / f"shard{i}")
    return dirs


def _single(tmp_path, data, **create):
    base, _, paths = data
    one = GlobalIndex.create(tmp_path / "single", dim=D, **create)
    one.add(base, paths, ids=np.arange(N))
    one.save()
    return one


def _same_answers(a, b, queries, **kw):
    ra, rb = a.search(queries, 10, **kw), b.search(queries, 10, **kw)
    assert np.array_equal(ra.ids, rb.ids)
    np.testing.assert_allclose(ra.scores, rb.scores, atol=1e-6)


@pytest.mark.parametrize("factory", [None, "HNSW32", "IVF32,PQ8x8"])
@pytest.mark.parametrize("split", ["blocks", "strided"])
def test_rebuild_merge_equals_single_build(tmp_path, data, factory, split, monkeypatch):
    _, queries, paths = data
    monkeypatch.setattr(factory_mod, "FLAT_MAX", 1000)  # shards are Flat, the merged size gets HNSW
    shards = _shards(tmp_path, data, 3, split, factory=factory)
    merged = merge_indexes(tmp_path / "merged", shards)
    single = _single(tmp_path, data, factory=factory)
    assert merged.factory == single.factory and len(merged) == N
    _same_answers(merged, single, queries)
    reopened = GlobalIndex.open(tmp_path / "merged")
    _same_answers(reopened, single, queries)
    assert reopened.id_of(paths[:5]).tolist() == [0, 1, 2, 3, 4]
    assert reopened.records([2999])[0]["path"] == paths[2999]
    assert reopened.manifest.next_id == N


@pytest.mark.parametrize("on_disk", [False, True])
def test_inverted_list_merge_equals_single_build(tmp_path, data, on_disk):
    base, queries, _ = data
    template = GlobalIndex.create(tmp_path / "template", dim=D, factory="IVF32,PQ8x8")
    template.train(base[:2000])
    template.save()
    shards = _shards(tmp_path, data, 2, template=tmp_path / "template")
    merged = merge_indexes(tmp_path / "merged", shards, strategy="invlists", on_disk=on_disk)
    single = _single(tmp_path, data, template=tmp_path / "template")
    _same_answers(merged, single, queries)
    ivfdata = list((tmp_path / "merged").glob("*.ivfdata"))
    assert len(ivfdata) == (1 if on_disk else 0)
    reopened = GlobalIndex.open(tmp_path / "merged")
    _same_answers(reopened, single, queries)
    # changing an on-disk merged index copies its lists to RAM; the next save is one plain file
    reopened.remove(ids=[0, 1])
    reopened.add(base[:1], ["photos/new.jpg"], ids=[N + 7])
    reopened.save()
    assert not list((tmp_path / "merged").glob("*.ivfdata"))
    again = GlobalIndex.open(tmp_path / "merged")
    assert len(again) == N - 1 and again.id_of(["photos/new.jpg"]).tolist() == [N + 7]
    assert again.search(base[:1], 1, nprobe=32).ids[0, 0] == N + 7


def test_auto_strategy_uses_lists_only_when_shards_share_training(tmp_path, data):
    base, queries, _ = data
    template = GlobalIndex.create(tmp_path / "template", dim=D, factory="IVF16,Flat")
    template.train(base[:1000])
    template.save()
    shared = _shards(tmp_path, data, 2, template=tmp_path / "template")
    merged = merge_indexes(tmp_path / "m1", shared)
    assert merged.manifest.files["trained"] == GlobalIndex.open(shared[0]).manifest.files["trained"]
    _same_answers(merged, _single(tmp_path, data, template=tmp_path / "template"), queries)
    # shards trained separately: lists cannot be merged, the stored vectors are re-indexed
    for i, rows in enumerate(np.array_split(np.arange(N), 2)):
        shard = GlobalIndex.create(tmp_path / f"own{i}", dim=D, factory="IVF16,Flat")
        shard.add(base[rows], ids=rows)
        shard.save()
    with pytest.raises(IndexMismatchError, match="one template"):
        merge_indexes(tmp_path / "m2", [tmp_path / "own0", tmp_path / "own1"], strategy="invlists")
    rebuilt = merge_indexes(tmp_path / "m2", [tmp_path / "own0", tmp_path / "own1"])
    assert rebuilt.factory == "IVF16,Flat" and len(rebuilt) == N


def test_template_must_match(tmp_path, data):
    base, _, _ = data
    template = GlobalIndex.create(tmp_path / "t", dim=D, factory="IVF16,Flat", model_name="m", config_hash="1")
    template.train(base[:1000])
    template.save()
    with pytest.raises(IndexMismatchError, match="config_hash='1'"):
        GlobalIndex.create(tmp_path / "x", dim=D, model_name="m", config_hash="2", template=tmp_path / "t")
    with pytest.raises(IndexMismatchError, match="16-d"):
        GlobalIndex.create(tmp_path / "y", dim=16, template=tmp_path / "t")
    flat = GlobalIndex.create(tmp_path / "f", dim=D, factory="Flat")
    flat.add(base[:10])
    flat.save()
    with pytest.raises(ValueError, match="no trained index"):
        GlobalIndex.create(tmp_path / "z", dim=D, template=tmp_path / "f")


def test_removed_rows_stay_removed_after_merge(tmp_path, data):
    base, queries, paths = data
    shards = _shards(tmp_path, data, 2, factory="Flat")
    first = GlobalIndex.open(shards[0])
    first.remove(ids=np.arange(0, 1000))  # past the compaction threshold: rewritten segments
    first.save()
    second = GlobalIndex.open(shards[1])
    second.remove(ids=[1600])
    second.save()
    merged = merge_indexes(tmp_path / "merged", shards)
    keep = np.setdiff1d(np.arange(N), np.r_[np.arange(1000), 1600])
    assert sorted(merged.ids().tolist()) == keep.tolist()
    truth = GlobalIndex.create(tmp_path / "t", dim=D, factory="Flat")
    truth.add(base[keep], [paths[i] for i in keep], ids=keep)
    _same_answers(merged, truth, queries)


def test_shards_must_be_compatible_and_disjoint(tmp_path, data):
    base, _, _ = data
    a = GlobalIndex.create(tmp_path / "a", dim=D, model_name="m", config_hash="111")
    a.add(base[:10], ids=np.arange(10))
    a.save()
    b = GlobalIndex.create(tmp_path / "b", dim=D, model_name="m", config_hash="222")
    b.add(base[10:20], ids=np.arange(10, 20))
    b.save()
    with pytest.raises(IndexMismatchError, match="config_hash='222'.*'111'"):
        merge_indexes(tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    c = GlobalIndex.create(tmp_path / "c", dim=D, model_name="m", config_hash="111")
    c.add(base[20:30], ids=np.arange(5, 15))
    c.save()
    with pytest.raises(DuplicateIdError, match="id 5 is in both shard"):
        merge_indexes(tmp_path / "out", [tmp_path / "a", tmp_path / "c"])
    d = GlobalIndex.create(tmp_path / "d", dim=D, kind="cls2", model_name="m", config_hash="111")
    d.add(base[:3], ids=[100, 101, 102])
    d.save()
    with pytest.raises(IndexMismatchError, match="kind"):
        merge_indexes(tmp_path / "out", [tmp_path / "a", tmp_path / "d"])
    with pytest.raises(ValueError, match="also one of the shards"):
        merge_indexes(tmp_path / "a", [tmp_path / "a"])
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_patch_shards_merge(tmp_path, vec):
    x = vec.scenes(120, (4, 4), D, seed=6)
    for i, rows in enumerate(np.array_split(np.arange(120), 2)):
        shard = PatchIndex.create(tmp_path / f"p{i}", dim=D, grid=(4, 4), pooling=2)
        shard.add(x[rows], [f"im{r}" for r in rows], ids=rows)
        shard.save()
    merged = merge_indexes(tmp_path / "merged", [tmp_path / "p0", tmp_path / "p1"])
    assert isinstance(merged, PatchIndex) and merged.grid == (2, 2) and len(merged) == 120
    single = PatchIndex.create(tmp_path / "single", dim=D, grid=(4, 4), pooling=2)
    single.add(x, [f"im{r}" for r in range(120)], ids=np.arange(120))
    single.save()
    for q in (0, 55, 119):
        a = merged.search_maxsim(x[q], k=5)
        b = single.search_maxsim(x[q], k=5)
        assert np.array_equal(a.ids, b.ids) and a.ids[0, 0] == q
    assert isinstance(open_index(tmp_path / "merged"), PatchIndex)
    other = PatchIndex.create(tmp_path / "p2", dim=D, grid=(4, 4))
    other.add(x[:1], ids=[500])
    other.save()
    with pytest.raises(IndexMismatchError, match="patch grid"):
        merge_indexes(tmp_path / "bad", [tmp_path / "p0", tmp_path / "p2"])
