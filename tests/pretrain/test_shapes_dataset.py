"""The synthetic shapes dataset: determinism, splits, masks and captions agree."""
from __future__ import annotations

import numpy as np
import pytest

from tipsv2_sdk.pretrain.data.shapes import CLASS_NAMES, COLOR_CLASS_NAMES, SHAPES, ShapesDataset, caption_corpus, render_scene, save_samples


def test_deterministic_and_split_disjoint():
    a, b = render_scene(0, "train", 7), render_scene(0, "train", 7)
    assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) and a["captions"] == b["captions"]
    val = render_scene(0, "val", 7)
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(val["image"]))
    other_seed = render_scene(1, "train", 7)
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(other_seed["image"]))


def test_example_fields_are_consistent():
    ds = ShapesDataset("train", size=96, length=50)
    for ex in ds:
        assert ex["image"].size == (96, 96) and ex["image"].mode == "RGB"
        assert ex["mask"].shape == (96, 96) and ex["mask"].max() < len(CLASS_NAMES)
        present = {CLASS_NAMES[c] for c in np.unique(ex["mask"]) if c}
        assert CLASS_NAMES[ex["label"]] in present  # the main object is visible
        assert CLASS_NAMES[ex["label"]] in ex["alt_text"]
        for shape in {o["shape"] for o in ex["objects"]}:
            assert shape in ex["captions"]["short"] and shape in ex["captions"]["long"]
        assert len(ex["captions"]["long"]) > len(ex["captions"]["short"]) >= len(ex["alt_text"]) - 12
        assert "background" in ex["captions"]["long"]


def test_color_mask_matches_the_shape_mask_and_the_drawn_colours():
    for i in range(30):
        ex = render_scene(0, "train", i, size=84)
        color, shape = ex["color_mask"], ex["mask"]
        assert color.shape == shape.shape and color.dtype == np.int64
        assert np.array_equal(color == 0, shape == 0)  # the same pixels are background in both
        # The top-most object owns its pixels in both masks: its colour id is where its shape id is.
        top = ex["objects"][-1]
        only_top = shape == CLASS_NAMES.index(top["shape"])
        if not any(o["shape"] == top["shape"] for o in ex["objects"][:-1]):
            assert set(np.unique(color[only_top])) == {COLOR_CLASS_NAMES.index(top["color"])}
        named = {COLOR_CLASS_NAMES[c] for c in np.unique(color) if c}
        assert named <= {o["color"] for o in ex["objects"]} and all(n in ex["captions"]["short"] for n in named)


def test_all_shapes_occur_and_lengths():
    labels = {ShapesDataset(length=300)[i]["label"] for i in range(300)}
    assert labels == set(range(1, len(SHAPES) + 1))
    with pytest.raises(IndexError):
        ShapesDataset(length=3)[3]
    with pytest.raises(TypeError, match="infinite"):
        len(ShapesDataset(length=None))
    with pytest.raises(ValueError, match="unknown split"):
        ShapesDataset(split="dev")


def test_corpus_and_samples(tmp_path):
    corpus = caption_corpus(n=20)
    assert "circle" in corpus and len(corpus) == 2 * len(CLASS_NAMES) + 60
    paths = save_samples(tmp_path, count=3, size=56)
    assert len(paths) == 3 and all(p.stat().st_size > 0 for p in paths)
