"""PatchIndex: id packing, regions, best-patch image search, boxes, heatmaps, pooling and PQ."""
from __future__ import annotations

import numpy as np
import pytest

from tipsv2_sdk.index import (
    BoxError,
    IndexMismatchError,
    PatchIndex,
    box_to_cells,
    pack_ids,
    pool_patches,
    unpack_ids,
)
from tipsv2_sdk.index.patch_index import upsample_bilinear

D = 32
GRID = (4, 4)


@pytest.fixture(scope="module")
def patches():
    """150 images of 4x4 patches; patches of one image share a cluster, like real scenes."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(30, D))
    image_centre = centres[rng.integers(30, size=150)]
    x = image_centre[:, None, None, :] + 0.9 * rng.normal(size=(150, *GRID, D))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _index(tmp_path, patches, name="p", **kw):
    kw.setdefault("dtype", "float32")
    index = PatchIndex.create(tmp_path / name, dim=D, grid=GRID, **kw)
    index.add(patches, paths=[f"im{i}.png" for i in range(len(patches))])
    index.save()
    return index


def test_pack_and_unpack_ids():
    images = np.array([0, 1, 7, 2**40])
    positions = np.array([0, 5, 1023, 65535])
    packed = pack_ids(images, positions)
    assert packed[1] == 2**16 + 5
    back_images, back_positions = unpack_ids(packed)
    assert np.array_equal(back_images, images) and np.array_equal(back_positions, positions)


def test_box_to_cells():
    assert box_to_cells((0, 0, 448, 448), (448, 448), (32, 32)) == (0, 32, 0, 32)
    assert box_to_cells((14, 28, 28, 42), (448, 448), (32, 32)) == (2, 3, 1, 2)
    # a non-square image: rows follow H, columns follow W
    assert box_to_cells((0, 0, 50, 10), (100, 40), (4, 4)) == (0, 1, 0, 2)
    assert box_to_cells((10, 10, 11, 11), (100, 100), (4, 4)) == (0, 1, 0, 1)  # tiny box: one cell
    with pytest.raises(BoxError, match="x0 < x1"):
        box_to_cells((5, 0, 5, 10), (100, 100), (4, 4))
    with pytest.raises(BoxError, match="outside the 100x100 image"):
        box_to_cells((0, 0, 101, 10), (100, 100), (4, 4))
    with pytest.raises(BoxError, match="four numbers"):
        box_to_cells((1, 2, 3), (100, 100), (4, 4))


def test_pool_patches_and_upsampling(rng):
    x = rng.normal(size=(2, 4, 6, 8)).astype(np.float32)
    pooled = pool_patches(x, 2)
    assert pooled.shape == (2, 2, 3, 8)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=-1), 1.0, rtol=1e-5)
    expect = x[0, :2, :2].mean(axis=(0, 1))
    np.testing.assert_allclose(pooled[0, 0, 0], expect / np.linalg.norm(expect), rtol=1e-5)
    with pytest.raises(ValueError, match="cannot be pooled"):
        pool_patches(x, (3, 2))
    grid = np.array([[0.0, 1.0], [2.0, 3.0]])
    up = upsample_bilinear(grid, (4, 6))
    assert up.shape == (4, 6) and up[0, 0] == 0.0 and up[-1, -1] == 3.0
    assert np.allclose(upsample_bilinear(grid, (2, 2)), grid)


def test_layout_and_ids(tmp_path, patches):
    index = _index(tmp_path, patches)
    assert index.grid == GRID and index.source_grid == GRID and len(index) == 150
    assert index.manifest.num_vectors == 150 * 16 and index.factory == "Flat"
    np.testing.assert_allclose(index.patch_vectors(7), patches[7], atol=1e-6)
    with pytest.raises(IndexMismatchError, match=r"\(N, 4, 4, 32\)"):
        index.add(patches[:1, :2])


def test_regions_are_exact_patches(tmp_path, patches):
    index = _index(tmp_path, patches)
    query = patches[42, 2, 3] + 0.05 * np.random.default_rng(0).normal(size=D)
    hits = index.search_regions(query[None], k=5)[0]
    assert (hits[0].image_id, hits[0].row, hits[0].col, hits[0].path) == (42, 2, 3, "im42.png")
    flat = patches.reshape(-1, D)
    q = query / np.linalg.norm(query)
    best = np.sort(flat @ q)[::-1][:5]
    np.testing.assert_allclose([h.score for h in hits], best, atol=1e-5)
    assert hits[0].to_dict()["image_id"] == 42


def test_images_by_best_patch_match_brute_force(tmp_path, patches, rng):
    index = _index(tmp_path, patches)
    queries = rng.normal(size=(4, D)).astype(np.float32)
    res = index.search_images(queries, k=5, candidates=2400)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best = np.einsum("nhwd,qd->qnhw", patches, q).reshape(4, 150, -1).max(axis=2)
    expect = np.argsort(-best, axis=1)[:, :5]
    assert np.array_equal(res.ids, expect)
    np.testing.assert_allclose(res.scores, np.take_along_axis(best, expect, 1), atol=1e-5)


def test_heatmap(tmp_path, patches):
    index = _index(tmp_path, patches)
    q = patches[3, 1, 1]
    heat = index.heatmap(q, 3)
    np.testing.assert_allclose(heat, patches[3] @ q, atol=1e-5)
    assert heat.argmax() == 1 * 4 + 1
    big = index.heatmap(q, 3, size=(56, 84))
    assert big.shape == (56, 84) and big.max() <= heat.max() + 1e-6


def test_box_queries_find_the_copied_region(tmp_path, patches):
    index = _index(tmp_path, patches)
    query = np.random.default_rng(1).normal(size=(*GRID, D)).astype(np.float32)
    query /= np.linalg.norm(query, axis=-1, keepdims=True)
    query[2:4, 0:2] = patches[77, 0:2, 2:4]  # image 77's top-right corner, pasted bottom-left
    # the box (pixels of a 112x112 query image) covers exactly the pasted 2x2 cells
    res = index.search_box_images(query, (0, 56, 56, 112), (112, 112), k=3)
    assert res.ids[0, 0] == 77 and res.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    regions = index.search_box_regions(query, (0, 56, 56, 112), (112, 112), k=4)
    assert all(h.image_id == 77 for h in regions[:2])
    assert {(h.row, h.col) for h in regions[:4]} <= {(0, 2), (0, 3), (1, 2), (1, 3)} | {
        (h.row, h.col) for h in regions if h.image_id != 77
    }
    with pytest.raises(BoxError):
        index.search_box_images(query, (0, 0, 200, 10), (112, 112))


def test_pooling_reduces_vectors_and_grid(tmp_path, patches):
    index = _index(tmp_path, patches, pooling=2)
    assert index.grid == (2, 2) and index.pooling == (2, 2)
    assert index.manifest.num_vectors == 150 * 4
    expect = pool_patches(patches[5:6], 2)[0]
    np.testing.assert_allclose(index.patch_vectors(5), expect, atol=1e-6)
    hit = index.search_regions(expect[1, 0][None], k=1)[0][0]
    assert (hit.image_id, hit.row, hit.col) == (5, 1, 0)


def test_pq_codes_keep_two_stage_maxsim_recall(tmp_path, vec):
    x = vec.scenes(200, GRID, D, seed=4)
    index = _index(tmp_path, x, pq=8, dtype="float16")
    assert "PQ8x" in index.factory and index.manifest.patch["pq"] == 8
    hits = 0
    for q in range(0, 200, 20):
        exact = index.search_maxsim(x[q], k=10, exhaustive=True).ids[0]
        fast = index.search_maxsim(x[q], k=10).ids[0]
        hits += len(set(exact.tolist()) & set(fast.tolist()))
    assert hits / 100 >= 0.9


def test_remove_update_and_reopen(tmp_path, patches):
    index = _index(tmp_path, patches, factory="IVF16,Flat")
    assert index.remove(ids=[42]) == 1 and index._index.ntotal == 149 * 16
    assert all(h.image_id != 42 for h in index.search_regions(patches[42, 2, 3][None], k=5, nprobe=16)[0])
    index.update(patches[:1] * -1, paths=["im0.png"])
    np.testing.assert_allclose(index.patch_vectors(0), -patches[0], atol=1e-6)
    index.save()
    reopened = PatchIndex.open(tmp_path / "p")
    assert len(reopened) == 149 and reopened.grid == GRID
    a = index.search_maxsim(patches[9], k=5, nprobe=16)
    b = reopened.search_maxsim(patches[9], k=5, nprobe=16)
    assert np.array_equal(a.ids, b.ids)
    with pytest.raises(ValueError, match="ids must lie in"):
        reopened.add(patches[:1], ids=[2**50])


def test_create_checks(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="grid is unknown"):
        PatchIndex.create(tmp_path / "x", dim=8)
    with pytest.raises(ValueError, match="cannot be pooled"):
        PatchIndex.create(tmp_path / "x", dim=8, grid=(5, 5), pooling=2)
    from_model = PatchIndex.create(tmp_path / "m", model=tiny_model)
    side = tiny_model.image_size // tiny_model.patch_size
    assert from_model.source_grid == (side, side) and from_model.dim == tiny_model.embed_dim
    assert from_model.kind == "patch"


def test_pooled_files_of_replaced_generations_are_collected(tmp_path, patches):
    """Each save writes a content-named pooled file; those no manifest names any more are deleted."""
    from tipsv2_sdk.index.pooled import referenced_pooled

    index = _index(tmp_path, patches[:40])
    for start in (40, 80):
        index.add(patches[start : start + 40], paths=[f"im{i}.png" for i in range(start, start + 40)])
        index.save()
    on_disk = {p.name for p in index.path.iterdir() if p.name.startswith("pooled-")}
    assert on_disk and on_disk == referenced_pooled(index.path)
    reopened = PatchIndex.open(index.path)
    assert len(reopened._pooled_vectors()) == 120
